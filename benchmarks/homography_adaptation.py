"""Homographic adaptation speed: the batched implementation against a one-view-at-a-time loop.

    python benchmarks/homography_adaptation.py [--images 2] [--num 100] [--size 240 320]
        [--batch-size 25 [10 ...]] [--variants loop fp32 prepared bf16] [--weights PATH] [--threads N]

Both run on the same images, the same sampled homographies and the same network
(SuperPointNet_gauss2; seeded random init unless ``--weights``). Variants:

* ``loop``          one view per forward, plain fp32 network (NCHW), ``torch.no_grad``;
* ``fp32``          ``models.homography_adaptation`` with ``--batch-size`` views per forward;
* ``prepared``      the same on ``prepare_detector``'s copy (descriptor head cut, batch norm
                    folded, channels-last);
* ``bf16``          ``prepared`` under bf16 autocast (the export's opt-in ``inference.precision: bf16``;
                    its speed-up needs native bf16 or a GPU; ``auto`` is fp32).

For each variant: images per second, speed-up over the first variant (the loop), the largest
heatmap difference from it, and how many of its keypoints (COCO export settings) are found
within 1 px.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import build_network, load_weights  # noqa: E402
from models.frontend import Frontend, keypoint_settings  # noqa: E402
from models.homography_adaptation import homography_adaptation, prepare_detector, sample_adaptation_homographies  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.geometry import warp_image, warped_valid_mask  # noqa: E402
from utils.io import read_image_gray  # noqa: E402
from utils.keypoints import semi_to_heatmap  # noqa: E402

from machine_info import cpu_name  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def load_images(n: int, size) -> torch.Tensor:
    """``n x 1 x H x W``: photos from the shared sample data when present, else drawn rectangles."""
    import cv2

    folder = REPO.parent / "shared" / "data" / "photos" / "freiburg"
    paths = sorted(folder.glob("*.png"))[:n] if folder.is_dir() else []
    out = []
    for i in range(n):
        if i < len(paths):
            img = read_image_gray(paths[i])
            img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        else:
            rng = np.random.default_rng(i)
            img = np.full(size, 0.2, np.float32)
            for _ in range(12):
                x0, y0 = int(rng.integers(0, size[1] - 20)), int(rng.integers(0, size[0] - 20))
                img[y0:y0 + int(rng.integers(10, 60)), x0:x0 + int(rng.integers(10, 60))] = rng.uniform(0.3, 1.0)
        out.append(torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None])
    return torch.stack(out)


@torch.no_grad()
def loop_adaptation(model, image: torch.Tensor, H: torch.Tensor, margin: int) -> torch.Tensor:
    """The straightforward version: one view at a time through the plain network (``sum``)."""
    h, w = image.shape[-2:]
    total = torch.zeros_like(image)
    counts = torch.zeros_like(image)
    for k in range(H.shape[0]):
        Hk = H[k:k + 1]
        if k == 0:  # the identity view
            heat = semi_to_heatmap(model(image)["semi"])
            total += heat
            counts += 1
            continue
        view = warp_image(image, Hk, (h, w))
        mask_view = warped_valid_mask(Hk, (h, w), (h, w), margin)
        heat = semi_to_heatmap(model(view)["semi"]) * mask_view
        Hk_inv = torch.linalg.inv(Hk.double())
        # image pixels the view sees, where the view's own mask holds too
        mask_back = warped_valid_mask(Hk_inv, (h, w), (h, w), margin) * warp_image(mask_view, Hk_inv.float(), (h, w),
                                                                                   mode="nearest")
        total += warp_image(heat, Hk_inv.float(), (h, w)) * mask_back
        counts += mask_back
    return torch.where(counts > 0, total / counts.clamp(min=1e-12), torch.zeros_like(total))


def keypoints(heat: torch.Tensor, frontend: Frontend) -> list[torch.Tensor]:
    """The keypoints the label export takes from an aggregated heatmap (the front end's step)."""
    return frontend.keypoints(heat).to_list()


def agreement(ref: list[torch.Tensor], other: list[torch.Tensor]) -> float:
    """Fraction of the reference keypoints with a keypoint of ``other`` within 1 px."""
    hit = n = 0
    for a, b in zip(ref, other):
        n += len(a)
        if len(a) and len(b):
            hit += int((torch.cdist(a[:, :2], b[:, :2]).min(dim=1).values <= 1.0).sum())
    return hit / max(n, 1)


def run_interleaved(variants: dict, images: torch.Tensor, H: torch.Tensor) -> dict:
    """Time every variant on every image, round-robin (image by image), so that a change in the
    load of a shared machine affects all variants alike. ``variants``: name -> (fn, warm-up views).
    Returns name -> (images per second, stacked heatmaps)."""
    for fn, warmup in variants.values():
        fn(images[:1], H[:1, :warmup])  # warm-up on one chunk (allocator, oneDNN kernels)
    seconds = dict.fromkeys(variants, 0.0)
    heats: dict = {name: [] for name in variants}
    for i in range(images.shape[0]):
        for name, (fn, _) in variants.items():
            t0 = time.perf_counter()
            heats[name].append(fn(images[i:i + 1], H[i:i + 1]))
            seconds[name] += time.perf_counter() - t0
    return {name: (images.shape[0] / seconds[name], torch.cat(heats[name])) for name in variants}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--num", type=int, default=100, help="homographies per image")
    p.add_argument("--size", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    p.add_argument("--batch-size", type=int, nargs="+", default=[25],
                   help="views per forward of the batched variants (several values: a sweep)")
    p.add_argument("--variants", nargs="+", default=["loop", "fp32", "prepared", "bf16"],
                   choices=["loop", "fp32", "prepared", "bf16"], help="what to time (default: all)")
    p.add_argument("--weights", default=None, help="a trained MagicPoint (default: seeded random init)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    config = load_config(REPO / "configs" / "magicpoint_coco_export.yaml")
    ha = dict(config["data"]["homography_adaptation"], num=args.num)
    size = tuple(args.size)
    torch.manual_seed(0)
    model = build_network("SuperPointNet_gauss2")
    if args.weights:
        load_weights(model, args.weights)
    model.eval()
    prepared = prepare_detector(model)
    kp = Frontend(prepared, **keypoint_settings(config["model"]))
    images = load_images(args.images, size)
    H = torch.cat([sample_adaptation_homographies(1, args.num, size, ha["homographies"]["params"],
                                                  torch.Generator().manual_seed(i)) for i in range(args.images)])

    print(f"# homography adaptation benchmark {datetime.datetime.now():%Y-%m-%d %H:%M}")
    print(f"# {cpu_name()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; "
          f"{args.images} images {size[0]}x{size[1]}, {args.num} homographies, "
          f"{'weights ' + args.weights if args.weights else 'random-init SuperPointNet_gauss2'}")
    variants = {}
    if "loop" in args.variants:
        variants["loop (1 view/forward, fp32)"] = (
            lambda im, h: loop_adaptation(model, im, h[0], ha["valid_border_margin"]), 2)
    for bs in args.batch_size:
        cfg = dict(ha, batch_size=bs)
        if "fp32" in args.variants:
            variants[f"batched {bs}, fp32"] = (
                lambda im, h, cfg=cfg: homography_adaptation(model, im, cfg, homographies=h), bs)
        if "prepared" in args.variants:
            variants[f"batched {bs}, fp32, prepared"] = (
                lambda im, h, cfg=cfg: homography_adaptation(prepared, im, cfg, homographies=h), bs)
        if "bf16" in args.variants:
            variants[f"batched {bs}, bf16, prepared"] = (
                lambda im, h, cfg=cfg: homography_adaptation(prepared, im, cfg, homographies=h,
                                                             autocast_dtype=torch.bfloat16), bs)
    results = run_interleaved(variants, images, H)
    base_name = next(iter(results))
    base_speed, base_heat = results[base_name]
    base_kp = keypoints(base_heat, kp)
    print(f"# reference for speed-up, heatmap difference and keypoints: {base_name}")
    print("| variant | images/s | speed-up | max heatmap diff | keypoints within 1 px |")
    print("|---|---|---|---|---|")
    for name, (speed, heat) in results.items():
        diff = float((heat - base_heat).abs().max())
        print(f"| {name} | {speed:.4f} | {speed / base_speed:.2f}x | {diff:.2e} | "
              f"{100 * agreement(base_kp, keypoints(heat, kp)):.1f}% |")
    print(f"# mean keypoints per image: {np.mean([len(k) for k in base_kp]):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
