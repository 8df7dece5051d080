"""Semantic segmentation metrics from exported predictions (mIoU, pixel accuracy, per-class IoU).

A predictions folder holds ``*.npz`` files with ``seg`` (predicted class ids ``H x W``, or logits
``C x H x W``) and ``seg_gt`` (ground-truth class ids ``H x W``). The classes are those of a
categories file (COCO format: ``[{id, name, color, ...}]``; default: the 34 Cityscapes classes).
Ground-truth pixels equal to ``ignore_index`` or whose id is not a category are left out.
A class absent from both prediction and ground truth (over the whole folder) has no IoU and
does not count in the mean. Everything is accumulated in one confusion matrix.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils.io import atomic_imwrite, atomic_write_text
from utils.segmentation_labels import categories_json, read_categories

RESULTS_JSON = "segmentation_results.json"
RESULTS_TABLE = "segmentation_results.txt"
IMAGE_FOLDER = "segmentation"


def load_categories(category_file: str | Path | None) -> list[dict]:
    """Categories sorted by id: from a file, or the cs34 classes when ``category_file`` is None."""
    cats = categories_json("cs34") if category_file is None else read_categories(category_file)
    if not cats:
        raise ValueError(f"{category_file}: no categories")
    out = []
    for c in cats:
        color = c.get("color", [0, 0, 0])
        if not (isinstance(color, (list, tuple)) and len(color) == 3 and all(isinstance(v, int) for v in color)):
            raise ValueError(f"{category_file}: category {c['name']!r} has color {color!r}, expected [r, g, b]")
        out.append({**c, "id": int(c["id"]), "name": str(c["name"]), "color": [int(v) for v in color]})
    ids = [c["id"] for c in out]
    if len(set(ids)) != len(ids) or min(ids) < 0:
        raise ValueError(f"{category_file}: category ids must be unique and >= 0")
    return sorted(out, key=lambda c: c["id"])


def _compact(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Class ids -> index in ``ids`` (sorted), -1 for values that are not in ``ids``."""
    labels = labels.astype(np.int64, copy=False)
    pos = np.clip(np.searchsorted(ids, labels), 0, len(ids) - 1)
    return np.where(ids[pos] == labels, pos, -1)


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, class_ids, ignore_index: int = 255) -> np.ndarray:
    """Confusion counts ``K x (K + 1)`` int64: row = ground-truth class, column = predicted class,
    in the order of ``class_ids`` (K classes); the last column counts predictions that are not a
    class. Ground-truth pixels equal to ``ignore_index`` or not a class are skipped.
    ``pred`` and ``gt`` are integer arrays of the same shape."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    ids = np.asarray(sorted(int(i) for i in class_ids), dtype=np.int64)
    k = len(ids)
    g = _compact(gt, ids)
    valid = (g >= 0) & (gt != ignore_index)
    p = _compact(pred, ids)
    p = np.where(p >= 0, p, k)
    return np.bincount(g[valid] * (k + 1) + p[valid], minlength=k * (k + 1)).reshape(k, k + 1)


def scores_from_confusion(cm: np.ndarray) -> dict:
    """Metrics of a ``K x (K + 1)`` confusion matrix (see :func:`confusion_matrix`).

    Returns ``iou`` (K,) with NaN for classes absent from prediction and ground truth, ``mIoU``
    (mean over the others), ``pixel_accuracy`` (correct / counted pixels), ``mean_accuracy``
    (mean recall over the classes present in the ground truth); NaN when nothing was counted.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm[:, :-1])
    gt_count = cm.sum(axis=1)
    pred_count = cm[:, :-1].sum(axis=0)
    union = gt_count + pred_count - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        recall = np.where(gt_count > 0, tp / gt_count, np.nan)
    total = cm.sum()
    present = ~np.isnan(iou)
    return {
        "iou": iou,
        "mIoU": float(iou[present].mean()) if present.any() else float("nan"),
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
        "mean_accuracy": float(np.nanmean(recall)) if (gt_count > 0).any() else float("nan"),
    }


def colorize(labels: np.ndarray, categories: list[dict]) -> np.ndarray:
    """Class ids ``H x W`` -> ``H x W x 3`` uint8 RGB with the categories' colours (black for
    ignored / unknown ids)."""
    ids = np.asarray([int(c["id"]) for c in categories], dtype=np.int64)
    palette = np.zeros((len(ids) + 1, 3), dtype=np.uint8)
    palette[:-1] = [c.get("color", (0, 0, 0)) for c in categories]
    idx = _compact(labels, ids)
    return palette[np.where(idx >= 0, idx, len(ids))]


def _prediction_files(pred_dir: Path) -> list[Path]:
    def key(p: Path):  # 2.npz before 10.npz
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.stem)]

    return sorted(pred_dir.glob("*.npz"), key=key)


