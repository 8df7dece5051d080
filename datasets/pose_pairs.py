"""Image pairs with intrinsics and a ground-truth relative pose (relative pose evaluation).

``data.pairs`` names the pair list and ``data.pairs_format`` its layout; ``data.root`` holds the
images (relative paths are read under it). Three layouts, as their authors distribute them:

* ``superglue``: a text file, one pair per line,
  ``name0 name1 rot0 rot1 K0 (9 values, row-major) K1 (9) T_0to1 (16, row-major 4 x 4)``,
  the intrinsics for the images as stored (ScanNet-1500 and SuperGlue's sample pairs). Only
  ``rot0 = rot1 = 0`` is supported (a non-zero EXIF rotation is an error naming the line).
* ``loftr_scannet``: LoFTR's ``scannet_test_1500/test.npz`` (``name``: pairs x 4 integers scene,
  sub-scene, frame 0, frame 1; ``rel_pose``: pairs x 12, the 3 x 4 pose 0 -> 1, row-major) with
  ``intrinsics.npz`` beside it (3 x 3 per ``sceneXXXX_YY``, for 640 x 480 images, whatever the
  stored size, as LoFTR uses them). Images: ``<root>/sceneXXXX_YY/color/<frame>.jpg``.
* ``loftr_megadepth``: LoFTR's ``megadepth_test_1500.txt`` (one scene-info name a line, each
  ``<name>.npz`` beside it) or a single scene-info ``.npz``. A scene info is a pickled dict with
  ``image_paths``, ``intrinsics`` (3 x 3, for the stored image), ``poses`` (4 x 4 world-to-camera)
  per image index and ``pair_infos`` (``((i, j), overlap, central_matches)``);
  ``T_0to1 = poses[j] @ inv(poses[i])``. Images: ``<root>/<image_paths[i]>``.

Resizing (the protocols': ScanNet 640 x 480, MegaDepth longer side 1200): ``data.preprocessing.resize``
``[H, W]`` stretches every image to that size; ``data.preprocessing.resize_max`` scales the longer
side to that length; the result (or the stored size, with neither) is brought down to multiples
of 8 as the network needs (LoFTR does the same). The intrinsics are scaled with the image
(:func:`utils.geometry.scale_intrinsics`).

Items: ``image`` / ``warped_image`` ``1 x H x W`` float32 in [0, 1], ``K`` / ``warped_K`` (3 x 3
float64, for the resized images), ``T_0to1`` (4 x 4 float64), ``name`` (``"<name0> <name1>"``).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

import settings
from utils.geometry import scale_intrinsics
from utils.io import read_image_gray

FORMATS = ("superglue", "loftr_scannet", "loftr_megadepth")
SCANNET_INTRINSICS_SIZE = (480, 640)  # (H, W) that LoFTR's ScanNet intrinsics describe


def _check_pose(T: np.ndarray, where: str) -> np.ndarray:
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise ValueError(f"{where}: expected a finite 4 x 4 relative pose, got shape {T.shape}")
    if np.abs(T[3] - [0, 0, 0, 1]).max() > 1e-6 or abs(np.linalg.det(T[:3, :3]) - 1.0) > 1e-2:
        raise ValueError(f"{where}: not a rigid transform (last row {T[3].tolist()}, det R = "
                         f"{np.linalg.det(T[:3, :3]):.4f})")
    return T


def _check_K(K: np.ndarray, where: str) -> np.ndarray:
    if K.shape != (3, 3) or not np.isfinite(K).all() or not (K[0, 0] > 0 and K[1, 1] > 0):
        raise ValueError(f"{where}: expected 3 x 3 intrinsics with positive focal lengths, got {K.tolist()}")
    return K


def read_superglue_pairs(path: str | Path) -> list[dict]:
    """The SuperGlue pair-list text file -> ``[{name0, name1, K0, K1, T_0to1, K_size}]``.

    ``K_size`` None: the intrinsics describe the images as stored.
    """
    path = Path(path)
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{n}"
        if len(fields) != 38:
            raise ValueError(f"{where}: expected 38 fields (name0 name1 rot0 rot1 K0(9) K1(9) T_0to1(16)), "
                             f"got {len(fields)}")
        try:
            values = np.array(fields[2:], dtype=np.float64)
        except ValueError:
            raise ValueError(f"{where}: fields 3-38 must be numbers") from None
        if values[0] != 0 or values[1] != 0:
            raise ValueError(f"{where}: rot0/rot1 = {values[0]:g}/{values[1]:g}: rotated (EXIF) images are not "
                             f"supported; only pairs with rot0 = rot1 = 0")
        pairs.append({"name0": fields[0], "name1": fields[1],
                      "K0": _check_K(values[2:11].reshape(3, 3), f"{where} K0"),
                      "K1": _check_K(values[11:20].reshape(3, 3), f"{where} K1"),
                      "T_0to1": _check_pose(values[20:36].reshape(4, 4), f"{where} T_0to1"),
                      "K_size": None})
    if not pairs:
        raise ValueError(f"{path}: no pairs in the file")
    return pairs


def read_loftr_scannet(path: str | Path) -> list[dict]:
    """LoFTR's ScanNet-1500 ``test.npz`` (+ ``intrinsics.npz`` beside it) -> pair dicts."""
    path = Path(path)
    intrinsics_path = path.parent / "intrinsics.npz"
    if not intrinsics_path.is_file():
        raise FileNotFoundError(f"{intrinsics_path}: not found (loftr_scannet needs intrinsics.npz beside {path.name})")
    with np.load(path) as data:
        for key in ("name", "rel_pose"):
            if key not in data.files:
                raise ValueError(f"{path}: missing key '{key}' (has: {', '.join(data.files)})")
        names, rel = np.asarray(data["name"]), np.asarray(data["rel_pose"], dtype=np.float64)
    if names.ndim != 2 or names.shape[1] != 4 or rel.shape != (len(names), 12):
        raise ValueError(f"{path}: expected 'name' P x 4 and 'rel_pose' P x 12, got {names.shape} and {rel.shape}")
    with np.load(intrinsics_path) as data:
        intrinsics = {k: np.asarray(data[k], dtype=np.float64).reshape(3, 3) for k in data.files}
    pairs = []
    for i, ((scene, sub, f0, f1), r) in enumerate(zip(names.astype(np.int64), rel)):
        scene_name = f"scene{scene:04d}_{sub:02d}"
        if scene_name not in intrinsics:
            raise ValueError(f"{intrinsics_path}: no intrinsics for {scene_name} (pair {i} of {path})")
        K = _check_K(intrinsics[scene_name], f"{intrinsics_path}[{scene_name}]")
        T = np.eye(4)
        T[:3] = r.reshape(3, 4)
        pairs.append({"name0": f"{scene_name}/color/{f0}.jpg", "name1": f"{scene_name}/color/{f1}.jpg",
                      "K0": K, "K1": K, "T_0to1": _check_pose(T, f"{path} rel_pose[{i}]"),
                      "K_size": SCANNET_INTRINSICS_SIZE})
    return pairs


