"""Any folder of images ("my own images"): every image file under ``data.root``, recursively.

Image files: ``.jpg .jpeg .png .ppm .pgm .bmp .tif .tiff .webp`` in any letter case; hidden files
and folders (names starting with ``.``) are skipped. Order: sorted by relative path.

Splits: ``train``, ``val`` and ``test`` all mean *every image*, unless ``data.root_split_txt``
is set: then ``<root_split_txt>/<split>.txt`` lists the relative paths (image files or
sub-folders, one per line; blank lines and ``#`` comments ignored) that make the split.
Exported labels are read from ``<data.labels>/<split>/`` (``val/`` for split ``test``).

Item names are the relative path without the extension, with ``/`` separators
(``freiburg/1341847980.722988``), so exported labels mirror the folder tree:
``<labels>/<split>/freiburg/1341847980.722988.npz``. When two files differ only by extension
(``a.jpg`` and ``a.png``) both keep their extension in the name (``a.jpg``, ``a.png``) so that
names never collide. Items: see :mod:`datasets.image_list`.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from datasets.image_list import ImageList, is_image_file


def list_images(root: Path) -> list[Path]:
    """Every image file under ``root`` (recursive, hidden entries skipped), sorted by relative path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            p = Path(dirpath) / f
            if is_image_file(p):
                found.append(p)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def item_names(root: Path, paths: list[Path]) -> list[str]:
    """Relative stems (``sub/dir/file``), with the extension kept where stems would collide."""
    rel = [p.relative_to(root) for p in paths]
    stems = [r.with_suffix("").as_posix() for r in rel]
    counts = Counter(stems)
    return [s if counts[s] == 1 else r.as_posix() for s, r in zip(stems, rel)]


def _split_selection(root: Path, split_file: Path, images: list[Path]) -> list[Path]:
    lines = split_file.read_text(encoding="utf-8").splitlines()
    entries = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if not entries:
        raise ValueError(f"{split_file}: lists no images or folders")
    chosen: set[Path] = set()
    for entry in entries:
        target = root / entry
        if target.is_dir():
            hits = [p for p in images if target in p.parents]
        elif target.is_file():
            hits = [p for p in images if p == target]
        else:
            raise FileNotFoundError(f"{target}: listed in {split_file} but not found under data.root")
        if not hits:
            raise FileNotFoundError(f"{target}: listed in {split_file} but holds no image files")
        chosen.update(hits)
    return [p for p in images if p in chosen]


class ImageFolder(ImageList):
    def __init__(self, config: dict, split: str):
        data = config["data"]
        if not data["root"]:
            raise ValueError("data.root: the image folder to use is not set (e.g. --set data.root=/path/to/images)")
        root = Path(data["root"]).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: image folder (data.root) not found")
        images = list_images(root)
        if not images:
            raise FileNotFoundError(f"{root}: no image files found (looked for .jpg .png .ppm .pgm .bmp .tif .webp)")
        names = item_names(root, images)
        if data["root_split_txt"]:
            split_file = Path(data["root_split_txt"]).expanduser() / f"{split}.txt"
            if not split_file.is_file():
                raise FileNotFoundError(f"{split_file}: split file not found (data.root_split_txt)")
            keep = set(_split_selection(root, split_file, images))
            names = [n for n, p in zip(names, images) if p in keep]
            images = [p for p in images if p in keep]
        self.root = root
        super().__init__(config, split if split != "test" else "val", images, names, f"image_folder {split}")
