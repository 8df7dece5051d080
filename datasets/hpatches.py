"""HPatches image pairs for detector / descriptor evaluation.

Layout (the ``hpatches-sequences-release`` archive, extracted as ``DATA_PATH/HPatches``)::

    <root>/i_<name>/1.ppm .. 6.ppm, H_1_2 .. H_1_6     illumination changes (H = identity)
    <root>/v_<name>/1.ppm .. 6.ppm, H_1_2 .. H_1_6     viewpoint changes

``H_1_k`` is a text file of three rows of three numbers: the homography mapping pixel
coordinates of the original image 1 into the original image k. Each sequence gives the pairs
(1, k) for every ``k.ppm`` (k >= 2) it holds, so sequences with fewer images give fewer pairs.

Config keys read: ``data.root`` (null = ``DATA_PATH/HPatches``; ``embedded`` = the HPatches-style
set built from scikit-image's photographs, see :mod:`datasets.embedded_hpatches`),
``data.alteration`` (all | i | v), ``data.preprocessing.resize`` ([H, W] or null) and
``data.preprocessing.aspect_crop``.

Preprocessing of each image (both images of a pair, each with its own original size):

* ``resize: [H, W]`` and ``aspect_crop: true`` (default): crop from the top-left corner to the
  aspect ratio of [H, W] (rows/columns beyond ``floor(H / s)`` x ``floor(W / s)``, with
  ``s = max(H / h, W / w)``, are dropped), then resize to [H, W] (OpenCV ``INTER_AREA``);
  this is the reference implementation's protocol and stretches nothing;
* ``resize: [H, W]`` and ``aspect_crop: false``: resize (stretch) to [H, W];
* ``resize: null``: original size, cropped at the bottom/right to multiples of 8 (the network
  needs them).

The homography is then conjugated exactly: ``H' = T_k @ H_1_k @ T_1^-1`` where ``T`` takes
original pixel coordinates to those of the preprocessed image (pixel-centre convention).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

import settings
from utils.geometry import conjugate_homography, crop_matrix, resize_matrix
from utils.io import read_image_gray

IMAGE_EXTENSIONS = (".ppm", ".pgm", ".png", ".jpg", ".jpeg")
EMBEDDED = "embedded"
DOWNLOAD_HINT = ("download http://icvl.ee.ic.ac.uk/vbalnt/hpatches/hpatches-sequences-release.tar.gz and "
                 "extract it as DATA_PATH/HPatches (or set data.root to its folder), or set data.root: embedded "
                 "to use the built-in HPatches-style set")


def read_homography_file(path: str | Path) -> np.ndarray:
    """Read an ``H_1_k`` file: 3 rows of 3 numbers -> float64 3x3, checked to be invertible."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: homography file not found")
    try:
        H = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise ValueError(f"{path}: expected a 3x3 homography (3 rows of 3 numbers): {e}") from None
    if H.shape != (3, 3):
        raise ValueError(f"{path}: expected a 3x3 homography (3 rows of 3 numbers), got shape {H.shape}")
    if not np.isfinite(H).all():
        raise ValueError(f"{path}: the homography holds non-finite numbers")
    if np.linalg.matrix_rank(H) < 3 or abs(H[2, 2]) < 1e-12 * np.abs(H).max():
        # H[2,2] = 0 would send the origin to infinity; HPatches files are normalised to 1
        raise ValueError(f"{path}: the homography is singular or not normalised (H[2,2] = {H[2, 2]})")
    return H


def preprocess_transform(size, resize, aspect_crop: bool = True):
    """Crop and output size for one image, and the matrix taking its pixels to the output's.

    Args:
        size: (h, w) of the original image; resize: (H, W) or None; aspect_crop: see module doc.
    Returns:
        ``(crop_hw, out_hw, T)``: the top-left crop (h', w') kept, the final size and the float64
        3x3 ``T`` with ``p_out ~ T @ p_original``.
    """
    h, w = int(size[0]), int(size[1])
    if resize is None:
        ch, cw = (h // 8) * 8, (w // 8) * 8
        if ch == 0 or cw == 0:
            raise ValueError(f"image of size {h}x{w} is smaller than 8 pixels; cannot crop to multiples of 8")
        return (ch, cw), (ch, cw), crop_matrix(0, 0)
    th, tw = int(resize[0]), int(resize[1])
    if aspect_crop:
        s = max(th / h, tw / w)
        ch, cw = min(h, max(1, math.floor(th / s + 1e-9))), min(w, max(1, math.floor(tw / s + 1e-9)))
    else:
        ch, cw = h, w
    T = resize_matrix((ch, cw), (th, tw)) @ crop_matrix(0, 0)
    return (ch, cw), (th, tw), T


def load_preprocessed(path: Path, resize, aspect_crop: bool = True):
    """Read ``path`` as gray float32 and preprocess it; returns ``(image HxW, T 3x3 float64)``."""
    img = read_image_gray(path)
    (ch, cw), (th, tw), T = preprocess_transform(img.shape, resize, aspect_crop)
    img = img[:ch, :cw]
    if (ch, cw) != (th, tw):
        img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img, dtype=np.float32), T


