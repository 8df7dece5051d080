"""``export_detector_homoAdapt``: pseudo ground-truth keypoints by homographic adaptation.

    python export.py export_detector_homoAdapt configs/magicpoint_coco_export.yaml magicpoint_synth_homoAdapt_coco

For every image of the split ``data.export_folder`` (train | val) of ``data.dataset``, the
detector (``pretrained``) runs under homographic adaptation (``data.homography_adaptation``, see
:mod:`models.homography_adaptation`) and the keypoints of the aggregated heatmap
(``model.detection_threshold / nms / remove_borders / top_k / subpixel``, applied by
:meth:`models.frontend.Frontend.keypoints`) are written to

    <EXPER_PATH>/<exper_name>/predictions/<split>/<item name>.npz     (format: datasets/keypoint_labels.py)

which is the folder joint training reads with ``data.labels: <exper_name>/predictions``.
With ``--outputImg`` the image with its points drawn goes to
``<EXPER_PATH>/<exper_name>/images/<split>/<item name>.png``.

* Resumable: images whose ``.npz`` exists and reads back as labels are skipped (an unreadable
  one is exported again); with ``--outputImg`` a missing picture of a skipped image is drawn from
  its labels. Files are written atomically.
* Unreadable images (and degenerate ones: smaller than one 8 x 8 cell, NaN pixels) are skipped
  with a warning naming the file and counted as failed.
* ``data.homography_adaptation.enable: false`` exports the detector's plain keypoints (one view).
* Sharded: under ``torchrun`` (``RANK`` / ``WORLD_SIZE``) rank r exports items r, r + W, ...;
  every image's homographies are seeded from ``seed`` and its name only, so the files do not
  depend on the number of processes.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from datasets import get_dataset
from datasets.keypoint_labels import label_path, load_keypoint_labels, save_keypoint_labels
from models import load_pretrained
from models.frontend import Frontend, keypoint_settings
from models.homography_adaptation import homography_adaptation, prepare_detector
from training.checkpoints import resolve_pretrained
from utils.cli import UserError, resolve_device
from utils.draw import draw_keypoints, save_rgb
from utils.io import ImageReadError, atomic_write_text

SPLITS = ("train", "val")


def labels_readable(pred_dir: Path, split: str, name: str) -> np.ndarray | None:
    """The ``N x 3`` points of an existing label file, or None when it is missing or unreadable
    (a file cut by a full disk, or not written by this exporter)."""
    path = label_path(pred_dir, split, name)
    if not path.is_file():
        return None
    try:
        load_keypoint_labels(pred_dir, split, name)  # the training loader's own checks
        with np.load(path) as f:
            pts = np.asarray(f["pts"], dtype=np.float32).reshape(-1, 3)
    except (ValueError, OSError, KeyError):
        return None
    return pts if np.isfinite(pts).all() else None


def save_picture(path: Path, image: torch.Tensor, pts: np.ndarray) -> None:
    """``--outputImg``: bright green dots on the gray image (1 x H x W), for a quick look at the labels."""
    save_rgb(path, draw_keypoints(image[0].float().clamp(0, 1).numpy(), pts, (0, 255, 0), radius=1.0, thickness=-1))


@dataclass
class ExportStats:
    done: int = 0        # exported by this run
    skipped: int = 0     # already exported by an earlier run
    failed: int = 0      # unreadable images

    def __add__(self, other: "ExportStats") -> "ExportStats":
        return ExportStats(self.done + other.done, self.skipped + other.skipped, self.failed + other.failed)


def shard() -> tuple[int, int]:
    """``(rank, world_size)`` from the ``RANK`` / ``WORLD_SIZE`` variables set by torchrun."""
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise UserError("RANK and WORLD_SIZE must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    return rank, world


def image_seed(seed: int, name: str) -> int:
    """A 63-bit seed for the homographies of one image, from the run seed and the image name."""
    digest = hashlib.sha256(f"{int(seed)}:{name}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class _ReadOrReport(Dataset):
    """Items ``indices`` of a dataset; an unreadable image gives ``{"name", "error"}`` instead."""

    def __init__(self, dataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        index = self.indices[i]
        try:
            return self.dataset[index]
        except ImageReadError as e:
            return {"name": self.dataset.names[index], "error": str(e)}


def load_detector(config: dict, device: torch.device) -> torch.nn.Module:
    """The configured network with ``pretrained`` weights, prepared for fast inference."""
    path = resolve_pretrained(config, "export_detector_homoAdapt")
    model = load_pretrained(config["model"], path, strict=True, weights_only=bool(config["weights_only"]))
    return prepare_detector(model, device)


LABEL_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_RECORD = "labels_precision.json"  # beside predictions/: what the labels were computed in


def label_precision(config: dict, device: torch.device) -> tuple[str, torch.dtype | None]:
    """The precision labels are computed in: ``inference.precision`` (auto = fp32, so that a config
    gives the same labels on every machine; bf16 / fp16 autocast are opt-in, faster (on a CPU only with
    native bf16) and inexact).
    The top-level ``precision`` is training's and is not read here."""
    from models.inference import resolve_inference_precision

    precision = resolve_inference_precision(config["inference"]["precision"], device)
    if precision not in LABEL_PRECISIONS:  # (fp16 on a CPU is already refused above)
        raise UserError(f"inference.precision: {precision} is not available for homography adaptation "
                        f"(expected auto, {', '.join(LABEL_PRECISIONS)})")
    return precision, LABEL_PRECISIONS[precision]


