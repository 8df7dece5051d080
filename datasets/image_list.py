"""What the plain image datasets (coco, kitti, image_folder) share: a list of image files with
names, gray reading and resizing, and the exported keypoint labels of ``data.labels``.

Items: ``image`` ``1 x H x W`` float32 in [0, 1], resized to ``data.preprocessing.resize``
(area interpolation when shrinking, bilinear when enlarging); ``name``; and ``keypoints``
``N x 2`` float32 (x, y) read from ``<data.labels>/<split>/<name>.npz`` when ``data.labels`` is
set. With labels, only the images that have a label file are listed (a warning says how many
were left out; none at all is an error).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.keypoint_labels import keypoint_labels_dir, label_path, load_keypoint_labels
from utils.io import read_image_gray

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")


def resize_setting(data_config: dict) -> tuple[int, int] | None:
    """``data.preprocessing.resize`` as ``(H, W)``, or None (keep each file's size)."""
    size = data_config["preprocessing"]["resize"]
    if size is None:
        return None
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ValueError(f"data.preprocessing.resize: expected [H, W] positive integers or null, got {size!r}")
    return int(size[0]), int(size[1])


def resize_gray(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``H x W`` float32 -> ``size`` (H, W); area averaging when shrinking avoids aliasing."""
    if size is None or image.shape[:2] == tuple(size):
        return image
    shrink = size[0] * size[1] < image.shape[0] * image.shape[1]
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


class ImageList(Dataset):
    """Images given by path, each with a unique ``name`` (a relative stem, may contain ``/``).

    Args:
        config: the whole config (reads ``data.preprocessing.resize`` and ``data.labels``).
        label_split: the folder of ``data.labels`` to read (``train`` or ``val``).
        paths, names: the image files and their item names, in the dataset's order.
        what: how error messages call the dataset (e.g. ``coco train``).
    """

    def __init__(self, config: dict, label_split: str, paths: list[Path], names: list[str], what: str):
        data = config["data"]
        if len(set(names)) != len(names):
            raise ValueError(f"{what}: item names are not unique")
        self.size = resize_setting(data)
        self.label_split = label_split
        self.labels_dir = keypoint_labels_dir(data["labels"])
        if self.labels_dir is not None:
            keep = [i for i, n in enumerate(names) if label_path(self.labels_dir, label_split, n).is_file()]
            if not keep:
                raise FileNotFoundError(f"{self.labels_dir / label_split}: no keypoint labels for any of the "
                                        f"{len(names)} images of {what} (data.labels)")
            if len(keep) < len(names):
                warnings.warn(f"{what}: {len(names) - len(keep)} of {len(names)} images have no keypoint labels "
                              f"in {self.labels_dir / label_split} and are left out", stacklevel=3)
            paths = [paths[i] for i in keep]
            names = [names[i] for i in keep]
        self.image_paths = [Path(p) for p in paths]
        self.names = list(names)

    def __len__(self) -> int:
        return len(self.image_paths)

    def read_image(self, index: int) -> torch.Tensor:
        """The ``1 x H x W`` float32 image of item ``index`` (raises ``utils.io.ImageReadError``)."""
        image = resize_gray(read_image_gray(self.image_paths[index]), self.size)
        return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]

    def __getitem__(self, index: int) -> dict:
        image = self.read_image(index)
        item = {"image": image, "name": self.names[index]}
        if self.labels_dir is not None:
            item["keypoints"] = load_keypoint_labels(self.labels_dir, self.label_split, self.names[index],
                                                     image_size=tuple(image.shape[-2:]))
        return item
