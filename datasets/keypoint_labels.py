"""Exported keypoint labels (``data.labels``): one ``.npz`` per image at
``<labels>/<split>/<name>.npz``, written by the homography adaptation export and read by the
datasets when training on pseudo ground truth.

File format:

* ``pts``         ``N x 3`` float32 (x, y, score), sorted by decreasing score -- (x, y) in the
                  pixels of the image the labels were exported from, i.e. the dataset's image
                  after ``data.preprocessing.resize``. ``N x 2`` files are accepted too.
* ``image_size``  int64 ``[H, W]`` of that image. Files without it (e.g. labels made by other
                  tools) are read without the size check.

``<name>`` is the dataset item's ``name`` and may contain ``/`` (sub-folders), e.g.
``000000142238`` (COCO) or ``2011_09_26_drive_0001_sync_02/0000000000`` (KITTI).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from settings import exper_path
from utils.io import atomic_save_npz


def keypoint_labels_dir(labels: str | None) -> Path | None:
    """``data.labels`` as a folder: absolute, or relative to EXPER_PATH; None when unset."""
    if not labels:
        return None
    path = Path(labels).expanduser()
    path = path if path.is_absolute() else exper_path() / path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: keypoint label folder (data.labels) not found")
    return path


def label_path(labels_dir: Path, split: str, name: str) -> Path:
    """Where the labels of item ``name`` of ``split`` live."""
    return Path(labels_dir) / split / f"{name}.npz"


def save_keypoint_labels(path: str | Path, pts: np.ndarray, image_size) -> None:
    """Write one label file atomically (``pts`` ``N x 3`` (x, y, score); ``image_size`` (H, W))."""
    pts = np.asarray(pts, dtype=np.float32).reshape(-1, 3)
    atomic_save_npz(path, compressed=True, pts=pts,
                    image_size=np.asarray([int(image_size[0]), int(image_size[1])], dtype=np.int64))


def load_keypoint_labels(labels_dir: Path, split: str, name: str, image_size=None) -> torch.Tensor:
    """The labels of one image as ``N x 2`` float32 (x, y).

    With ``image_size`` (H, W) -- the size of the image the dataset yields -- a file that records
    a different export size is an error: the points would not fit the image.
    """
    path = label_path(labels_dir, split, name)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: keypoint labels not found (data.labels: "
                                f"expected <labels>/{split}/<name>.npz)")
    try:
        with np.load(path) as f:
            if "pts" not in f.files:
                raise ValueError(f"{path}: no 'pts' array (found {', '.join(f.files) or 'none'})")
            pts = np.asarray(f["pts"], dtype=np.float32)
            stored = tuple(int(v) for v in f["image_size"]) if "image_size" in f.files else None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: cannot read keypoint labels ({e})") from None
    if image_size is not None and stored is not None and tuple(int(v) for v in image_size) != stored:
        raise ValueError(f"{path}: labels were exported for {stored[0]}x{stored[1]} (H x W) images but the "
                         f"dataset yields {int(image_size[0])}x{int(image_size[1])}; set "
                         f"data.preprocessing.resize to [{stored[0]}, {stored[1]}] or re-export the labels")
    if pts.size == 0:
        return torch.zeros(0, 2, dtype=torch.float32)
    if pts.ndim != 2 or pts.shape[1] not in (2, 3):
        raise ValueError(f"{path}: 'pts' must be N x 3 (x, y, score) or N x 2, got shape {pts.shape}")
    return torch.from_numpy(np.ascontiguousarray(pts[:, :2]))
