"""SuperPoint quality on HPatches-style pairs: a model fine-tuned here vs MagicPoint vs SIFT.

    python benchmarks/superpoint_quality.py [--magicpoint pretrained/magicpoint_synth.pth]
        [--photos ../shared/data/photos] [--hpatches-real ../shared/data/hpatches_real]
        [--ha-num 50] [--train-minutes 60] [--name bench_superpoint]

One run does the whole pipeline on the CPU and scores every model the same way:

1. homography adaptation with the MagicPoint on the training photos (every image under --photos,
   240x320) -> keypoint labels (``export_detector_homoAdapt``, ``configs/magicpoint_folder_export.yaml``);
2. joint training (detector + sparse descriptor loss) from that MagicPoint on those labels for
   --train-minutes (``train_joint``, ``configs/superpoint_folder_train_heatmap.yaml``);
3. ``export_descriptor`` + ``evaluation.py``'s metrics (ours protocol, k = 1000) on the real HPatches
   pairs under --hpatches-real and on the embedded HPatches-style set, for: the fine-tuned model,
   the MagicPoint with its untrained descriptor head, SIFT (``export_classical``), and MagicLeap's
   ``pretrained/superpoint_v1.pth`` when that file is present.

Steps 1-2 resume (exported images are skipped, training resumes from its checkpoint), so the
command can be re-run. Prints a markdown table with machine and date.
"""
from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import settings  # noqa: E402
from evaluations.hpatches_report import evaluate_folder  # noqa: E402
from evaluations.protocols import load_settings  # noqa: E402
from machine_info import cpu_name  # noqa: E402
from utils.config import load_config  # noqa: E402

SIZE = "[240, 320]"


def export_labels(magicpoint: Path, photos: Path, name: str, num: int) -> float:
    from exporters.detector_labels import run

    t0 = time.perf_counter()
    cfg = load_config(REPO / "configs/magicpoint_folder_export.yaml",
                      [f"data.root={photos}", f"data.preprocessing.resize={SIZE}", f"pretrained={magicpoint}",
                       f"data.homography_adaptation.num={num}", "data.export_folder=train"])
    run(cfg, settings.exper_path() / name, argparse.Namespace(outputImg=False))
    # a folder's val split is the same images: reuse the labels rather than adapt them twice
    pred = settings.exper_path() / name / "predictions"
    if not (pred / "val").is_dir():
        shutil.copytree(pred / "train", pred / "val.tmp", dirs_exist_ok=True)
        (pred / "val.tmp").rename(pred / "val")
    return time.perf_counter() - t0


def train(magicpoint: Path, photos: Path, labels: str, name: str, minutes: float, batch: int) -> int:
    from training.superpoint import SuperPointTask
    from training.trainer import Trainer

    cfg = load_config(REPO / "configs/superpoint_folder_train_heatmap.yaml",
                      [f"data.root={photos}", f"data.labels={labels}/predictions", f"pretrained={magicpoint}",
                       f"data.preprocessing.resize={SIZE}", f"model.batch_size={batch}", f"model.eval_batch_size={batch}",
                       "train_iter=1000000", f"time_limit_minutes={minutes}", "save_interval=200",
                       "validation_interval=200", "validation_size=2", "tensorboard_interval=50"])
    trainer = Trainer(cfg, name, SuperPointTask(cfg), do_eval=True)
    trainer.train()
    return trainer.n_iter


def export_and_score(label: str, weights: Path | None, model_name: str, root: str, folder: str) -> dict:
    """Export the pairs under ``root`` with a network (or SIFT when ``weights`` is None), then score."""
    args = argparse.Namespace(outputImg=False, export_segmentation=False, correspondence=False)
    out = settings.exper_path() / folder
    if weights is None:
        from exporters.classical import run

        cfg = load_config(REPO / "configs/classical_descriptors.yaml",
                          [f"data.root={root}", f"data.preprocessing.resize={SIZE}"])
    else:
        from exporters.descriptors import run

        cfg = load_config(REPO / "configs/magicpoint_repeatability_heatmap.yaml",
                          [f"data.root={root}", f"data.preprocessing.resize={SIZE}", f"pretrained={weights}",
                           f"model.name={model_name}"])
    run(cfg, out, args)
    return evaluate_folder(out / "predictions", load_settings(top_k=1000, sift=weights is None),
                           progress=False)["metrics"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--magicpoint", type=Path, default=REPO / "pretrained" / "magicpoint_synth.pth")
    p.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "photos")
    p.add_argument("--hpatches-real", type=Path, default=REPO.parent / "shared" / "data" / "hpatches_real")
    p.add_argument("--ha-num", type=int, default=50, help="homographies per image for the labels")
    p.add_argument("--train-minutes", type=float, default=60.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--name", default="bench_superpoint")
    args = p.parse_args(argv)
    torch.manual_seed(0)

    t_ha = export_labels(args.magicpoint, args.photos, f"{args.name}_labels", args.ha_num)
    t0 = time.perf_counter()
    iters = train(args.magicpoint, args.photos, f"{args.name}_labels", f"{args.name}_train", args.train_minutes,
                  args.batch_size)
    t_train = time.perf_counter() - t0
    finetuned = settings.exper_path() / f"{args.name}_train"

    models = [("SuperPoint fine-tuned here", finetuned, "SuperPointNet_gauss2"),
              ("MagicPoint (shipped) + untrained descriptor", args.magicpoint, "SuperPointNet_gauss2"),
              ("SIFT (OpenCV)", None, "")]
    magicleap = REPO / "pretrained" / "superpoint_v1.pth"
    if magicleap.is_file():
        models.append(("MagicLeap superpoint_v1", magicleap, "SuperPointNet"))
    sets = [("HPatches (real pairs)", str(args.hpatches_real)), ("embedded HPatches-style", "embedded")]
    rows = []
    for set_name, root in sets:
        for i, (label, weights, model_name) in enumerate(models):
            m = export_and_score(label, weights, model_name, root, f"{args.name}_eval_{len(rows)}")
            rows.append((set_name, label, m))

    n_photos = sum(1 for f in args.photos.rglob("*") if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
    print(f"### SuperPoint quality (HPatches metrics, ours protocol, k = 1000, {SIZE[1:-1].replace(', ', 'x')})\n")
    print(f"- date: {datetime.date.today().isoformat()}; machine: {cpu_name()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print(f"- labels: homography adaptation ({args.ha_num} homographies) with {args.magicpoint.name} on "
          f"{n_photos} photos under {args.photos}: {t_ha / 60:.1f} min")
    print(f"- fine-tuning: {iters} iterations of batch {args.batch_size} pairs from {args.magicpoint.name} "
          f"({t_train / 60:.1f} min, sparse descriptor loss)\n")
    print("| pairs | model | HA eps=1 | eps=3 | eps=5 | repeatability | MLE | NN mAP | matching score |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for set_name, label, m in rows:
        ha = m["homography_accuracy"]
        print(f"| {set_name} | {label} | {ha['1']:.3f} | {ha['3']:.3f} | {ha['5']:.3f} | {m['repeatability']:.3f} | "
              f"{m['mle']:.3f} | {m['nn_map']:.3f} | {m['matching_score']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
