"""MS-COCO 2017 images (no annotations): ``<root>/train2017/*.jpg`` and ``<root>/val2017/*.jpg``.

``<root>`` is ``data.root`` or ``DATA_PATH/COCO``. Split ``test`` reads ``val2017`` (COCO's test
images are not used). Item names are the file stems (``000000142238``), so exported labels are
``<labels>/<split>/000000142238.npz``. Items: see :mod:`datasets.image_list`.
"""
from __future__ import annotations

from pathlib import Path

from datasets.image_list import ImageList
from settings import data_path

SPLIT_FOLDERS = {"train": "train", "val": "val", "test": "val"}


def coco_root(data_config: dict) -> Path:
    root = data_config["root"]
    return Path(root).expanduser() if root else data_path() / "COCO"


class Coco(ImageList):
    def __init__(self, config: dict, split: str):
        s = SPLIT_FOLDERS[split]
        image_dir = coco_root(config["data"]) / f"{s}2017"
        if not image_dir.is_dir():
            raise FileNotFoundError(f"{image_dir}: COCO images not found (expected {s}2017/*.jpg under "
                                    f"data.root or DATA_PATH/COCO)")
        paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file())
        if not paths:
            raise FileNotFoundError(f"{image_dir}: no .jpg images")
        super().__init__(config, s, paths, [p.stem for p in paths], f"coco {split}")
