"""Exported keypoint labels (``data.labels``): ``<labels>/<split>/<name>.npz`` holding ``pts``.

``pts`` is ``N x 3`` (x, y, score) -- or ``N x 2`` -- in the pixel frame of the image the labels
were exported from, which must be the dataset's resized image (same ``data.preprocessing.resize``).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from settings import exper_path


def keypoint_labels_dir(labels: str | None) -> Path | None:
    """``data.labels`` as a folder: absolute, or relative to EXPER_PATH; None when unset."""
    if not labels:
        return None
    path = Path(labels).expanduser()
    path = path if path.is_absolute() else exper_path() / path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: keypoint label folder (data.labels) not found")
    return path


def load_keypoint_labels(labels_dir: Path, split: str, name: str) -> torch.Tensor:
    """The labels of one image as ``N x 2`` float32 (x, y)."""
    path = Path(labels_dir) / split / f"{name}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: keypoint labels not found (data.labels: "
                                f"expected <labels>/{split}/<name>.npz)")
    try:
        with np.load(path) as f:
            if "pts" not in f.files:
                raise ValueError(f"{path}: no 'pts' array (found {', '.join(f.files) or 'none'})")
            pts = np.asarray(f["pts"], dtype=np.float32)
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: cannot read keypoint labels ({e})") from None
    if pts.size == 0:
        return torch.zeros(0, 2, dtype=torch.float32)
    if pts.ndim != 2 or pts.shape[1] not in (2, 3):
        raise ValueError(f"{path}: 'pts' must be N x 3 (x, y, score) or N x 2, got shape {pts.shape}")
    return torch.from_numpy(np.ascontiguousarray(pts[:, :2]))
