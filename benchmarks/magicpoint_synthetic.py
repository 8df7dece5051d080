"""MagicPoint on Synthetic Shapes: detector quality on the *test* split, and training throughput.

    # quality of trained weights on the test split (mAP, precision, recall, per primitive)
    python benchmarks/magicpoint_synthetic.py --weights pretrained/magicpoint_synth.pth
    # train from scratch for a stated budget, then the same evaluation
    python benchmarks/magicpoint_synthetic.py --train-minutes 60 --config configs/magicpoint_shapes_cpu.yaml
    # training throughput (images/s) for fp32 and bf16 autocast
    python benchmarks/magicpoint_synthetic.py --throughput

Detections: NMS radius and border from the config's ``model:`` section, every score down to
1e-4 enters the precision-recall curve; a detection is correct within 2 px of a ground-truth
point not taken by a better one (``evaluations.detection_pr``). Precision / recall are
reported at the config's ``detection_threshold``. Prints markdown with machine and date.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datasets import get_dataset  # noqa: E402
from datasets.collate import collate  # noqa: E402
from evaluations.detection_pr import DetectionAccumulator  # noqa: E402
from models import build_model, load_weights  # noqa: E402
from training.magicpoint import MAP_MIN_SCORE  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.keypoints import extract_keypoints, semi_to_heatmap  # noqa: E402
from machine_info import cpu_name  # noqa: E402


def machine() -> str:
    return (f"{cpu_name()}, {torch.get_num_threads()} threads, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


@torch.no_grad()
def evaluate(model: torch.nn.Module, config: dict, batch_size: int = 32) -> dict:
    """mAP / precision / recall on the test split, overall and per primitive."""
    model.eval()
    dataset = get_dataset(config, "test")
    mcfg = config["model"]
    overall = DetectionAccumulator(2.0)
    per = defaultdict(lambda: DetectionAccumulator(2.0))
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        heat = semi_to_heatmap(model(batch["image"])["semi"])
        kp = extract_keypoints(heat, MAP_MIN_SCORE, int(mcfg["nms"]), int(mcfg.get("remove_borders", 0)))
        for b, pts in enumerate(kp.to_list()):
            gt = batch["keypoints"][b][batch["keypoint_mask"][b]].numpy()
            pts = pts.numpy()
            overall.add(pts[:, :2], pts[:, 2], gt)
            per[batch["name"][b].split("/")[0]].add(pts[:, :2], pts[:, 2], gt)
    thr = float(mcfg["detection_threshold"])
    return {"all": overall.result(thr), **{k: v.result(thr) for k, v in sorted(per.items())}}


def report(results: dict, title: str, extra: str = "") -> str:
    lines = [f"### {title}", "", f"- date: {datetime.date.today().isoformat()}; machine: {machine()}"]
    if extra:
        lines.append(f"- {extra}")
    lines += ["", "| primitive | images | mAP | precision | recall |", "|---|---:|---:|---:|---:|"]
    for k, r in results.items():
        lines.append(f"| {k} | {r['num_images']} | {r['mAP']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} |")
    return "\n".join(lines)


def throughput(config: dict, steps: int = 6, batch: int = 32) -> str:
    """Training images/s of one detector step (forward, loss, backward, Adam), fp32 vs bf16."""
    from training.losses import detector_loss

    h, w = config["data"]["preprocessing"]["resize"]
    rows = ["| precision | batch | s / step | images / s |", "|---|---:|---:|---:|"]
    for name, dtype in (("fp32", None), ("bf16 autocast", torch.bfloat16)):
        torch.manual_seed(0)
        model = build_model(config["model"]).to(memory_format=torch.channels_last).train()
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        x = torch.rand(batch, 1, h, w)
        labels = (torch.rand(batch, 1, h, w) > 0.995).float()
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = detector_loss(model(x)["semi"], labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
        med = float(np.median(times[1:]))
        rows.append(f"| {name} | {batch} | {med:.2f} | {batch / med:.1f} |")
    return "\n".join([f"### Training throughput ({h}x{w})", "",
                      f"- date: {datetime.date.today().isoformat()}; machine: {machine()}", ""] + rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/magicpoint_shapes_cpu.yaml")
    p.add_argument("--weights", help="evaluate these weights (state dict or checkpoint)")
    p.add_argument("--train-minutes", type=float, help="train from scratch for this long, then evaluate")
    p.add_argument("--name", default="bench_magicpoint", help="experiment folder for --train-minutes")
    p.add_argument("--throughput", action="store_true")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    config = load_config(args.config, args.overrides)
    out = []
    if args.throughput:
        out.append(throughput(config))
    if args.train_minutes:
        from training.magicpoint import MagicPointTask
        from training.trainer import Trainer

        config = {**config, "time_limit_minutes": float(args.train_minutes)}
        trainer = Trainer(config, args.name, MagicPointTask(config))
        trainer.train()
        args.weights = str(trainer.ckpt_dir)
        extra = (f"trained {args.train_minutes:g} min from scratch ({args.config}): {trainer.n_iter} iterations "
                 f"of batch {config['model']['batch_size']}")
    if args.weights:
        from training.checkpoints import resolve_pretrained

        path = resolve_pretrained({"pretrained": args.weights}, "the benchmark")
        model = build_model(config["model"])
        obj = load_weights(model, path)
        it = obj.get("n_iter") if isinstance(obj, dict) else None
        extra_w = f"weights {path}" + (f" (iteration {it})" if it is not None else "")
        res = evaluate(model, config)
        out.append(report(res, "Synthetic Shapes test split", extra_w + ("; " + extra if args.train_minutes else "")))
    print("\n\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
