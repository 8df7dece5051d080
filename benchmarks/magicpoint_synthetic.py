"""MagicPoint on Synthetic Shapes: detector quality on the *test* split, and training throughput.

    # quality of trained weights on the test split, side by side, at 2 px and 4 px
    python benchmarks/magicpoint_synthetic.py --weights pretrained/magicpoint_synth.pth \
        pretrained/magicpoint_rpautrat.pth --max-images 300
    # train from scratch for a stated budget, then the same evaluation
    python benchmarks/magicpoint_synthetic.py --train-minutes 60 --config configs/magicpoint_shapes_cpu.yaml
    # training throughput (images/s) for fp32 and bf16 autocast
    python benchmarks/magicpoint_synthetic.py --throughput

Detections: NMS radius and border from the config's ``model:`` section, every score down to
1e-4 enters the precision-recall curve; a detection is correct within D px of a ground-truth
point not taken by a better one (``evaluations.detection_pr``), for every D of
``--distances`` (2 px: this project's figure; 4 px: the distance of the reference's notebook).
Precision / recall are reported at the config's ``detection_threshold``. Each weights file is
built as the layout it records (``models.load_pretrained``: converted files carry theirs), else
as the config's ``model.name``.

Only the test split is generated for the evaluation (training / validation sizes set to 0): image
i of the test split has the same pixels whatever the other splits' sizes (each image has its own
random stream), so this is the same test set in its own folder. ``--max-images N`` evaluates the
first N images of the fixed shuffle (all primitives mixed). Prints markdown with machine and date.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datasets import get_dataset  # noqa: E402
from datasets.collate import collate  # noqa: E402
from evaluations.detection_pr import DetectionAccumulator  # noqa: E402
from models import build_model, load_pretrained  # noqa: E402
from training.magicpoint import MAP_MIN_SCORE, detect_keypoints  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.keypoints import semi_to_heatmap  # noqa: E402

from machine_info import cpu_name  # noqa: E402


def machine() -> str:
    return (f"{cpu_name()}, {torch.get_num_threads()} threads, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def test_split_config(config: dict) -> dict:
    """``config`` with only the test split generated (the same test images, see the module doc)."""
    data = dict(config["data"])
    gen = dict(data["generation"])
    gen["split_sizes"] = {**gen["split_sizes"], "training": 0, "validation": 0}
    return {**config, "data": {**data, "generation": gen}}


# The reference's detector evaluation (rpautrat/SuperPoint: detector_evaluation.py and the notebook
# detector_evaluation_magic_point.ipynb), for figures comparable with its published mAP.
REFERENCE_NMS_BOX = 4        # box NMS: 4 x 4 boxes centred on the candidates ...
REFERENCE_NMS_IOU = 0.1      # ... a box overlapping a better one by IoU > 0.1 is suppressed
REFERENCE_MIN_PROB = 1e-3    # candidates of the NMS (the model's detection_threshold there)


def reference_detections(heat: torch.Tensor) -> list[np.ndarray]:
    """The reference's box NMS on a heatmap ``B x 1 x H x W`` -> per image ``N x 3`` (x, y, score)."""
    from torchvision.ops import nms

    out = []
    for h in heat[:, 0]:
        yx = torch.nonzero(h >= REFERENCE_MIN_PROB).float()
        scores = h[h >= REFERENCE_MIN_PROB]  # same row-major order as nonzero
        half = REFERENCE_NMS_BOX / 2
        keep = nms(torch.cat([yx - half, yx + half], 1), scores, REFERENCE_NMS_IOU)
        out.append(torch.cat([yx[keep].flip(1), scores[keep, None]], 1).numpy())
    return out


