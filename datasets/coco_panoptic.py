"""COCO 2017 images with panoptic labels turned into cs34 (then the configured label set).

Layout under ``<root>`` (``data.root`` or ``DATA_PATH/COCO``); ``<s>`` is ``train`` or ``val``
(split ``test`` reads ``val``: COCO's test images have no panoptic labels):

* images ``<s>2017/*.jpg``; item names are the file stems (``000000142238``);
* ``data.load_panoptic: true`` (decoded on the fly): the PNG folder ``panoptic_<s>2017/`` and
  ``panoptic_<s>2017.json``, each looked for first under ``annotations/`` (the official layout)
  and then directly under ``<root>``;
* with ``data.use_cs34_masks: true`` as well: gray masks ``panoptic_cs34_<s>2017/<stem>.png``
  (from ``utils/coco_panoptic_to_cs34.py``), looked for under ``<root>`` then ``annotations/``;
  no JSON is needed.

With labels, only images that have them are listed (a warning says how many were left out).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from datasets.segmentation_base import SegmentationDataset, read_label_png
from settings import data_path
from utils.io import read_image_color
from utils.segmentation_labels import coco_category_lut, panoptic_to_cs34, read_panoptic_annotations

SPLIT_FOLDERS = {"train": "train", "val": "val", "test": "val"}


def _first_existing(candidates: list[Path], what: str, is_dir: bool) -> Path:
    for c in candidates:
        if (c.is_dir() if is_dir else c.is_file()):
            return c
    zips = [c.with_suffix(".zip") for c in candidates if is_dir and c.with_suffix(".zip").is_file()]
    hint = f" (unzip {zips[0]})" if zips else ""
    raise FileNotFoundError(f"{candidates[0]}: {what} not found (also looked in "
                            f"{', '.join(str(c) for c in candidates[1:])}){hint}")


class CocoPanoptic(SegmentationDataset):
    def __init__(self, config: dict, split: str):
        super().__init__(config, split)
        data = config["data"]
        root = data["root"]
        self.root = Path(root).expanduser() if root else data_path() / "COCO"
        s = SPLIT_FOLDERS[split]
        image_dir = self.root / f"{s}2017"
        if not image_dir.is_dir():
            raise FileNotFoundError(f"{image_dir}: COCO images not found (expected {s}2017/*.jpg "
                                    f"under data.root or DATA_PATH/COCO)")
        images = sorted(image_dir.glob("*.jpg"))
        if not images:
            raise FileNotFoundError(f"{image_dir}: no .jpg images")

        self.mode = None  # None (images only) | "panoptic" | "cs34"
        if data["use_cs34_masks"] and not data["load_panoptic"]:
            raise ValueError("data.use_cs34_masks: true needs data.load_panoptic: true as well")
        if data["load_panoptic"]:
            ann = self.root / "annotations"
            if data["use_cs34_masks"]:
                self.mode = "cs34"
                self.mask_dir = _first_existing([self.root / f"panoptic_cs34_{s}2017", ann / f"panoptic_cs34_{s}2017"],
                                                "cs34 mask folder (data.use_cs34_masks)", is_dir=True)
                have = {p.stem for p in self.mask_dir.glob("*.png")}
            else:
                self.mode = "panoptic"
                self.png_dir = _first_existing([ann / f"panoptic_{s}2017", self.root / f"panoptic_{s}2017"],
                                               "panoptic PNG folder", is_dir=True)
                json_path = _first_existing([ann / f"panoptic_{s}2017.json", self.root / f"panoptic_{s}2017.json"],
                                            "panoptic JSON", is_dir=False)
                segments, categories = read_panoptic_annotations(json_path)
                if not categories:
                    raise ValueError(f"{json_path}: has no 'categories' list")
                self.category_lut = coco_category_lut(categories)
                self.segments = {Path(k).stem: v for k, v in segments.items()}
                have = set(self.segments)
            labelled = [p for p in images if p.stem in have]
            if not labelled:
                where = self.mask_dir if self.mode == "cs34" else json_path
                raise FileNotFoundError(f"{where}: no labels for any image of {image_dir}")
            if len(labelled) < len(images):
                warnings.warn(f"coco_panoptic {split}: {len(images) - len(labelled)} of {len(images)} images "
                              f"in {image_dir} have no panoptic labels and are left out", stacklevel=2)
            images = labelled
        self.image_paths = images
        self.names = [p.stem for p in images]

    def load_cs34(self, index: int) -> np.ndarray | None:
        name = self.names[index]
        if self.mode == "cs34":
            return read_label_png(self.mask_dir / f"{name}.png")
        if self.mode == "panoptic":
            rgb = read_image_color(self.png_dir / f"{name}.png")
            return panoptic_to_cs34(rgb, self.segments[name], self.category_lut)
        return None
