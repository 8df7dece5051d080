"""What the segmentation datasets (cityscapes, coco_panoptic) share: resizing, label mapping,
exported keypoint labels, and the item contract of ``datasets/__init__.py``."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.keypoint_labels import keypoint_labels_dir, load_keypoint_labels
from utils.io import ImageReadError, read_image_gray
from utils.segmentation_labels import cs34_lut


def resize_setting(data_config: dict) -> tuple[int, int] | None:
    """``data.preprocessing.resize`` as ``(H, W)``, or None (keep the file's size)."""
    size = data_config["preprocessing"]["resize"]
    if size is None:
        return None
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"data.preprocessing.resize: expected [H, W] positive integers or null, got {size!r}")
    return int(size[0]), int(size[1])


def resize_image(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``H x W`` float32 -> ``size`` (H, W) by bilinear interpolation."""
    if size is None or image.shape[:2] == tuple(size):
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def resize_labels(mask: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``H x W`` uint8 label ids -> ``size`` (H, W) by nearest neighbour (pixel-centre exact,
    so every output value is one of the input's)."""
    if size is None or mask.shape[:2] == tuple(size):
        return mask
    return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST_EXACT)


def read_label_png(path: Path) -> np.ndarray:
    """A single-channel 8-bit label image (Cityscapes labelIds, converted cs34 masks) as uint8."""
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if Path(path).is_file() else None
    if mask is None:
        raise ImageReadError(f"{path}: label image not found or not readable")
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"{path}: expected a single-channel uint8 label image, got {mask.dtype} "
                         f"with shape {mask.shape}")
    return mask


class SegmentationDataset(Dataset):
    """Images with optional cs34 label masks.

    Subclasses fill ``self.image_paths`` and ``self.names`` and implement :meth:`load_cs34`
    (the cs34 labelId mask of an item as ``H x W`` uint8, or None when the split has no labels).

    Items: ``image`` ``1 x H x W`` float32 in [0, 1] (bilinear resize to
    ``data.preprocessing.resize``), ``seg`` ``H x W`` int64 in the configured label set with
    ``data.segmentation.ignore_index`` for ignored pixels (nearest resize), ``name``, and
    ``keypoints`` ``N x 2`` float32 when ``data.labels`` is set.
    """

    def __init__(self, config: dict, split: str):
        data = config["data"]
        seg = data["segmentation"]
        self.split = split
        self.size = resize_setting(data)
        self.label_set = seg["label_set"]
        self.ignore_index = int(seg["ignore_index"])
        self.lut = cs34_lut(self.label_set, self.ignore_index, bool(seg["ignore_void"]))
        self.labels_dir = keypoint_labels_dir(data["labels"])
        self.image_paths: list[Path] = []
        self.names: list[str] = []

    def load_cs34(self, index: int) -> np.ndarray | None:
        raise NotImplementedError("each segmentation dataset reads its own masks")

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> dict:
        path = self.image_paths[index]
        image = read_image_gray(path)
        item = {"image": torch.from_numpy(np.ascontiguousarray(resize_image(image, self.size)))[None]}
        mask = self.load_cs34(index)
        if mask is not None:
            if mask.shape != image.shape:
                raise ValueError(f"{path}: label mask is {mask.shape[1]}x{mask.shape[0]} but the "
                                 f"image is {image.shape[1]}x{image.shape[0]}")
            item["seg"] = torch.from_numpy(self.lut[resize_labels(mask, self.size)])
        if self.labels_dir is not None:
            item["keypoints"] = load_keypoint_labels(self.labels_dir, self.split, self.names[index])
        item["name"] = self.names[index]
        return item
