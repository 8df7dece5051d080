"""Reading a folder of exported predictions (``0.npz``, ``1.npz``, ...) with clear errors.

Each file holds one image pair (see docs/EVALUATION.md):

* ``image``, ``warped_image``: gray H x W (float in [0, 1]; other ranges only matter for drawing);
* ``homography``: 3 x 3, maps ``image`` pixel coordinates into ``warped_image`` (p_w ~ H p);
* ``prob``, ``warped_prob``: N x 3 (x, y, score) or N x 2 (x, y; classical exporters), any order;
* ``desc``, ``warped_desc``: N x D descriptors (float or uint8), row i belongs to point i;
* optional ``name`` / pair index keys, ``seg`` / ``warped_seg`` (ignored here).
"""
from __future__ import annotations

import json
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.cli import UserError
from utils.io import EXPORT_MANIFEST, file_sha256

POINT_KEYS = ("image", "warped_image", "homography", "prob", "warped_prob")
DESCRIPTOR_KEYS = ("desc", "warped_desc")
POSE_KEYS = ("image", "warped_image", "prob", "warped_prob", "K", "warped_K", "T_0to1")
NAME_KEYS = ("name", "sequence", "scene", "seq_name")
INDEX_KEYS = ("index", "pair_index", "pair")

_FILE_RE = re.compile(r"^(\d+)\.npz$")


@dataclass
class PairPredictions:
    """One exported pair, validated. Points are float64 (x, y); scores None when not exported."""

    file: Path
    image: np.ndarray                 # H1 x W1
    warped_image: np.ndarray          # H2 x W2
    homography: np.ndarray            # 3 x 3 float64, image -> warped_image
    points: np.ndarray                # N x 2
    scores: np.ndarray | None         # N
    warped_points: np.ndarray         # M x 2
    warped_scores: np.ndarray | None  # M
    desc: np.ndarray | None           # N x D (None when descriptors were not requested)
    warped_desc: np.ndarray | None    # M x D
    name: str | None = None
    index: int | None = None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    @property
    def warped_size(self) -> tuple[int, int]:
        return int(self.warped_image.shape[0]), int(self.warped_image.shape[1])


def list_prediction_files(folder: str | Path) -> list[Path]:
    """The ``<int>.npz`` files of ``folder`` in numeric order (other files are ignored)."""
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{folder}: predictions folder not found")
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder (expected a folder of 0.npz, 1.npz, ...)")
    files = [p for p in folder.iterdir() if p.is_file() and _FILE_RE.match(p.name)]
    if not files:
        raise UserError(f"{folder}: no prediction files (expected 0.npz, 1.npz, ...)")
    return sorted(files, key=lambda p: int(_FILE_RE.match(p.name).group(1)))


def check_export(folder: str | Path, allow_partial: bool = False) -> str | None:
    """Refuse a partial or mixed set of predictions with a one-line :class:`UserError`.

    With the export's manifest (``<folder>/../manifest.json`` naming ``folder``): every file it
    lists must be present with its SHA-256, and no other numbered file. Without one (a hand-made
    or older folder): the numbering must have no gap. ``allow_partial``: the problem is returned
    as a warning line instead (None when the set is complete, or holds no numbered file: the
    evaluators report that).
    """
    folder = Path(folder)
    present = {p.name for p in folder.iterdir() if p.is_file() and _FILE_RE.match(p.name)} if folder.is_dir() else set()
    if not present:
        return None
    manifest_path = folder.resolve().parent / EXPORT_MANIFEST
    manifest = None
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"{manifest_path}: unreadable export manifest ({e})") from None
        if not isinstance(manifest, dict) or manifest.get("predictions") != folder.resolve().name:
            manifest = None  # the manifest of another folder
    problem = None
    if manifest is not None:
        listed = manifest.get("files") or {}
        expected = int(manifest.get("expected", len(listed)))
        missing = [n for n in listed if n not in present]
        extra = sorted(present - set(listed), key=lambda n: int(n.split(".")[0]))
        changed = [n for n in listed if n in present and file_sha256(folder / n) != listed[n]]
        if missing or extra or changed or int(manifest.get("completed", -1)) != expected or len(listed) != expected:
            good = len(listed) - len(missing) - len(changed)
            details = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                       f"{len(changed)} changed since the export (e.g. {changed[0]})" if changed else "",
                       f"{len(extra)} not part of it (e.g. {extra[0]})" if extra else ""]
            problem = (f"{folder}: partial or mixed export: {good} of {expected} pairs match {manifest_path}"
                       f" ({', '.join(d for d in details if d) or 'the export did not complete'})")
    else:
        indices = [int(_FILE_RE.match(n).group(1)) for n in present]
        gaps = sorted(set(range(max(indices) + 1)) - set(indices))
        if gaps:
            problem = (f"{folder}: partial export: {len(indices)} files but the numbering runs to {max(indices)}.npz "
                       f"({len(gaps)} missing, e.g. {gaps[0]}.npz; no {EXPORT_MANIFEST} to check against)")
    if problem is None:
        return None
    if allow_partial:
        return f"{problem}; scoring the files present (--allow-partial)"
    raise UserError(f"{problem}; re-run the export, or pass --allow-partial to score the files present")