def record_precision(export_dir: Path, split: str, precision: str, resuming: bool = False) -> None:
    """Write (or check, when resuming) ``labels_precision.json``: ``{split: precision}``. Labels of
    one split are never mixed from two precisions. ``resuming``: labels of the split exist already
    (a folder exported before the record existed cannot be checked: a warning says so)."""
    path = Path(export_dir) / PRECISION_RECORD
    record = json.loads(path.read_text()) if path.is_file() else {}
    if resuming and split not in record:
        warnings.warn(f"{path.parent}: the existing {split} labels have no precision record; the new ones are "
                      f"computed in {precision} (older exports used the training precision, bf16 on some "
                      f"machines)", stacklevel=2)
    if record.get(split, precision) != precision:
        raise UserError(f"{path}: the {split} labels so far were computed in {record[split]}, this run would "
                        f"use {precision}; set inference.precision: {record[split]} or export to a new folder")
    if record.get(split) != precision:
        record[split] = precision
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def _init_process_group(world: int) -> bool:
    """Join the torchrun group (gloo: only used to add up the counts); False when not launched so."""
    import torch.distributed as dist

    if world <= 1 or not dist.is_available() or "MASTER_ADDR" not in os.environ:
        return False
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return True


def export(config: dict, export_dir: Path, output_images: bool = False) -> ExportStats:
    """Export this process's shard of the split into ``export_dir``; returns this process's counts.
    ``config`` is a merged config (``utils.config.load_config``)."""
    data = config["data"]
    split = data["export_folder"]
    if split not in SPLITS:
        raise UserError(f"data.export_folder: expected one of {', '.join(SPLITS)}, got {split!r}")
    rank, world = shard()
    out_dir = Path(export_dir)
    pred_dir = out_dir / "predictions"
    img_dir = out_dir / "images" / split

    # the export reads plain images: never filter them by existing labels
    dataset = get_dataset({**config, "data": {**data, "labels": None}}, split)
    names = getattr(dataset, "names", None)
    if names is None:
        raise UserError(f"data.dataset {data['dataset']!r} cannot be exported (its items have no name list)")
    n_items = len(names) if int(config["eval_iter"]) < 0 else min(len(names), int(config["eval_iter"]))
    mine = list(range(rank, n_items, world))
    done = {i: labels_readable(pred_dir, split, names[i]) for i in mine}
    todo = [i for i in mine if done[i] is None]
    # exported before, but its picture is missing (e.g. a full disk): draw it from the labels
    redraw = [i for i in mine if output_images and done[i] is not None
              and not (img_dir / f"{names[i]}.png").is_file()]
    stats = ExportStats(skipped=len(mine) - len(todo))
    for i in redraw:
        try:
            item = dataset[i]
        except ImageReadError as e:
            warnings.warn(f"skipping unreadable image: {e}", stacklevel=2)
            continue
        save_picture(img_dir / f"{names[i]}.png", item["image"], done[i])

    device = resolve_device(config["device"])
    if device.type == "cuda" and world > 1 and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    precision, amp = label_precision(config, device)
    if rank == 0:
        record_precision(out_dir, split, precision, resuming=any(v is not None for v in done.values()))
    detector = load_detector(config, device)
    # the front end's post-processing, applied to the aggregated heatmap
    frontend = Frontend(detector, **keypoint_settings(config["model"]))
    ha_cfg = data["homography_adaptation"]
    if not ha_cfg["enable"]:  # adaptation off: the detector's own keypoints (identity view only)
        ha_cfg = {**ha_cfg, "num": 1}
    seed = int(config["seed"])

    workers = int(config["num_workers"])
    loader = DataLoader(_ReadOrReport(dataset, todo), batch_size=None, shuffle=False, num_workers=workers)
    desc = f"homography adaptation {split}" + (f" [rank {rank}/{world}]" if world > 1 else "")
    for item in tqdm(loader, total=len(todo), desc=desc, disable=rank != 0, dynamic_ncols=True):
        name = item["name"]
        if "error" in item:
            warnings.warn(f"skipping unreadable image: {item['error']}", stacklevel=2)
            stats.failed += 1
            continue
        image = item["image"][None].to(device)
        gen = torch.Generator().manual_seed(image_seed(seed, name))
        heat = homography_adaptation(detector, image, ha_cfg, gen, autocast_dtype=amp)
        pts = frontend.keypoints(heat).to_list()[0].float().cpu().numpy()
        if not np.isfinite(pts).all():  # never write labels a training would choke on
            warnings.warn(f"skipping {name}: the detector gave non-finite keypoints", stacklevel=2)
            stats.failed += 1
            continue
        save_keypoint_labels(label_path(pred_dir, split, name), pts, image.shape[-2:])
        if output_images:
            save_picture(img_dir / f"{name}.png", item["image"], pts)
        stats.done += 1
    return stats


def run(config: dict, export_dir: Path, args) -> int:
    """The ``export_detector_homoAdapt`` task (``args.outputImg``: also write drawn images)."""
    if getattr(args, "export_segmentation", False):
        # the labels are keypoints only (datasets/keypoint_labels.py): no place for a mask
        raise UserError("--export-segmentation: export_detector_homoAdapt writes keypoint labels only; "
                        "export masks with: python export.py export_descriptor <config> <folder> "
                        "--export-segmentation")
    rank, world = shard()
    grouped = _init_process_group(world)
    try:
        stats = export(config, export_dir, output_images=bool(getattr(args, "outputImg", False)))
        total = stats
        if grouped:
            import torch.distributed as dist

            counts = torch.tensor([stats.done, stats.skipped, stats.failed], dtype=torch.int64)
            dist.all_reduce(counts)
            total = ExportStats(*(int(c) for c in counts))
    finally:
        if grouped:
            import torch.distributed as dist

            dist.destroy_process_group()
    if rank == 0:
        split = config["data"]["export_folder"]
        where = Path(export_dir) / "predictions" / split
        print(f"homography adaptation export ({split}): {total.done} exported, {total.skipped} skipped "
              f"(already exported), {total.failed} failed (unreadable) -> {where}")
    return 0