def _read_pair(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(predicted ids H x W, ground truth ids H x W) of one prediction file."""
    try:
        with np.load(path) as f:
            for key, hint in (("seg", "export with --export-segmentation"),
                              ("seg_gt", "the exported dataset had no segmentation labels")):
                if key not in f.files:
                    raise ValueError(f"{path}: no '{key}' array ({hint})")
            seg, gt = f["seg"], f["seg_gt"]
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read predictions ({e})") from None
    if seg.ndim == 3:  # logits C x H x W
        seg = seg.argmax(axis=0)
    if seg.ndim != 2 or gt.ndim != 2:
        raise ValueError(f"{path}: 'seg' must be H x W ids or C x H x W logits and 'seg_gt' H x W, "
                         f"got {seg.shape} and {gt.shape}")
    if seg.shape != gt.shape:
        raise ValueError(f"{path}: 'seg' {seg.shape} and 'seg_gt' {gt.shape} differ in size")
    return seg.astype(np.int64), gt.astype(np.int64)


def _format_table(result: dict, categories: list[dict], cm: np.ndarray) -> str:
    lines = [f"images: {result['num_images']}   pixels: {result['num_pixels']}",
             f"mIoU: {result['mIoU']:.4f}   pixel accuracy: {result['pixel_accuracy']:.4f}   "
             f"mean accuracy: {result['mean_accuracy']:.4f}", "",
             f"{'id':>4}  {'class':<24} {'IoU':>8} {'gt pixels':>12} {'pred pixels':>12}"]
    gt_count, pred_count = cm.sum(axis=1), cm[:, :-1].sum(axis=0)
    for i, c in enumerate(categories):
        iou = result["per_class_iou"][c["name"]]
        text = f"{iou:8.4f}" if iou is not None else f"{'-':>8}"
        lines.append(f"{int(c['id']):>4}  {c['name']:<24} {text} {int(gt_count[i]):>12} {int(pred_count[i]):>12}")
    return "\n".join(lines) + "\n"


def evaluate_segmentation_folder(pred_dir: Path, output_img: bool = False, category_file: str | None = None,
                                 ignore_index: int = 255) -> dict:
    """Evaluate every ``*.npz`` of ``pred_dir`` (see the module docstring).

    Returns ``{"mIoU", "pixel_accuracy", "mean_accuracy", "per_class_iou": {name: IoU or None},
    "num_images", "num_pixels", "confusion_matrix" (K x (K + 1) list), "class_ids", "category_file"}``
    and writes it to ``<pred_dir>/segmentation_results.json`` plus a table in
    ``segmentation_results.txt``. With ``output_img``, colour PNGs ``<stem>_pred.png`` and
    ``<stem>_gt.png`` are written under ``<pred_dir>/segmentation/``.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise NotADirectoryError(f"{pred_dir}: predictions folder not found")
    files = _prediction_files(pred_dir)
    if not files:
        raise FileNotFoundError(f"{pred_dir}: no .npz prediction files")
    categories = load_categories(category_file)
    class_ids = [int(c["id"]) for c in categories]
    names = [str(c["name"]) for c in categories]
    if len(set(names)) != len(names):
        raise ValueError(f"{category_file}: category names must be unique")
    cm = np.zeros((len(class_ids), len(class_ids) + 1), dtype=np.int64)
    for path in tqdm(files, desc="segmentation", unit="file"):
        seg, gt = _read_pair(path)
        cm += confusion_matrix(seg, gt, class_ids, ignore_index)
        if output_img:
            out = pred_dir / IMAGE_FOLDER
            atomic_imwrite(out / f"{path.stem}_pred.png", colorize(seg, categories)[..., ::-1])
            gt_shown = np.where(gt == ignore_index, -1, gt)
            atomic_imwrite(out / f"{path.stem}_gt.png", colorize(gt_shown, categories)[..., ::-1])
    if cm.sum() == 0:
        raise ValueError(f"{pred_dir}: no ground-truth pixel was counted (all are ignore_index="
                         f"{ignore_index} or not an id of the categories; check --category-file)")
    s = scores_from_confusion(cm)
    result = {
        "mIoU": s["mIoU"],
        "pixel_accuracy": s["pixel_accuracy"],
        "mean_accuracy": s["mean_accuracy"],
        "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, s["iou"])},
        "num_images": len(files),
        "num_pixels": int(cm.sum()),
        "class_ids": class_ids,
        "confusion_matrix": cm.tolist(),
        "category_file": str(category_file) if category_file is not None else None,
    }
    atomic_write_text(pred_dir / RESULTS_JSON, json.dumps(result, indent=1) + "\n")
    atomic_write_text(pred_dir / RESULTS_TABLE, _format_table(result, categories, cm))
    return result
