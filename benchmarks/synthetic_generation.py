"""Synthetic Shapes generation rate (images/s) with 1 and 2 worker processes.

Reference settings: drawing at 960 x 1280, Gaussian blur 21, resize to 120 x 160, the default
drawing parameters. Draws ``--images`` training images of every primitive into a temporary
folder for each worker count and prints a markdown table (machine, versions, date, rates and
the time the full reference set, 9 x (10000 + 200 + 500) images, would take).

    python benchmarks/synthetic_generation.py [--images 8] [--workers 1 2]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from datasets import synthetic_shapes as ss  # noqa: E402
from utils.config import load_config  # noqa: E402

from machine_info import cpu_name  # noqa: E402

FULL_SET = len(ss.PRIMITIVES) * (10000 + 200 + 500)


def config_for(root: Path, n: int, workers: int, primitives) -> dict:
    return load_config(None, [
        f"data.root={root}",
        f"data.primitives={list(primitives)}",
        f"data.generation.split_sizes={{training: {n}, validation: 0, test: 0}}",
        "data.generation.image_size=[960, 1280]",
        "data.preprocessing.blur_size=21",
        "data.preprocessing.resize=[120, 160]",
        f"data.generation.num_workers={workers}",
    ])


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_generation(root: Path, n: int, workers: int, primitives) -> tuple[float, float]:
    """(wall seconds, CPU seconds) to generate ``n`` training images of each primitive."""
    cfg = config_for(root, n, workers, primitives)
    c0, t0 = cpu_seconds(), time.perf_counter()
    ss.ensure_generated(cfg, progress=False)
    return time.perf_counter() - t0, cpu_seconds() - c0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="training images per primitive (default 8)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    args = parser.parse_args()

    n = args.images
    rows, per_primitive = [], {}
    with tempfile.TemporaryDirectory(prefix="shapes_bench_") as tmp:
        for p in ss.PRIMITIVES:  # per primitive, in process (1 worker)
            wall, cpu = time_generation(Path(tmp) / "per_primitive", n, 1, [p])
            per_primitive[p] = (wall / n, cpu / n)
        for w in args.workers:
            wall, cpu = time_generation(Path(tmp) / f"w{w}", n, w, ss.PRIMITIVES)
            rows.append((w, n * len(ss.PRIMITIVES), wall, cpu))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    print("## Synthetic Shapes generation\n")
    print(f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}")
    print(f"- machine: {cpu_name()}, {os.cpu_count()} logical cores "
          f"({len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} usable), "
          f"{platform.system()} {platform.machine()}; 1-min load average after the run {load:.1f}")
    print(f"- versions: Python {platform.python_version()}, torch {torch.__version__}, "
          f"OpenCV {cv2.__version__}, numpy {np.__version__}")
    print(f"- settings: draw 960x1280, Gaussian blur 21, resize 120x160, default drawing parameters; "
          f"{n} training images per primitive x {len(ss.PRIMITIVES)} primitives per run")
    print(f"- command: `python benchmarks/synthetic_generation.py --images {n} "
          f"--workers {' '.join(map(str, args.workers))}`\n")
    print(f"| worker processes | images | wall s | images/s | CPU ms / image | full reference set "
          f"({FULL_SET:,} images) at this rate |")
    print("|---:|---:|---:|---:|---:|---:|")
    for w, total, wall, cpu in rows:
        rate = total / wall
        print(f"| {w} | {total} | {wall:.2f} | {rate:.1f} | {1000 * cpu / total:.1f} | "
              f"{FULL_SET / rate / 60:.0f} min |")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cpu_per_image = min(cpu / total for _, total, _, cpu in rows)
    print(f"\nCPU cost: {1000 * cpu_per_image:.1f} ms per image, i.e. {FULL_SET * cpu_per_image / 60:.0f} CPU-minutes "
          f"for the full reference set, about {FULL_SET * cpu_per_image / 60 / cores:.0f} min on {cores} idle cores "
          f"with {cores} workers (wall rates above include whatever else the machine was running).")
    print("\nPer primitive (1 process; drawing + blur + resize + PNG and npy writes):\n")
    print("| primitive | wall ms / image | CPU ms / image |")
    print("|---|---:|---:|")
    for p, (wall, cpu) in per_primitive.items():
        print(f"| {p} | {1000 * wall:.1f} | {1000 * cpu:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
