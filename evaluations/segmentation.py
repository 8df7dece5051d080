"""Semantic segmentation metrics from exported predictions (mIoU, pixel accuracy, per-class IoU).

A predictions folder holds ``*.npz`` files with ``seg`` (predicted class ids ``H x W``, or logits
``C x H x W``) and ``seg_gt`` (ground-truth class ids ``H x W``); the export also writes
``warped_seg`` / ``warped_seg_gt`` for the second image of each pair, scored the same way into a
second result (``warped``), and ``seg_label_set`` (``cs34`` | ``cs4``). The classes are those of a
categories file (COCO format: ``[{id, name, color, ...}]``; default: the export's label set, cs34
when unknown). cs34 predictions scored with the cs4 categories (``utils/cs4_categories.json``)
are mapped to cs4 first, predictions and ground truth alike (``utils.segmentation_labels.CS34_TO_CS4``).
Ground-truth pixels equal to ``ignore_index`` or whose id is not a category are left out.
A class absent from both prediction and ground truth (over the whole folder) has no IoU and
does not count in the mean. Everything is accumulated in one confusion matrix per image side.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils.io import atomic_imwrite, atomic_write_text
from utils.segmentation_labels import IGNORE_INDEX, LABEL_SETS, categories_json, cs34_lut, read_categories

RESULTS_JSON = "segmentation_results.json"
RESULTS_TABLE = "segmentation_results.txt"
IMAGE_FOLDER = "segmentation"


def load_categories(category_file: str | Path | None, label_set: str = "cs34") -> list[dict]:
    """Categories sorted by id: from a file, or the classes of ``label_set`` when ``category_file``
    is None."""
    cats = categories_json(label_set) if category_file is None else read_categories(category_file)
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


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, class_ids, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
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


SIDES = ("seg", "warped_seg")  # the first and the second image of each exported pair


def _ids(path: Path, seg: np.ndarray, gt: np.ndarray, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``(predicted ids, ground-truth ids)``, both ``H x W`` int64 (logits -> argmax)."""
    if seg.ndim == 3:  # logits C x H x W
        seg = seg.argmax(axis=0)
    if seg.ndim != 2 or gt.ndim != 2:
        raise ValueError(f"{path}: '{key}' must be H x W ids or C x H x W logits and '{key}_gt' H x W, "
                         f"got {seg.shape} and {gt.shape}")
    if seg.shape != gt.shape:
        raise ValueError(f"{path}: '{key}' {seg.shape} and '{key}_gt' {gt.shape} differ in size")
    return seg.astype(np.int64), gt.astype(np.int64)


def _read_file(path: Path, ignore_index: int) -> tuple[dict, str | None, bool]:
    """One prediction file -> ``({side: (pred ids, gt ids)}, label set or None, has warped_seg
    without warped_seg_gt)``. ``seg`` and ``seg_gt`` are required; the warped side is optional."""
    try:
        with np.load(path) as f:
            for key, hint in (("seg", "export with --export-segmentation"),
                              ("seg_gt", "the exported dataset had no segmentation labels")):
                if key not in f.files:
                    raise ValueError(f"{path}: no '{key}' array ({hint})")
            sides = {k: _ids(path, f[k], f[f"{k}_gt"], k) for k in SIDES if k in f.files and f"{k}_gt" in f.files}
            unscored = "warped_seg" in f.files and "warped_seg_gt" not in f.files
            label_set = str(f["seg_label_set"]) if "seg_label_set" in f.files else None
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read predictions ({e})") from None
    if label_set is not None and label_set not in LABEL_SETS:
        raise ValueError(f"{path}: 'seg_label_set' is {label_set!r}, expected {' or '.join(LABEL_SETS)}")
    if label_set is None:
        # exports without the key: ground-truth ids beyond cs4's 0-3 can only be cs34
        gt = sides["seg"][1]
        label_set = "cs34" if ((gt >= len(LABEL_SETS["cs4"])) & (gt != ignore_index)).any() else None
    return sides, label_set, unscored


def categories_label_set(categories: list[dict]) -> str | None:
    """The label set whose classes (ids and names) ``categories`` are, else None."""
    ids_names = [(c["id"], c["name"]) for c in categories]
    for name, table in LABEL_SETS.items():
        if ids_names == [(c.id, c.name) for c in table]:
            return name
    return None


def to_cs4(labels: np.ndarray, ignore_index: int) -> np.ndarray:
    """cs34 ids -> cs4 ids (``CS34_TO_CS4``); void and non-class ids -> ``ignore_index``."""
    lut = cs34_lut("cs4", ignore_index)
    inside = (labels >= 0) & (labels < len(lut))
    return np.where(inside, lut[np.clip(labels, 0, len(lut) - 1)], ignore_index)


def _format_table(result: dict, categories: list[dict], cm: np.ndarray, title: str = "seg") -> str:
    lines = [f"{title}: images: {result['num_images']}   pixels: {result['num_pixels']}",
             f"mIoU: {result['mIoU']:.4f}   pixel accuracy: {result['pixel_accuracy']:.4f}   "
             f"mean accuracy: {result['mean_accuracy']:.4f}", "",
             f"{'id':>4}  {'class':<24} {'IoU':>8} {'gt pixels':>12} {'pred pixels':>12}"]
    gt_count, pred_count = cm.sum(axis=1), cm[:, :-1].sum(axis=0)
    for i, c in enumerate(categories):
        iou = result["per_class_iou"][c["name"]]
        text = f"{iou:8.4f}" if iou is not None else f"{'-':>8}"
        lines.append(f"{int(c['id']):>4}  {c['name']:<24} {text} {int(gt_count[i]):>12} {int(pred_count[i]):>12}")
    return "\n".join(lines) + "\n"


