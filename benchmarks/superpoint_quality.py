"""Does training make a better SuperPoint? The CPU-scale reproduction, scored against its start and SIFT.

    python benchmarks/superpoint_quality.py [--shared ../shared/data] [--train-minutes 60] [--joint-minutes 75]
        [--name bench_superpoint] [--stage1-weights FILE] [--weights FILE] [--ship PATH]

One command, on the CPU:

1. **Training images** (``build_training_photos``): every real photograph the project may use that
   no evaluation pair is made of -- ``shared/data`` photos (TUM Freiburg, Phototourism), the COCO and
   Cityscapes samples, KITTI frames (every 6th, cut into three 4:3 tiles), matplotlib's sample photo
   and the scikit-image pictures that the embedded HPatches-style set does *not* use. Each photo
   gives a 4:3 centre crop and, when large enough, its four quarter crops, all at 240x320. Held out:
   the HPatches pairs, the embedded set's scikit-image sources, and the ScanNet frames (pose evaluation).
2. **Stage 1** (``train_joint``, ``configs/superpoint_folder_train_descriptor.yaml``): the descriptor
   head of ``--magicpoint`` trained with the InfoNCE loss on homographic pairs of those images; the
   encoder and the detector stay frozen (``--stage1-weights FILE`` skips it).
3. **Labels**: homography adaptation of the teacher (``--magicpoint``, 50 homographies) on the same
   images (``export_detector_homoAdapt``, ``configs/magicpoint_folder_export.yaml``).
4. **Stage 2** (``configs/superpoint_folder_finetune_joint.yaml``): the whole network, from the
   stage-1 weights, on those labels (detector loss) and the InfoNCE loss, Adam 1e-4
   (``--joint-minutes 0`` stops after stage 1). Every step is resumable: re-running continues each
   run until its ``train_iter`` (the minutes bound each invocation).
5. **Scoring** (``export_descriptor`` / ``export_classical`` + ``evaluation.py``'s metrics, our
   protocol, k = 1000, 240x320) on the 8 real HPatches pairs of ``shared/data/hpatches_real`` and the
   50 embedded HPatches-style pairs, for SIFT, the starting point (the MagicPoint with its untrained
   descriptor head) and the trained model. Homography accuracy is also averaged over 20 random orders
   of the matches given to RANSAC (one order moves it by a few hundredths on 8 pairs).

``--weights FILE`` skips training and scores FILE as the trained model; ``--ship PATH`` copies the
trained weights there (bare state dict, the layout recorded). Prints a markdown table.
"""
from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import settings  # noqa: E402
from evaluations.hpatches_report import evaluate_folder, ransac_order_accuracy  # noqa: E402
from evaluations.protocols import load_settings  # noqa: E402
from utils.config import load_config  # noqa: E402

from machine_info import cpu_name  # noqa: E402

SIZE = (240, 320)
# the scikit-image pictures that the embedded HPatches-style set is NOT built from (see
# datasets/embedded_hpatches.py SEQUENCES): usable for training
SKIMAGE_TRAINING = ["grass.png", "moon.png", "page.png", "text.png", "retina.jpg", "hubble_deep_field.jpg",
                    "clock_motion.png"]
VERSION = "training photos v1"


