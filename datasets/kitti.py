"""KITTI frames, from the raw KITTI layout or the SfMLearner-style sequence folders.

``<root>`` is ``data.root`` or ``DATA_PATH/KITTI``. A *sequence* is one camera of one drive,
named ``<date>_drive_<NNNN>_sync_<CC>`` (``CC`` = 02 left colour, 03 right colour). Its frames are
found in either layout:

* SfMLearner style: ``<root>/<sequence>/*.jpg`` (plus ``cam.txt`` etc., ignored);
* raw KITTI: ``<root>/<date>/<date>_drive_<NNNN>_sync/image_<CC>/data/*.png`` (the date level may
  be left out).

Which sequences make a split: the lines of ``<split dir>/<split>.txt`` (``train.txt`` /
``val.txt``; split ``test`` reads ``val.txt``), where ``<split dir>`` is ``data.root_split_txt``
or ``<root>``; blank lines and ``#`` comments are ignored. Without that file, every sequence under
``<root>`` is used for both splits: SfMLearner-style folders that hold images, and the left
colour camera (``image_02``) of every raw drive.

Item names are ``<sequence>/<frame stem>``, e.g. ``2011_09_26_drive_0001_sync_02/0000000000``:
the same in both layouts, so exported labels are ``<labels>/<split>/<sequence>/<frame>.npz``.
Items: see :mod:`datasets.image_list`.
"""
from __future__ import annotations

import re
from pathlib import Path

from datasets.image_list import ImageList, is_image_file
from settings import data_path

SPLIT_FILES = {"train": "train", "val": "val", "test": "val"}
SEQUENCE_RE = re.compile(r"^(?P<date>\d{4}_\d{2}_\d{2})_drive_(?P<drive>\d{4})_sync_(?P<cam>\d{2})$")
RAW_DRIVE_RE = re.compile(r"^(?P<date>\d{4}_\d{2}_\d{2})_drive_(?P<drive>\d{4})_sync$")


def kitti_root(data_config: dict) -> Path:
    root = data_config["root"]
    return Path(root).expanduser() if root else data_path() / "KITTI"


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def sequence_folder(root: Path, sequence: str) -> Path:
    """The folder holding the frames of ``sequence`` in either layout."""
    tried = [root / sequence]
    if tried[0].is_dir():
        return tried[0]
    m = SEQUENCE_RE.match(sequence)
    if m:
        drive = f"{m['date']}_drive_{m['drive']}_sync"
        for candidate in (root / m["date"] / drive / f"image_{m['cam']}" / "data",
                          root / drive / f"image_{m['cam']}" / "data"):
            tried.append(candidate)
            if candidate.is_dir():
                return candidate
    if len(tried) == 1:
        raise FileNotFoundError(f"{tried[0]}: KITTI sequence folder not found (and {sequence!r} is not a "
                                f"<date>_drive_<NNNN>_sync_<CC> name to look up in the raw layout)")
    others = ", ".join(str(t) for t in tried[1:])
    raise FileNotFoundError(f"{tried[0]}: KITTI sequence {sequence!r} not found (also looked in {others})")


def discover_sequences(root: Path) -> list[tuple[str, Path]]:
    """Every sequence under ``root`` (no split file): SfMLearner folders and raw ``image_02``."""
    found: dict[str, Path] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if _images_in(sub):
            found[sub.name] = sub
    raw_drives = [d for d in root.glob("*/*_sync") if RAW_DRIVE_RE.match(d.name)]
    raw_drives += [d for d in root.glob("*_sync") if RAW_DRIVE_RE.match(d.name)]
    for drive in sorted(raw_drives):
        data = drive / "image_02" / "data"
        if data.is_dir():
            found.setdefault(f"{drive.name}_02", data)
    return sorted(found.items())


class Kitti(ImageList):
    def __init__(self, config: dict, split: str):
        data = config["data"]
        root = kitti_root(data)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: KITTI folder not found (data.root or DATA_PATH/KITTI)")
        split_dir = Path(data["root_split_txt"]).expanduser() if data["root_split_txt"] else root
        s = SPLIT_FILES[split]
        split_file = split_dir / f"{s}.txt"
        if split_file.is_file():
            lines = split_file.read_text(encoding="utf-8").splitlines()
            names = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
            if not names:
                raise ValueError(f"{split_file}: lists no sequences")
            sequences = [(n, sequence_folder(root, n)) for n in names]
        elif data["root_split_txt"]:
            raise FileNotFoundError(f"{split_file}: KITTI split file not found (data.root_split_txt)")
        else:
            sequences = discover_sequences(root)
            if not sequences:
                raise FileNotFoundError(f"{root}: no KITTI sequences (expected <sequence>/*.jpg folders or "
                                        f"<date>/<date>_drive_NNNN_sync/image_02/data/*.png)")
        paths, names = [], []
        for seq, folder in sequences:
            frames = _images_in(folder)
            if not frames:
                raise FileNotFoundError(f"{folder}: no images in KITTI sequence {seq!r}")
            paths += frames
            names += [f"{seq}/{p.stem}" for p in frames]
        self.sequences = [seq for seq, _ in sequences]
        super().__init__(config, s, paths, names, f"kitti {split}")