class ReferenceAccumulator:
    """The reference's precision / recall / mAP (same ``add`` / ``result`` as DetectionAccumulator).

    Differences from ours: the ground truth is rasterised to pixels (one per pixel); a detection,
    visited by decreasing score, is compared with the first ground-truth pixel (row-major) within
    ``distance`` only and is correct if that one is not taken yet; AP uses the interpolated
    precision (the running maximum from the low-score end).
    """

    def __init__(self, distance: float = 2.0):
        self.distance = distance
        self.scores, self.correct = [], []
        self.num_gt = self.num_images = 0

    def add(self, points, scores, gt) -> None:
        points = np.asarray(points, np.float64).reshape(-1, 2)
        scores = np.asarray(scores, np.float64).reshape(-1)
        order = np.argsort(-scores, kind="stable")
        points, scores = points[order], scores[order]
        gt = np.unique(np.round(np.asarray(gt, np.float64).reshape(-1, 2))[:, ::-1], axis=0)[:, ::-1]  # row-major
        correct = np.zeros(len(points), bool)
        if len(gt) and len(points):
            close = np.linalg.norm(points[:, None] - gt[None], axis=-1) <= self.distance
            first = np.argmax(close, axis=1)
            taken = np.zeros(len(gt), bool)
            for i in np.flatnonzero(close.any(axis=1)):  # few candidates; the order matters
                correct[i] = not taken[first[i]]
                taken[first[i]] = True
        self.scores.append(scores)
        self.correct.append(correct)
        self.num_gt += len(gt)
        self.num_images += 1

    def result(self, threshold: float = 0.0) -> dict:
        scores = np.concatenate(self.scores) if self.scores else np.zeros(0)
        correct = np.concatenate(self.correct) if self.correct else np.zeros(0, bool)
        order = np.argsort(-scores, kind="stable")
        tp = np.cumsum(correct[order])
        precision = np.concatenate([[0.0], tp / np.arange(1, len(tp) + 1), [0.0]])
        recall = np.concatenate([[0.0], tp / max(self.num_gt, 1), [1.0]])
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        keep = scores >= threshold
        n_det, n_tp = int(keep.sum()), int(correct[keep].sum())
        return {"precision": n_tp / n_det if n_det else 0.0, "recall": n_tp / self.num_gt if self.num_gt else 0.0,
                "mAP": float(np.sum(precision[1:] * np.diff(recall))) if self.num_gt else 0.0,
                "num_detections": n_det, "num_ground_truth": self.num_gt, "num_images": self.num_images}


@torch.no_grad()
def evaluate(model: torch.nn.Module, config: dict, distances=(2.0, 4.0), max_images: int | None = None,
             batch_size: int = 32, dataset=None, protocol: str = "ours") -> dict:
    """mAP / precision / recall on the test split, overall and per primitive, at each distance.

    Args:
        dataset: the test dataset (built from ``config`` when None); ``max_images``: its first N.
        protocol: ``ours`` (greedy NMS of the config's radius, ``DetectionAccumulator``) or
            ``reference`` (the reference's box NMS and ``ReferenceAccumulator``).
    Returns:
        ``{distance: {"all": result, <primitive>: result, ...}}``, each result a
        ``DetectionAccumulator.result`` at the config's ``model.detection_threshold``.
    """
    model.eval()
    dataset = get_dataset(config, "test") if dataset is None else dataset
    n = len(dataset) if max_images is None else min(int(max_images), len(dataset))
    mcfg = config["model"]
    if protocol not in ("ours", "reference"):
        raise ValueError(f"protocol: expected 'ours' or 'reference', got {protocol!r}")
    accumulator = DetectionAccumulator if protocol == "ours" else ReferenceAccumulator
    overall = {d: accumulator(d) for d in distances}
    per = {d: {} for d in distances}
    for start in range(0, n, batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, n))])
        if protocol == "ours":  # the training validation's detections
            detections = detect_keypoints(model, batch["image"], mcfg, MAP_MIN_SCORE).to_list()
        else:
            detections = reference_detections(semi_to_heatmap(model(batch["image"])["semi"]))
        for b, pts in enumerate(detections):
            gt = batch["keypoints"][b][batch["keypoint_mask"][b]].numpy()
            pts = np.asarray(pts)
            primitive = batch["name"][b].split("/")[0]
            for d in distances:  # one detection pass, scored at every distance
                overall[d].add(pts[:, :2], pts[:, 2], gt)
                per[d].setdefault(primitive, accumulator(d)).add(pts[:, :2], pts[:, 2], gt)
    thr = float(mcfg["detection_threshold"])
    return {d: {"all": overall[d].result(thr), **{k: v.result(thr) for k, v in sorted(per[d].items())}}
            for d in distances}