def _crops(img: np.ndarray):
    """(tag, crop): the 4:3 centre crop, then its four quarters when they keep >= 0.75 of 240x320."""
    h, w = img.shape[:2]
    ch, cw = (h, h * 4 // 3) if w * 3 >= h * 4 else (w * 3 // 4, w)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    yield "c", img[y0:y0 + ch, x0:x0 + cw]
    if ch // 2 >= SIZE[0] * 0.75:
        for i in range(2):
            for j in range(2):
                ys, xs = y0 + i * (ch // 2), x0 + j * (cw // 2)
                yield f"q{i}{j}", img[ys:ys + ch // 2, xs:xs + cw // 2]


def training_sources(shared: Path) -> tuple[list[Path], list[Path]]:
    """(photos, KITTI frames) used for training; every path exists."""
    import matplotlib
    import skimage

    photos = []
    for sub in ["photos/freiburg", "photos/phototourism", "coco_sample/val2017", "cityscapes_sample/leftImg8bit"]:
        photos += sorted(p for p in (shared / sub).rglob("*") if p.suffix.lower() in (".png", ".jpg"))
    photos.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    photos += [Path(skimage.__file__).parent / "data" / n for n in SKIMAGE_TRAINING]
    kitti = sorted((shared / "kitti_sfm" / "2011_09_26_drive_0001_sync_02").glob("*.jpg"))[::6]
    missing = [p for p in photos + kitti if not p.is_file()]
    if missing or not kitti:
        raise FileNotFoundError(f"{missing[0] if missing else shared / 'kitti_sfm'}: training image not found")
    return photos, kitti


def build_training_photos(shared: Path, out: Path) -> int:
    """Write the training images (240x320 PNG) into ``out`` once; returns their number."""
    import cv2

    stamp = out / "VERSION"
    if stamp.is_file() and stamp.read_text() == VERSION:
        return sum(1 for _ in out.glob("*.png"))
    photos, kitti = training_sources(shared)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for p in photos:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        for tag, crop in _crops(img):
            cv2.imwrite(str(tmp / f"{p.parent.name}_{p.stem}_{tag}.png"),
                        cv2.resize(crop, SIZE[::-1], interpolation=cv2.INTER_AREA))
    for p in kitti:  # 128 x 416: three 128 x 171 tiles (4:3)
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        for t, x0 in enumerate((0, 122, 245)):
            cv2.imwrite(str(tmp / f"kitti_{p.stem}_{t}.png"),
                        cv2.resize(img[:, x0:x0 + 171], SIZE[::-1], interpolation=cv2.INTER_LINEAR))
    (tmp / "VERSION").write_text(VERSION)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return sum(1 for _ in out.glob("*.png"))


def export_labels(magicpoint: Path, photos: Path, name: str, num: int = 50) -> str:
    """Homography-adaptation labels of the training photos by the teacher (``num`` homographies,
    bf16 autocast where the CPU has it: the faster, inexact opt-in); resumable. Returns the
    ``data.labels`` value (``<name>/predictions``, its ``val/`` a link to ``train/``)."""
    from exporters.detector_labels import run
    from utils.cli import cpu_supports_bf16

    precision = "bf16" if cpu_supports_bf16() else "fp32"
    cfg = load_config(REPO / "configs/magicpoint_folder_export.yaml",
                      [f"data.root={photos}", f"pretrained={magicpoint}", f"data.homography_adaptation.num={num}",
                       f"inference.precision={precision}"])
    out = settings.exper_path() / name
    run(cfg, out, argparse.Namespace(outputImg=False, export_segmentation=False))
    val = out / "predictions" / "val"
    if not val.exists():
        val.symlink_to("train", target_is_directory=True)
    return f"{name}/predictions"


def train(magicpoint: Path, photos: Path, name: str, minutes: float, labels: str | None = None) -> tuple[int, Path]:
    """Stage 1 (``labels`` None): the descriptor head on the frozen ``magicpoint``
    (configs/superpoint_folder_train_descriptor.yaml). Stage 2: the whole network from the stage-1
    weights ``magicpoint`` on the homography-adaptation ``labels``
    (configs/superpoint_folder_finetune_joint.yaml). Resumable; returns (iterations, checkpoint)."""
    from training.superpoint import SuperPointTask
    from training.trainer import Trainer

    config = "superpoint_folder_train_descriptor.yaml" if labels is None else "superpoint_folder_finetune_joint.yaml"
    overrides = [f"data.root={photos}", f"pretrained={magicpoint}", f"time_limit_minutes={minutes}"]
    cfg = load_config(REPO / "configs" / config, overrides + ([f"data.labels={labels}"] if labels else []))
    trainer = Trainer(cfg, name, SuperPointTask(cfg), do_eval=True)
    try:
        trainer.train()
    except KeyboardInterrupt:
        pass
    from training.checkpoints import latest_checkpoint

    return trainer.n_iter, latest_checkpoint(settings.exper_path() / name / "checkpoints")


def export_and_score(weights: Path | None, root: str, folder: str, orders: int = 20) -> dict:
    """Export the pairs under ``root`` with a network (or SIFT when ``weights`` is None), then score;
    adds ``ha_mean`` (homography accuracy averaged over ``orders`` shuffles of the matches)."""
    args = argparse.Namespace(outputImg=False, export_segmentation=False, correspondence=False)
    out = settings.exper_path() / folder
    size = f"[{SIZE[0]}, {SIZE[1]}]"
    if weights is None:
        from exporters.classical import run

        cfg = load_config(REPO / "configs/classical_descriptors.yaml", [f"data.root={root}",
                                                                        f"data.preprocessing.resize={size}"])
    else:
        from exporters.descriptors import run

        cfg = load_config(REPO / "configs/magicpoint_repeatability_heatmap.yaml",
                          [f"data.root={root}", f"data.preprocessing.resize={size}", f"pretrained={weights}",
                           "model.name=SuperPointNet_gauss2"])
    run(cfg, out, args)
    st = load_settings(top_k=1000, sift=weights is None)
    metrics = evaluate_folder(out / "predictions", st, progress=False)["metrics"]
    if orders <= 0:
        return metrics
    metrics["ha_mean"] = dict(zip(("1", "3", "5"), ransac_order_accuracy(out / "predictions", st, orders).mean(0)))
    return metrics


def held_out_curve(run: Path, shared: Path, start: Path, name: str, png: Path) -> list[str]:
    """NN mAP and matching score of every checkpoint of a run (and of the starting point, step 0)
    on both held-out pair sets; writes a PNG plot and returns markdown rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.checkpoints import list_checkpoints

    steps = [(0, start)] + list_checkpoints(run / "checkpoints")
    sets = [("HPatches real (8)", str(shared / "hpatches_real")), ("embedded (50)", "embedded")]
    table = {s: [] for s, _ in sets}
    for step, weights in steps:
        for set_name, root in sets:
            m = export_and_score(weights, root, f"{name}_curve", orders=0)
            table[set_name].append((step, m["nn_map"], m["matching_score"]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric, k in zip(axes, ("NN mAP", "matching score"), (1, 2)):
        for set_name, rows in table.items():
            ax.plot([r[0] for r in rows], [r[k] for r in rows], marker="o", label=set_name)
        ax.set_xlabel("training step (batch 8 pairs)")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    lines = ["| step | " + " | ".join(f"{s} NN mAP | {s} matching score" for s in table) + " |",
             "|---:|" + "---:|" * (2 * len(table))]
    for i, (step, _) in enumerate(steps):
        cells = " | ".join(f"{table[s][i][1]:.3f} | {table[s][i][2]:.3f}" for s in table)
        lines.append(f"| {step} | {cells} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--magicpoint", type=Path, default=REPO / "pretrained" / "magicpoint_synth.pth")
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--train-minutes", type=float, default=60.0,
                   help="time budget of this invocation's stage 1 (descriptor head)")
    p.add_argument("--joint-minutes", type=float, default=75.0,
                   help="time budget of this invocation's stage 2 (whole network on homography-adaptation "
                        "labels); 0 = stop after stage 1")
    p.add_argument("--stage1-weights", type=Path, default=None,
                   help="start stage 2 from these stage-1 weights (skip stage 1)")
    p.add_argument("--weights", type=Path, default=None, help="score these weights instead of training")
    p.add_argument("--ship", type=Path, default=None, help="copy the trained weights (state dict) here")
    p.add_argument("--name", default="bench_superpoint")
    p.add_argument("--curve", type=Path, default=None,
                   help="also score every checkpoint of the training run on both pair sets; plot to this PNG")
    args = p.parse_args(argv)
    torch.manual_seed(0)

    photos = settings.data_path() / "superpoint_training_photos"
    n_photos = build_training_photos(args.shared, photos)
    t_train, iters = 0.0, None
    if args.weights is None:
        t0 = time.perf_counter()
        if args.stage1_weights is None:
            iters, trained = train(args.magicpoint, photos, f"{args.name}_train", args.train_minutes)
        else:
            trained = args.stage1_weights
        if args.joint_minutes > 0:
            labels = export_labels(args.magicpoint, photos, f"{args.name}_labels")
            iters, trained = train(trained, photos, f"{args.name}_joint", args.joint_minutes, labels)
        t_train = time.perf_counter() - t0
    else:
        trained = args.weights
    if args.ship is not None:
        from models import extract_state_dict, read_weights
        from utils.io import atomic_torch_save

        atomic_torch_save(extract_state_dict(read_weights(trained)), args.ship)

    curve = []
    if args.curve is not None:
        run = f"{args.name}_joint" if args.joint_minutes > 0 and args.weights is None else f"{args.name}_train"
        curve = held_out_curve(settings.exper_path() / run, args.shared, args.magicpoint, args.name, args.curve)

    models = [("SIFT (OpenCV)", None), ("start: MagicPoint + untrained descriptor head", args.magicpoint),
              ("trained here", trained)]
    sets = [("HPatches real (8)", str(args.shared / "hpatches_real")), ("embedded (50)", "embedded")]
    rows = []
    for set_name, root in sets:
        for label, weights in models:
            rows.append((set_name, label, export_and_score(weights, root, f"{args.name}_eval_{len(rows)}")))

    print(f"### SuperPoint quality (HPatches metrics, ours protocol, k = 1000, {SIZE[0]}x{SIZE[1]})\n")
    print(f"- date: {datetime.date.today().isoformat()}; machine: {cpu_name()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print(f"- training images: {n_photos} crops in {photos}")
    print(f"- trained model: {trained}" + (f" ({iters} iterations, this invocation {t_train / 60:.1f} min)"
                                            if iters is not None else "") + "\n")
    print("| pairs | model | HA eps=1 | eps=3 | eps=5 | HA eps=3 (20 orders) | repeatability | MLE | NN mAP | "
          "matching score |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for set_name, label, m in rows:
        ha = m["homography_accuracy"]
        mean3 = f"{m['ha_mean']['3']:.3f}" if "ha_mean" in m else "-"
        print(f"| {set_name} | {label} | {ha['1']:.3f} | {ha['3']:.3f} | {ha['5']:.3f} | {mean3} | "
              f"{m['repeatability']:.3f} | {m['mle']:.3f} | {m['nn_map']:.3f} | {m['matching_score']:.3f} |")
    if curve:
        print(f"\nHeld-out curve (every checkpoint of {args.name}_train; step 0 = the starting point; "
              f"plot: {args.curve}):\n")
        print("\n".join(curve))
    return 0


if __name__ == "__main__":
    sys.exit(main())
