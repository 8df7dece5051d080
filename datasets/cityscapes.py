"""Cityscapes with fine labels: ``<root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` and
``<root>/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png`` (``<root>`` = ``data.root`` or
``DATA_PATH/Cityscapes``; split train | val | test are the folder names).

Item names are the file stems without the suffix, e.g. ``frankfurt_000000_000294`` (unique across
cities); exported keypoint labels are read from ``<data.labels>/<split>/<name>.npz``.
When ``gtFine/<split>`` does not exist the items carry no ``seg``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from datasets.segmentation_base import SegmentationDataset, read_label_png
from settings import data_path

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


class Cityscapes(SegmentationDataset):
    def __init__(self, config: dict, split: str):
        super().__init__(config, split)
        root = config["data"]["root"]
        self.root = Path(root).expanduser() if root else data_path() / "Cityscapes"
        image_dir = self.root / "leftImg8bit" / split
        if not image_dir.is_dir():
            raise FileNotFoundError(f"{image_dir}: Cityscapes images not found (expected "
                                    f"leftImg8bit/{split}/<city>/*{IMAGE_SUFFIX} under data.root "
                                    f"or DATA_PATH/Cityscapes)")
        self.image_paths = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
        if not self.image_paths:
            raise FileNotFoundError(f"{image_dir}: no <city>/*{IMAGE_SUFFIX} images")
        self.names = [p.name[: -len(IMAGE_SUFFIX)] for p in self.image_paths]
        label_dir = self.root / "gtFine" / split
        self.label_paths: list[Path] | None = None
        if label_dir.is_dir():
            self.label_paths = [label_dir / p.parent.name / f"{n}{LABEL_SUFFIX}"
                                for p, n in zip(self.image_paths, self.names)]
            missing = [p for p in self.label_paths if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"{missing[0]}: label file not found "
                                        f"({len(missing)} of {len(self.label_paths)} missing in {label_dir})")

    def load_cs34(self, index: int) -> np.ndarray | None:
        if self.label_paths is None:
            return None
        return read_label_png(self.label_paths[index])