def _megadepth_scene(path: Path) -> list[dict]:
    try:
        info = np.load(path, allow_pickle=True)  # a pickled dict, as LoFTR writes it
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad file
        raise ValueError(f"{path}: not a readable MegaDepth scene info ({type(e).__name__}: {e})") from None
    if isinstance(info, np.lib.npyio.NpzFile):
        info.close()
        raise ValueError(f"{path}: expected a pickled dict (LoFTR scene info), got an npz archive")
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a pickled dict (LoFTR scene info), got {type(info).__name__}")
    missing = [k for k in ("image_paths", "intrinsics", "poses", "pair_infos") if k not in info]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)}")
    pairs = []
    for n, pair_info in enumerate(info["pair_infos"]):
        i, j = (int(v) for v in pair_info[0])
        where = f"{path} pair_infos[{n}]"
        if info["image_paths"][i] is None or info["image_paths"][j] is None:
            raise ValueError(f"{where}: image {i} or {j} has no image_paths entry")
        T = np.asarray(info["poses"][j], np.float64) @ np.linalg.inv(np.asarray(info["poses"][i], np.float64))
        pairs.append({"name0": str(info["image_paths"][i]), "name1": str(info["image_paths"][j]),
                      "K0": _check_K(np.asarray(info["intrinsics"][i], np.float64).reshape(3, 3), where),
                      "K1": _check_K(np.asarray(info["intrinsics"][j], np.float64).reshape(3, 3), where),
                      "T_0to1": _check_pose(T, where), "K_size": None})
    return pairs


