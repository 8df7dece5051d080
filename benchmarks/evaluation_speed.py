"""How fast is the HPatches evaluation? Times evaluation.py's work on synthetic prediction folders.

    python benchmarks/evaluation_speed.py [--pairs 580] [--points 1000] [--dim 256]
        [--sizes 240x320 480x640] [--protocol ours] [--workdir DIR] [--keep]

For each image size, writes ``--pairs`` synthetic prediction files (HPatches has 580 pairs:
116 sequences x 5) with ``--points`` detections per image and D-dimensional unit descriptors
(structured: re-detected points have close descriptors), then times every metric over the
folder (repeatability, MLE, homography accuracy, NN mAP, matching score; no pictures). The files
are freshly written, so they are read from the page cache. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluations.hpatches_report import evaluate_folder, single_torch_thread  # noqa: E402
from evaluations.predictions import list_prediction_files, load_pair  # noqa: E402
from evaluations.protocols import load_settings  # noqa: E402
from tests.fixtures.synthetic_predictions import write_synthetic_folder  # noqa: E402

from machine_info import cpu_name  # noqa: E402


def parse_size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=580)
    p.add_argument("--points", type=int, default=1000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--sizes", nargs="+", default=["240x320", "480x640"])
    p.add_argument("--protocol", choices=["ours", "reference"], default="ours")
    p.add_argument("--workdir", default=None, help="where the synthetic folders go (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the synthetic folders")
    p.add_argument("--export-pairs", type=int, default=0,
                   help="also time export_descriptor (SuperPointNet, random weights, the default "
                        "inference engine) on this many pairs of the embedded HPatches-style set at 240x320")
    args = p.parse_args()
    export_row = time_export(args.export_pairs, root_hint=args.workdir) if args.export_pairs else None

    settings = load_settings(protocol=args.protocol, top_k=args.points)
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="eval_speed_"))
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    try:
        for size_text in args.sizes:
            size = parse_size(size_text)
            folder = root / f"{size_text}" / "predictions"
            if folder.exists():
                shutil.rmtree(folder)
            t0 = time.perf_counter()
            write_synthetic_folder(folder, args.pairs, seed=0, size=size, n_points=args.points, dim=args.dim)
            t_write = time.perf_counter() - t0
            files = list_prediction_files(folder)
            t0 = time.perf_counter()
            with single_torch_thread():
                for f in files:
                    load_pair(f)
            t_load = time.perf_counter() - t0
            t0 = time.perf_counter()
            res = evaluate_folder(folder, settings, progress=False)
            t_eval = time.perf_counter() - t0
            rows.append((size_text, len(files), t_eval, len(files) / t_eval, t_load, res["metrics"]))
            print(f"{size_text}: {len(files)} pairs written in {t_write:.1f} s; evaluated in {t_eval:.1f} s "
                  f"({len(files) / t_eval:.1f} pairs/s; reading + validating alone {t_load:.1f} s)", file=sys.stderr)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(root, ignore_errors=True)

    import cv2
    import numpy as np
    import torch

    print(f"machine: {cpu_name()}, {os.cpu_count()} logical cores, load average {load_before:.1f} at start; "
          f"Python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
          f"OpenCV {cv2.__version__}")
    print(f"date: {datetime.date.today().isoformat()}; protocol {settings.protocol}, k = {settings.top_k}, "
          f"{args.points} points per image, D = {args.dim}")
    print()
    print("| image size | pairs | total time (s) | pairs/s | reading alone (s) | repeatability | HA eps=3 |")
    print("|---|---|---|---|---|---|---|")
    for size_text, n, t, rate, t_load, m in rows:
        print(f"| {size_text} | {n} | {t:.1f} | {rate:.1f} | {t_load:.1f} | {m['repeatability']:.3f} | "
              f"{m['homography_accuracy']['3']:.3f} |")
    if export_row:
        n, t = export_row
        print()
        print(f"Export for comparison (export_descriptor, SuperPointNet, 240x320, top-k 1000, {n} pairs of the "
              f"embedded set): {t / n:.2f} s/pair, i.e. {580 * t / n / 60:.1f} min for 580 pairs.")
    return 0


def time_export(n_pairs: int, root_hint: str | None = None) -> tuple[int, float]:
    """Seconds to export ``n_pairs`` pairs with export.py export_descriptor (both images of each pair)."""
    import argparse as _argparse

    import torch

    from exporters.descriptors import run as export_descriptor
    from models import build_network
    from utils.config import load_config

    work = Path(root_hint) if root_hint else Path(tempfile.mkdtemp(prefix="export_speed_"))
    torch.manual_seed(0)
    weights = work / "superpoint_random.pth"
    work.mkdir(parents=True, exist_ok=True)
    torch.save(build_network("SuperPointNet").state_dict(), weights)
    config = load_config("configs/magicpoint_repeatability_embedded.yaml",
                         [f"pretrained={weights}", "model.name=SuperPointNet", f"eval_iter={n_pairs}"])
    args = _argparse.Namespace(outputImg=False, export_segmentation=False)
    export_descriptor(config, work / "export", args)  # warm-up (also builds the embedded set)
    t0 = time.perf_counter()
    export_descriptor(config, work / "export", args)
    return n_pairs, time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
