"""Relative pose on SuperGlue's 15 ScanNet sample pairs: SIFT vs the shipped SuperPoint vs MagicPoint.

    python benchmarks/relative_pose.py [--data ../shared/data] [--size 480 640] [--name bench_pose]

For each model, ``export_pairs`` (configs/pose_scannet_sample.yaml, at --size) then the
``evaluation.py --pose`` metrics with their defaults (docs/EVALUATION.md): AUC of the pose error
at 5 / 10 / 20 degrees, matching precision and mean number of mutual-NN matches. The same as

    python export_classical.py export_pairs configs/pose_scannet_sample.yaml <name>_sift \
        --set data.root=... data.pairs=...
    python evaluation.py logs/<name>_sift/predictions --pose --sift [--set evaluation.pose.ratio=0.8]
    python export.py export_pairs configs/pose_scannet_sample.yaml <name>_superpoint --set ...
    python evaluation.py logs/<name>_superpoint/predictions --pose
    python export.py export_pairs configs/pose_scannet_sample.yaml <name>_magicpoint \
        --set pretrained=pretrained/magicpoint_synth.pth ...
    python evaluation.py logs/<name>_magicpoint/predictions --pose

Prints a markdown table with machine and date.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import settings  # noqa: E402
from evaluations.pose import evaluate_pose_folder, load_pose_settings  # noqa: E402
from utils.config import load_config  # noqa: E402

from machine_info import cpu_name  # noqa: E402

MODELS = [  # label, exporter, pretrained (None: the config's)
    ("SIFT (OpenCV, 1024 points)", "sift", None),
    ("SuperPoint (shipped, superpoint_photos.pth)", "network", None),
    ("MagicPoint (magicpoint_synth.pth) + untrained descriptor head", "network", "pretrained/magicpoint_synth.pth"),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    p.add_argument("--name", default="bench_pose")
    args = p.parse_args(argv)
    overrides = [f"data.root={args.data / 'photos' / 'scannet'}",
                 f"data.pairs={args.data / 'photos' / 'scannet_sample_pairs_with_gt.txt'}",
                 f"data.preprocessing.resize=[{args.size[0]}, {args.size[1]}]"]
    ns = argparse.Namespace(outputImg=False, export_segmentation=False, correspondence=False)
    rows = []
    for label, kind, weights in MODELS:
        cfg = load_config(REPO / "configs" / "pose_scannet_sample.yaml",
                          overrides + ([f"pretrained={weights}"] if weights else []))
        if kind == "sift":
            from exporters.classical import run_pairs
        else:
            from exporters.descriptors import run_pairs
        out = settings.exper_path() / f"{args.name}_{kind}_{len(rows)}"
        t0 = time.perf_counter()
        run_pairs(cfg, out, ns)
        t_export = time.perf_counter() - t0
        pose = load_pose_settings(sift=kind == "sift")
        res = evaluate_pose_folder(out / "predictions", pose, progress=False)
        rows.append((label, res["metrics"], t_export, res["num_pairs"]))
        if kind == "sift":  # the classical matcher: the same export, mutual NN + Lowe's ratio test
            ratio = load_pose_settings(["evaluation.pose.ratio=0.8"], sift=True)
            res = evaluate_pose_folder(out / "predictions", ratio, progress=False)
            rows.append(("SIFT + ratio test 0.8 (same export)", res["metrics"], t_export, res["num_pairs"]))

    print(f"### Relative pose (ScanNet sample pairs), {args.size[1]}x{args.size[0]}\n")
    print(f"- date: {datetime.date.today().isoformat()}; machine: {cpu_name()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print(f"- {pose.header()}\n")
    print("| model | pairs | AUC@5 | AUC@10 | AUC@20 | precision | matches | failures | export (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, m, t, n in rows:
        auc = m["pose_auc"]
        print(f"| {label} | {n} | {auc['5']:.3f} | {auc['10']:.3f} | {auc['20']:.3f} | {m['precision']:.3f} | "
              f"{m['mean_matches']:.1f} | {m['pose_failures']} | {t:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