def read_loftr_megadepth(path: str | Path) -> list[dict]:
    """LoFTR's ``megadepth_test_1500.txt`` (scene-info names) or one scene-info ``.npz`` -> pair dicts."""
    path = Path(path)
    if path.suffix == ".npz":
        return _megadepth_scene(path)
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{path}: no scene-info names in the file")
    pairs = []
    for name in names:
        scene = path.parent / f"{name}.npz"
        if not scene.is_file():
            raise FileNotFoundError(f"{scene}: scene info listed in {path} not found")
        pairs += _megadepth_scene(scene)
    return pairs


READERS = {"superglue": read_superglue_pairs, "loftr_scannet": read_loftr_scannet,
           "loftr_megadepth": read_loftr_megadepth}


def target_size(size, resize=None, resize_max=None) -> tuple[int, int]:
    """(H, W) an image of ``size`` is evaluated at: ``resize``, else the longer side scaled to
    ``resize_max``, else ``size``; each side then brought down to a multiple of 8."""
    h, w = int(size[0]), int(size[1])
    if resize is not None:
        h, w = int(resize[0]), int(resize[1])
    elif resize_max is not None:
        s = resize_max / max(h, w)
        h, w = int(round(h * s)), int(round(w * s))
    h8, w8 = (h // 8) * 8, (w // 8) * 8
    if h8 == 0 or w8 == 0:
        raise ValueError(f"image of {size[0]}x{size[1]} pixels resized to {h}x{w} is smaller than 8 pixels")
    return h8, w8


def _resolve(path, what: str) -> Path:
    p = Path(str(path)).expanduser()
    if not p.is_absolute() and not p.exists() and (settings.data_path() / p).exists():
        p = settings.data_path() / p
    if not p.exists():
        raise FileNotFoundError(f"{what}: {p} not found")
    return p


class PosePairs(Dataset):
    """Pairs of a pose pair list (module doc); ``split`` is ignored (every pair is a test pair)."""

    provides_pairs = True

    def __init__(self, config: dict, split: str = "test"):
        data = config["data"]
        if not data["pairs"]:
            raise ValueError("data.pairs: the pose_pairs dataset needs a pair list (SuperGlue text file, "
                             "LoFTR test.npz or megadepth_test_1500.txt)")
        fmt = data["pairs_format"]
        if fmt not in FORMATS:
            raise ValueError(f"data.pairs_format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
        if data["root"] in (None, ""):
            raise ValueError("data.root: the pose_pairs dataset needs the folder the pair list's images are in")
        self.root = _resolve(data["root"], "data.root")
        self.pairs_path = _resolve(data["pairs"], "data.pairs")
        prep = data["preprocessing"]
        self.resize, self.resize_max = prep["resize"], prep["resize_max"]
        if self.resize is not None and self.resize_max is not None:
            raise ValueError("data.preprocessing: set resize or resize_max, not both")
        if self.resize is not None and not (isinstance(self.resize, (list, tuple)) and len(self.resize) == 2
                                            and all(int(v) >= 8 for v in self.resize)):
            raise ValueError(f"data.preprocessing.resize: expected [H, W] or null, got {self.resize!r}")
        if self.resize_max is not None and not int(self.resize_max) >= 8:
            raise ValueError(f"data.preprocessing.resize_max: expected a length >= 8 or null, got {self.resize_max!r}")
        self.pairs = READERS[fmt](self.pairs_path)

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, name: str, K: np.ndarray, K_size) -> tuple[np.ndarray, np.ndarray]:
        path = self.root / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: image of the pair list {self.pairs_path} not found")
        img = read_image_gray(path)
        out = target_size(img.shape, self.resize, self.resize_max)
        K_new = scale_intrinsics(K, K_size or img.shape, out)
        if tuple(img.shape) != out:
            # INTER_AREA when shrinking (no aliasing), as the HPatches loader does
            interp = cv2.INTER_AREA if out[0] < img.shape[0] else cv2.INTER_LINEAR
            img = cv2.resize(img, (out[1], out[0]), interpolation=interp)
        return np.ascontiguousarray(img, dtype=np.float32), K_new

    def __getitem__(self, index: int) -> dict:
        p = self.pairs[index]
        image0, K0 = self._load(p["name0"], p["K0"], p["K_size"])
        image1, K1 = self._load(p["name1"], p["K1"], p["K_size"])
        return {
            "image": torch.from_numpy(image0)[None],
            "warped_image": torch.from_numpy(image1)[None],
            "K": torch.from_numpy(K0),
            "warped_K": torch.from_numpy(K1),
            "T_0to1": torch.from_numpy(np.asarray(p["T_0to1"], dtype=np.float64)),
            "name": f"{p['name0']} {p['name1']}",
        }