def _read_npz(path: Path, needed: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The ``needed`` arrays of ``path`` (each must be present) and whichever ``optional`` ones load."""
    out: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            present = set(z.files)
            for key in needed:
                if key not in present:
                    raise UserError(f"{path}: missing key '{key}' (has: {', '.join(sorted(present)) or 'none'})")
            for key in needed:
                try:
                    out[key] = z[key]
                except ValueError as e:  # object arrays need pickle, which we never enable
                    raise UserError(f"{path}: key '{key}' cannot be read without pickle ({e})") from None
            for key in optional:
                if key in present:
                    try:
                        out[key] = z[key]
                    except ValueError:
                        pass  # an optional name stored as a Python object: ignore it
    except UserError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable .npz file ({msg})") from None
    return out


def check_keys(path: str | Path, need_descriptors: bool, pose: bool = False) -> None:
    """Fail early, without reading arrays, when ``path`` lacks a key the evaluation needs
    (``pose``: the keys of :func:`load_pose_pair` instead of the homography ones)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            names = {n[:-4] if n.endswith(".npy") else n for n in z.namelist()}
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{path}: not a readable .npz file ({e})") from None
    needed = (POSE_KEYS if pose else POINT_KEYS) + (DESCRIPTOR_KEYS if need_descriptors else ())
    for key in needed:
        if key not in names:
            hint = ""
            if pose and key in POSE_KEYS[-3:]:
                hint = "; --pose needs pose pairs exported by export_pairs"
            elif not pose and key == "homography" and "T_0to1" in names:
                hint = "; these are pose pairs: evaluate them with --pose"
            raise UserError(f"{path}: missing key '{key}' (has: {', '.join(sorted(names)) or 'none'}){hint}")


def _gray(arr: np.ndarray, path: Path, key: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim == 3 and 1 in (a.shape[0], a.shape[-1]):
        a = a.reshape(a.shape[1:] if a.shape[0] == 1 else a.shape[:-1])
    if a.ndim != 2 or min(a.shape) < 2:
        raise UserError(f"{path}: key '{key}' must be a gray image H x W, got shape {tuple(np.shape(arr))}")
    return a


def _points(arr: np.ndarray, path: Path, key: str) -> tuple[np.ndarray, np.ndarray | None]:
    a = np.asarray(arr)
    if a.ndim == 2 and a.shape[0] == 0:
        a = a.reshape(0, max(a.shape[1], 2))
    if a.size == 0 and a.ndim == 1:
        a = a.reshape(0, 3)
    if a.ndim != 2 or a.shape[1] not in (2, 3) or not np.issubdtype(a.dtype, np.number):
        raise UserError(f"{path}: key '{key}' must be N x 3 (x, y, score) or N x 2 (x, y), "
                        f"got shape {a.shape} dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise UserError(f"{path}: key '{key}' holds NaN or infinite values")
    return a[:, :2].copy(), (a[:, 2].copy() if a.shape[1] == 3 else None)


def _descriptors(arr: np.ndarray, n: int, path: Path, key: str, points_key: str) -> np.ndarray:
    a = np.asarray(arr)
    if n == 0 and a.size == 0:  # no points: accept (0, D), (0,) or (D, 0)
        return a.reshape(0, a.shape[1] if a.ndim == 2 and a.shape[0] == 0 else 0)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.number):
        raise UserError(f"{path}: key '{key}' must be N x D descriptors, got shape {a.shape} dtype {a.dtype}")
    if a.shape[0] != n:
        if a.shape[1] == n and a.shape[0] != n:
            raise UserError(f"{path}: key '{key}' has shape {a.shape}: expected N x D with N = {n} points "
                            f"of '{points_key}' (it looks transposed, D x N)")
        raise UserError(f"{path}: key '{key}' has {a.shape[0]} rows but '{points_key}' has {n} points")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise UserError(f"{path}: key '{key}' holds NaN or infinite values")
    return a


def _optional_str(data: dict, keys) -> str | None:
    for k in keys:
        if k in data:
            v = np.asarray(data[k])
            if v.size == 1:
                v = v.reshape(()).item()
                return v.decode() if isinstance(v, bytes) else str(v)
    return None


def _optional_int(data: dict, keys) -> int | None:
    for k in keys:
        if k in data:
            v = np.asarray(data[k])
            if v.size == 1 and np.issubdtype(v.dtype, np.integer):
                return int(v.reshape(()))
    return None


def load_pair(path: str | Path, need_descriptors: bool = True) -> PairPredictions:
    """Read and validate one prediction file; every problem is a :class:`UserError` naming it."""
    path = Path(path)
    needed = POINT_KEYS + (DESCRIPTOR_KEYS if need_descriptors else ())
    data = _read_npz(path, needed, NAME_KEYS + INDEX_KEYS)
    image = _gray(data["image"], path, "image")
    warped_image = _gray(data["warped_image"], path, "warped_image")
    H = np.asarray(data["homography"])
    if H.shape != (3, 3) and H.size == 9:
        H = H.reshape(3, 3)
    if H.shape != (3, 3) or not np.issubdtype(H.dtype, np.number):
        raise UserError(f"{path}: key 'homography' must be 3 x 3, got shape {np.shape(data['homography'])}")
    H = H.astype(np.float64)
    if not np.isfinite(H).all() or not np.linalg.cond(H) < 1e12:
        raise UserError(f"{path}: key 'homography' is not an invertible finite 3 x 3 matrix")
    pts, scores = _points(data["prob"], path, "prob")
    wpts, wscores = _points(data["warped_prob"], path, "warped_prob")
    desc = wdesc = None
    if need_descriptors:
        desc = _descriptors(data["desc"], len(pts), path, "desc", "prob")
        wdesc = _descriptors(data["warped_desc"], len(wpts), path, "warped_desc", "warped_prob")
        if len(pts) and len(wpts) and desc.shape[1] != wdesc.shape[1]:
            raise UserError(f"{path}: 'desc' has dimension {desc.shape[1]} but 'warped_desc' has {wdesc.shape[1]}")
    index = _optional_int(data, INDEX_KEYS)
    return PairPredictions(file=path, image=image, warped_image=warped_image, homography=H,
                           points=pts, scores=scores, warped_points=wpts, warped_scores=wscores,
                           desc=desc, warped_desc=wdesc, name=_optional_str(data, NAME_KEYS),
                           index=index)


@dataclass
class PosePairPredictions:
    """One exported pose pair (``export_pairs``), validated. Points float64 (x, y)."""

    file: Path
    image: np.ndarray                 # H0 x W0
    warped_image: np.ndarray          # H1 x W1
    K: np.ndarray                     # 3 x 3 intrinsics of image (at its evaluated size)
    warped_K: np.ndarray              # 3 x 3 intrinsics of warped_image
    T_0to1: np.ndarray                # 4 x 4, camera of image -> camera of warped_image
    points: np.ndarray                # N x 2
    scores: np.ndarray | None         # N
    warped_points: np.ndarray         # M x 2
    warped_scores: np.ndarray | None  # M
    desc: np.ndarray                  # N x D
    warped_desc: np.ndarray           # M x D
    name: str | None = None


def _matrix(data: dict, key: str, shape: tuple[int, int], path: Path) -> np.ndarray:
    a = np.asarray(data[key])
    if a.size == shape[0] * shape[1] and np.issubdtype(a.dtype, np.number):
        a = a.reshape(shape).astype(np.float64)
    if a.shape != shape or not np.isfinite(a).all():
        raise UserError(f"{path}: key '{key}' must be a finite {shape[0]} x {shape[1]} matrix, "
                        f"got shape {np.shape(data[key])}")
    return a


def load_pose_pair(path: str | Path) -> PosePairPredictions:
    """Read and validate one pose-pair prediction file; every problem is a :class:`UserError` naming it."""
    path = Path(path)
    data = _read_npz(path, POSE_KEYS + DESCRIPTOR_KEYS, NAME_KEYS)
    image = _gray(data["image"], path, "image")
    warped_image = _gray(data["warped_image"], path, "warped_image")
    K, K1 = _matrix(data, "K", (3, 3), path), _matrix(data, "warped_K", (3, 3), path)
    for key, k in (("K", K), ("warped_K", K1)):
        if not (k[0, 0] > 0 and k[1, 1] > 0):
            raise UserError(f"{path}: key '{key}' must have positive focal lengths, got {k[0, 0]:g}, {k[1, 1]:g}")
    T = _matrix(data, "T_0to1", (4, 4), path)
    pts, scores = _points(data["prob"], path, "prob")
    wpts, wscores = _points(data["warped_prob"], path, "warped_prob")
    desc = _descriptors(data["desc"], len(pts), path, "desc", "prob")
    wdesc = _descriptors(data["warped_desc"], len(wpts), path, "warped_desc", "warped_prob")
    if len(pts) and len(wpts) and desc.shape[1] != wdesc.shape[1]:
        raise UserError(f"{path}: 'desc' has dimension {desc.shape[1]} but 'warped_desc' has {wdesc.shape[1]}")
    return PosePairPredictions(file=path, image=image, warped_image=warped_image, K=K, warped_K=K1, T_0to1=T,
                               points=pts, scores=scores, warped_points=wpts, warped_scores=wscores,
                               desc=desc, warped_desc=wdesc, name=_optional_str(data, NAME_KEYS))