def compare_report(results: dict, title: str, extra: list[str] | None = None) -> str:
    """Markdown: one row per weights file (all primitives), then one per-primitive table each.

    ``results``: ``{label: evaluate(...)}``, the same distances for every label.
    """
    distances = list(next(iter(results.values())))
    lines = [f"### {title}", "", f"- date: {datetime.date.today().isoformat()}; machine: {machine()}"]
    lines += [f"- {e}" for e in (extra or [])]
    lines += ["", "| weights | images | " + " | ".join(f"mAP {d:g} px | P {d:g} px | R {d:g} px" for d in distances)
              + " |", "|---|---:|" + "---:|---:|---:|" * len(distances)]
    for label, res in results.items():
        cells = " | ".join(f"{res[d]['all']['mAP']:.3f} | {res[d]['all']['precision']:.3f} | "
                           f"{res[d]['all']['recall']:.3f}" for d in distances)
        lines.append(f"| {label} | {res[distances[0]]['all']['num_images']} | {cells} |")
    first = results[next(iter(results))][distances[0]]["all"]
    if "offset_shares" in first:  # our protocol: where the kept detections lie
        lines += ["", "Where the detections above the threshold lie, by distance to the nearest ground-truth point:",
                  "", "| weights | detections per ground-truth point | on (<= 2 px) | beside (2-6 px) "
                  "| away (> 6 px) |",
                  "|---|---:|---:|---:|---:|"]
        for label, res in results.items():
            r = res[distances[0]]["all"]
            sh = r["offset_shares"]
            lines.append(f"| {label} | {r['detections_per_gt']:.2f} | {sh['on']:.2f} | {sh['beside']:.2f} | "
                         f"{sh['away']:.2f} |")
    for label, res in results.items():
        lines += ["", f"Per primitive, {label}:", "",
                  "| primitive | images | " + " | ".join(f"mAP {d:g} px" for d in distances) + " |",
                  "|---|---:|" + "---:|" * len(distances)]
        lines += [f"| {k} | {r['num_images']} | " + " | ".join(f"{res[d][k]['mAP']:.3f}" for d in distances) + " |"
                  for k, r in res[distances[0]].items() if k != "all"]
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
    p.add_argument("--weights", nargs="+", default=[],
                   help="weights files to evaluate side by side (state dicts, checkpoints, converted files)")
    p.add_argument("--distances", nargs="+", type=float, default=[2.0, 4.0],
                   help="correctness distances in pixels (default: 2 4)")
    p.add_argument("--max-images", type=int, default=None, help="evaluate the first N test images only")
    p.add_argument("--protocol", choices=["ours", "reference"], default="ours",
                   help="ours: greedy NMS (config radius), one-to-one nearest matching, plain AP; reference: "
                        "the reference notebook's box NMS, matching and interpolated AP")
    p.add_argument("--train-minutes", type=float, help="train from scratch for this long, then evaluate")
    p.add_argument("--name", default="bench_magicpoint", help="experiment folder for --train-minutes")
    p.add_argument("--throughput", action="store_true")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    if args.max_images is not None and args.max_images < 1:
        p.error(f"--max-images: expected a positive integer, got {args.max_images}")
    if any(d <= 0 for d in args.distances):
        p.error(f"--distances: expected positive distances in pixels, got {args.distances}")
    if len(set(args.weights)) != len(args.weights):
        p.error(f"--weights: a file is given twice ({' '.join(args.weights)})")
    config = load_config(args.config, args.overrides)
    out = []
    if args.throughput:
        out.append(throughput(config))
    weights, extra = list(args.weights), []
    if args.train_minutes:
        from training.magicpoint import MagicPointTask
        from training.trainer import Trainer

        config = {**config, "time_limit_minutes": float(args.train_minutes)}
        trainer = Trainer(config, args.name, MagicPointTask(config))
        trainer.train()
        weights.append(str(trainer.ckpt_dir))
        extra.append(f"trained {args.train_minutes:g} min from scratch ({args.config}): {trainer.n_iter} "
                     f"iterations of batch {config['model']['batch_size']}")
    if weights:
        from training.checkpoints import resolve_pretrained

        eval_config = test_split_config(config)
        dataset = get_dataset(eval_config, "test")
        results = {}
        for w in weights:
            path = resolve_pretrained({"pretrained": w}, "the benchmark")
            model = load_pretrained(config["model"], path)
            results[w] = evaluate(model, eval_config, args.distances, args.max_images, dataset=dataset,
                                  protocol=args.protocol)
            print(f"evaluated {path} ({type(model).__name__})", file=sys.stderr, flush=True)
        n = len(dataset) if args.max_images is None else min(args.max_images, len(dataset))
        setting = f"config {args.config}" + (f" with {', '.join(args.overrides)}" if args.overrides else "")
        extra.insert(0, f"{setting}; the first {n} of the {len(dataset)} test images (fixed shuffle); "
                        f"protocol {args.protocol}")
        out.append(compare_report(results, "Synthetic Shapes test split", extra))
    print("\n\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
