"""Time one joint-training step (pair preparation, forward on both images, detector and descriptor
losses, backward, Adam) per precision and descriptor loss, and the dense loss alone per chunk size.

    python benchmarks/joint_training_speed.py --size 240 320 --batch 2 --steps 5 --precisions fp32 bf16

Synthetic input (random texture, 200 random keypoints per image), the COCO joint-training
config's augmentation and loss settings. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from datasets.augmentation import Randomness  # noqa: E402
from models import build_model  # noqa: E402
from training.descriptor_losses import DENSE_CHUNK_ELEMENTS, dense_descriptor_loss  # noqa: E402
from training.superpoint import SuperPointTask  # noqa: E402
from utils.cli import autocast_dtype  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.geometry import sample_homography  # noqa: E402

from machine_info import cpu_name  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "superpoint_coco_train_heatmap.yaml"


def synthetic_batch(batch: int, size, gen) -> dict:
    h, w = size
    img = torch.nn.functional.avg_pool2d(torch.rand(batch, 1, h, w, generator=gen), 5, 1, 2)
    pts = torch.rand(batch, 200, 2, generator=gen) * torch.tensor([w - 1, h - 1])
    return {"image": img, "keypoints": pts, "keypoint_mask": torch.ones(batch, 200, dtype=torch.bool)}


def time_steps(kind: str, precision: str, args) -> float:
    over = [f"model.dense_loss.enable={kind == 'dense'}", f"model.sparse_loss.enable={kind == 'sparse'}",
            "device=cpu", f"precision={precision}"]
    cfg = load_config(CONFIG, over)
    task = SuperPointTask(cfg)
    device = torch.device("cpu")
    dtype = autocast_dtype(precision, device)
    torch.manual_seed(0)
    net = build_model(cfg["model"]).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    times = []
    for step in range(args.steps + 1):  # the first step warms up
        batch = synthetic_batch(args.batch, args.size, gen)
        t0 = time.perf_counter()
        prepared = task.prepare(batch, True, Randomness.from_seed(step, device), device)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss, _ = task.loss(net, prepared)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return sum(times[1:]) / args.steps


def time_dense(chunk: int, args) -> tuple[float, float]:
    """(seconds, peak MB of the loss's largest live tensors, estimated) of the dense loss alone."""
    h, w = args.size
    hc, wc = h // 8, w // 8
    gen = torch.Generator().manual_seed(0)
    B = args.batch
    desc = torch.nn.functional.normalize(torch.randn(B, 256, hc, wc, generator=gen), dim=1).requires_grad_()
    wdesc = torch.nn.functional.normalize(torch.randn(B, 256, hc, wc, generator=gen), dim=1).requires_grad_()
    H = sample_homography(B, (h, w), {"patch_ratio": 0.85, "allow_artifacts": True}, generator=gen)
    t0 = time.perf_counter()
    loss, _ = dense_descriptor_loss(desc, wdesc, H, chunk_size=chunk)
    loss.backward()
    n = hc * wc
    rows = min(n, chunk if chunk > 0 else max(1, DENSE_CHUNK_ELEMENTS // (B * n)))
    return time.perf_counter() - t0, B * rows * n * 4 * 6 / 2 ** 20  # ~6 float tensors of B x rows x N


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, nargs=2, default=[240, 320])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = default)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--losses", nargs="+", default=["sparse", "dense"])
    p.add_argument("--chunks", type=int, nargs="*", default=[0, 600, 256])
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"images {args.size[0]}x{args.size[1]}, "
          f"batch {args.batch} pairs\n")
    print("| descriptor loss | precision | s / step |\n|---|---|---:|")
    for kind in args.losses:
        for prec in args.precisions:
            print(f"| {kind} | {prec} | {time_steps(kind, prec, args):.3f} |", flush=True)
    if args.chunks:
        print("\n| dense loss chunk_size | s (forward + backward) | ~MB of chunk temporaries |\n|---:|---:|---:|")
        for c in args.chunks:
            t, mb = time_dense(c, args)
            print(f"| {c} | {t:.3f} | {mb:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