def _scores(cm: np.ndarray, names: list[str], num_images: int) -> dict:
    s = scores_from_confusion(cm)
    return {
        "mIoU": s["mIoU"],
        "pixel_accuracy": s["pixel_accuracy"],
        "mean_accuracy": s["mean_accuracy"],
        "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, s["iou"])},
        "num_images": num_images,
        "num_pixels": int(cm.sum()),
        "confusion_matrix": cm.tolist(),
    }


def evaluate_segmentation_folder(pred_dir: Path, output_img: bool = False, category_file: str | None = None,
                                 ignore_index: int = IGNORE_INDEX) -> dict:
    """Evaluate every ``*.npz`` of ``pred_dir`` (see the module docstring).

    Returns ``{"mIoU", "pixel_accuracy", "mean_accuracy", "per_class_iou": {name: IoU or None},
    "num_images", "num_pixels", "confusion_matrix" (K x (K + 1) list), "class_ids", "category_file",
    "label_set", "mapping", "warped", "warped_unscored"}`` and writes it to
    ``<pred_dir>/segmentation_results.json`` plus a table in ``segmentation_results.txt``. The
    top-level scores are those of ``seg``; ``warped`` holds the same scores of ``warped_seg``
    against ``warped_seg_gt`` (None when no file has both); ``warped_unscored`` counts files with
    ``warped_seg`` but no ``warped_seg_gt``. ``label_set`` is the export's (cs34 | cs4 | None) and
    ``mapping`` is ``"cs34 -> cs4"`` when cs34 ids were mapped to the cs4 categories (else None).
    With ``output_img``, colour PNGs ``<stem>_pred.png`` and ``<stem>_gt.png`` (and
    ``<stem>_warped_pred.png`` / ``<stem>_warped_gt.png``) are written under ``<pred_dir>/segmentation/``.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise NotADirectoryError(f"{pred_dir}: predictions folder not found")
    files = _prediction_files(pred_dir)
    if not files:
        raise FileNotFoundError(f"{pred_dir}: no .npz prediction files")
    _, label_set, _ = _read_file(files[0], ignore_index)
    categories = load_categories(category_file, label_set or "cs34")
    class_ids = [int(c["id"]) for c in categories]
    names = [str(c["name"]) for c in categories]
    if len(set(names)) != len(names):
        raise ValueError(f"{category_file}: category names must be unique")
    wanted = categories_label_set(categories)
    if label_set == "cs4" and wanted == "cs34":
        raise ValueError(f"{category_file}: cs34 categories, but {pred_dir} holds cs4 predictions; "
                         f"pass --category-file utils/cs4_categories.json (or no category file)")
    mapping = "cs34 -> cs4" if (label_set == "cs34" and wanted == "cs4") else None
    cms = {k: np.zeros((len(class_ids), len(class_ids) + 1), dtype=np.int64) for k in SIDES}
    counts = dict.fromkeys(SIDES, 0)
    unscored = 0
    for path in tqdm(files, desc="segmentation", unit="file"):
        sides, file_set, no_gt = _read_file(path, ignore_index)
        if file_set is not None and label_set is not None and file_set != label_set:
            raise ValueError(f"{path}: {file_set} labels, but {files[0].name} has {label_set}; "
                             f"evaluate one export at a time")
        unscored += int(no_gt)
        for key, (seg, gt) in sides.items():
            if mapping:
                seg, gt = to_cs4(seg, -1), to_cs4(gt, ignore_index)  # a void prediction is a wrong one
            cms[key] += confusion_matrix(seg, gt, class_ids, ignore_index)
            counts[key] += 1
            if output_img:
                out = pred_dir / IMAGE_FOLDER
                tag = "" if key == "seg" else "_warped"
                atomic_imwrite(out / f"{path.stem}{tag}_pred.png", colorize(seg, categories)[..., ::-1])
                gt_shown = np.where(gt == ignore_index, -1, gt)
                atomic_imwrite(out / f"{path.stem}{tag}_gt.png", colorize(gt_shown, categories)[..., ::-1])
    cm = cms["seg"]
    if cm.sum() == 0:
        raise ValueError(f"{pred_dir}: no ground-truth pixel was counted (all are ignore_index="
                         f"{ignore_index} or not an id of the categories; check --category-file)")
    result = _scores(cm, names, len(files))
    result.update({
        "class_ids": class_ids,
        "category_file": str(category_file) if category_file is not None else None,
        "label_set": label_set,
        "mapping": mapping,
        "warped": _scores(cms["warped_seg"], names, counts["warped_seg"]) if counts["warped_seg"] else None,
        "warped_unscored": unscored,
    })
    table = _format_table(result, categories, cm)
    if result["warped"] is not None:
        table += "\n" + _format_table(result["warped"], categories, cms["warped_seg"], "warped_seg")
    atomic_write_text(pred_dir / RESULTS_JSON, json.dumps(result, indent=1) + "\n")
    atomic_write_text(pred_dir / RESULTS_TABLE, table)
    return result