def resolve_root(root) -> Path:
    """``data.root`` -> the folder to read (building the embedded set if asked for)."""
    if root == EMBEDDED:
        from datasets.embedded_hpatches import ensure_embedded_hpatches

        return ensure_embedded_hpatches()
    if root in (None, ""):
        path = settings.data_path() / "HPatches"
    else:
        path = Path(str(root)).expanduser()
        if not path.is_absolute() and not path.exists() and (settings.data_path() / path).exists():
            path = settings.data_path() / path
    if not path.is_dir():
        raise FileNotFoundError(f"HPatches folder not found at {path}: {DOWNLOAD_HINT}")
    return path


def _image_file(folder: Path, index: int) -> Path | None:
    for ext in IMAGE_EXTENSIONS:
        p = folder / f"{index}{ext}"
        if p.is_file():
            return p
    return None


def list_pairs(root: Path, alteration: str = "all") -> list[dict]:
    """All pairs (1, k) of the sequences under ``root``, sorted by sequence then k.

    Returns dicts ``{name, pair_index, image_path, warped_path, homography_path}``.
    """
    if alteration not in ("all", "i", "v"):
        raise ValueError(f"data.alteration: expected all, i or v, got {alteration!r}")
    sequences = sorted(p for p in root.iterdir() if p.is_dir() and re.match(r"^[iv]_", p.name))
    if alteration != "all":
        sequences = [p for p in sequences if p.name.startswith(alteration + "_")]
    if not sequences:
        raise FileNotFoundError(f"{root}: no HPatches sequences (folders i_* / v_*) for alteration "
                                f"'{alteration}': {DOWNLOAD_HINT}")
    pairs = []
    for seq in sequences:
        first = _image_file(seq, 1)
        if first is None:
            raise FileNotFoundError(f"{seq}: sequence has no reference image 1.ppm")
        indices = sorted(int(m.group(1)) for p in seq.iterdir()
                         if (m := re.match(r"^(\d+)\.[A-Za-z]+$", p.name)) and p.suffix.lower() in IMAGE_EXTENSIONS)
        for k in dict.fromkeys(i for i in indices if i >= 2):
            pairs.append({"name": seq.name, "pair_index": k, "image_path": first,
                          "warped_path": _image_file(seq, k), "homography_path": seq / f"H_1_{k}"})
    return pairs


class HPatches(Dataset):
    """HPatches pairs ``(1, k)``; ``split`` is ignored (every pair is a test pair).

    Items: ``image`` / ``warped_image`` ``1 x H x W`` float32 in [0, 1], ``homography`` 3x3
    float64 tensor mapping ``image`` pixels to ``warped_image`` pixels (both preprocessed),
    ``name`` (sequence folder name) and ``pair_index`` (k).
    """

    provides_pairs = True  # items are pairs already (see datasets.get_dataset)

    def __init__(self, config: dict, split: str = "test"):
        data = config["data"]
        self.root = resolve_root(data["root"])
        prep = data["preprocessing"]
        resize = prep["resize"]
        if resize is not None:
            if not (isinstance(resize, (list, tuple)) and len(resize) == 2 and all(int(v) > 0 for v in resize)):
                raise ValueError(f"data.preprocessing.resize: expected [H, W] or null, got {resize!r}")
            resize = (int(resize[0]), int(resize[1]))
        self.resize = resize
        self.aspect_crop = bool(prep["aspect_crop"])
        self.alteration = data["alteration"]
        self.pairs = list_pairs(self.root, self.alteration)
        # read every homography now, so that a bad file fails before any work is done
        self.homographies = [read_homography_file(p["homography_path"]) for p in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        image, T1 = load_preprocessed(pair["image_path"], self.resize, self.aspect_crop)
        warped, Tk = load_preprocessed(pair["warped_path"], self.resize, self.aspect_crop)
        H = conjugate_homography(torch.from_numpy(self.homographies[index]), T1, Tk)
        return {
            "image": torch.from_numpy(image)[None],
            "warped_image": torch.from_numpy(warped)[None],
            "homography": H,
            "name": pair["name"],
            "pair_index": pair["pair_index"],
        }
