"""A small HPatches-style set built from the photographs that ship with scikit-image.

No download: the images come from ``skimage.data`` (files installed with the package). The set
is written once, deterministically, into ``DATA_PATH/hpatches_embedded/`` in the HPatches
layout and then read by :class:`datasets.hpatches.HPatches` like the real thing (select it with
``data.root: embedded``):

* ``i_<name>/``: illumination sequences. Image 1 is the photograph; images 2..6 add growing
  photometric changes (gamma, contrast, brightness, a smooth illumination gradient, a colour
  cast, sensor noise). Every ``H_1_k`` is the identity.
* ``v_<name>/``: viewpoint sequences. Each image is a view of the photograph (the "scene")
  through a homography sampled with :func:`utils.geometry.sample_homography` (no empty borders;
  perspective, scale and rotation grow with k), plus a mild gain change and noise.
  ``H_1_k = G_k @ G_1^-1`` where ``G_k`` maps scene pixels to image k.

Images are binary PPM (P6, colour sources) or PGM-style P5 (gray sources) named ``1.ppm`` ..
``6.ppm``; ``H_1_k`` holds three rows of three numbers, as in HPatches. ``MANIFEST`` (written
last) lists every file with its size; a folder whose manifest is missing or does not match is
rebuilt. The build happens in a temporary folder that is renamed into place when complete.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import settings
from utils.geometry import resize_matrix, sample_homography

FOLDER_NAME = "hpatches_embedded"
VERSION = "hpatches_embedded v1"
SEED = 20180601

# (sequence name, skimage.data function, output size (H, W)); every source loads offline
SEQUENCES = [
    ("i_astronaut", "astronaut", (384, 512)),
    ("i_chelsea", "chelsea", (300, 400)),
    ("i_coffee", "coffee", (400, 600)),
    ("i_coins", "coins", (288, 384)),
    ("i_immunohistochemistry", "immunohistochemistry", (384, 512)),
    ("v_brick", "brick", (384, 512)),
    ("v_camera", "camera", (360, 480)),
    ("v_gravel", "gravel", (384, 512)),
    ("v_motorcycle", "stereo_motorcycle", (480, 640)),
    ("v_rocket", "rocket", (420, 560)),
]
NUM_IMAGES = 6
VIEW_PATCH_RATIO = 0.75  # every view sees this fraction of the scene (leaves room to move)


# --------------------------------------------------------------------------------------------
# sources and files
# --------------------------------------------------------------------------------------------
def load_source(function: str) -> np.ndarray:
    """A ``skimage.data`` image as uint8, ``H x W x 3`` (RGB) or ``H x W`` (gray)."""
    import skimage.data

    img = getattr(skimage.data, function)()
    if isinstance(img, tuple):  # stereo pairs: take the left image
        img = img[0]
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.dtype != np.uint8:
        raise ValueError(f"skimage.data.{function}: expected a uint8 image, got {img.dtype}")
    return img


def center_crop_to_aspect(img: np.ndarray, size) -> np.ndarray:
    """The largest central crop of ``img`` with the aspect ratio of ``size`` (H, W)."""
    h, w = img.shape[:2]
    th, tw = size
    if h * tw > w * th:  # too tall
        ch, cw = int(round(w * th / tw)), w
    else:
        ch, cw = h, int(round(h * tw / th))
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[top:top + ch, left:left + cw]


def encode_pnm(img: np.ndarray) -> bytes:
    """Binary PPM (P6) for ``H x W x 3`` RGB uint8, P5 for ``H x W`` uint8."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    magic = b"P6" if img.ndim == 3 else b"P5"
    return magic + f"\n{img.shape[1]} {img.shape[0]}\n255\n".encode() + img.tobytes()


def format_homography(H: np.ndarray) -> str:
    """Three rows of three numbers (17 significant digits, so the values read back exactly)."""
    return "".join(" ".join(f"{v:.17g}" for v in row) + "\n" for row in np.asarray(H, dtype=np.float64))


# --------------------------------------------------------------------------------------------
# image changes
# --------------------------------------------------------------------------------------------
def photometric_change(img: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Illumination change of growing ``strength`` in [0, 1] on a uint8 image (gray or RGB).

    Gamma, a smooth multiplicative illumination gradient across a random direction, a colour
    cast, contrast, brightness and Gaussian noise, with magnitudes scaled by ``strength``.
    """
    x = img.astype(np.float64) / 255.0
    h, w = img.shape[:2]
    gamma = math.exp(rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.0) * strength)
    x = x ** gamma
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:h, 0:w]
    proj = ((xs - w / 2) * math.cos(angle) + (ys - h / 2) * math.sin(angle)) / (0.5 * math.hypot(h, w))
    ramp = 1.0 + rng.uniform(0.3, 0.7) * strength * proj  # within [1 - a, 1 + a]
    x = x * (ramp[..., None] if x.ndim == 3 else ramp)
    if x.ndim == 3:
        x = x * (1.0 + rng.uniform(-0.12, 0.12, size=3) * strength)
    contrast = math.exp(rng.uniform(-0.9, 0.3) * strength)
    brightness = rng.uniform(-0.25, 0.2) * strength
    x = (x - 0.5) * contrast + 0.5 + brightness
    x = x + rng.normal(0.0, (1.0 + 4.0 * strength) / 255.0, size=x.shape)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def mild_change(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Small gain / offset change and sensor noise (viewpoint sequences)."""
    x = img.astype(np.float64) * rng.uniform(0.92, 1.08) + rng.uniform(-6, 6)
    x = x + rng.normal(0.0, 1.5, size=x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def view_params(k: int) -> dict:
    """Homography sampling parameters for view k >= 2 of a viewpoint sequence (harder with k)."""
    t = (k - 1) / (NUM_IMAGES - 1)
    return {
        "translation": True, "rotation": True, "scaling": True, "perspective": True,
        "patch_ratio": VIEW_PATCH_RATIO,
        "perspective_amplitude_x": 0.25 * t, "perspective_amplitude_y": 0.25 * t,
        "scaling_amplitude": 0.25 * t, "max_angle": t * math.pi / 6,
        "allow_artifacts": False, "n_scales": 5, "n_angles": 25,
    }


def reference_view_params() -> dict:
    """Image 1 of a viewpoint sequence: the central patch, no perturbation."""
    return {"translation": False, "rotation": False, "scaling": False, "perspective": False,
            "patch_ratio": VIEW_PATCH_RATIO, "allow_artifacts": False}


# --------------------------------------------------------------------------------------------
# sequences
# --------------------------------------------------------------------------------------------
def illumination_sequence(source: np.ndarray, size, rng: np.random.Generator):
    """Images 1..6 (uint8) and identity homographies of an ``i_`` sequence."""
    h, w = size
    base = cv2.resize(center_crop_to_aspect(source, size), (w, h), interpolation=cv2.INTER_AREA)
    images = [base]
    for k in range(2, NUM_IMAGES + 1):
        images.append(photometric_change(base, (k - 1) / (NUM_IMAGES - 1), rng))
    return images, [np.eye(3) for _ in range(2, NUM_IMAGES + 1)]


def viewpoint_sequence(source: np.ndarray, size, rng: np.random.Generator, generator: torch.Generator):
    """Images 1..6 (uint8) and ``H_1_k`` (k = 2..6) of a ``v_`` sequence."""
    h, w = size
    scene = center_crop_to_aspect(source, size)
    # scene pixels -> an h x w grid of the scene, in which the views' homographies are sampled
    T = resize_matrix(scene.shape[:2], size).numpy()
    G1 = sample_homography(1, size, reference_view_params(), generator)[0].double().numpy()
    views = [G1] + [sample_homography(1, size, view_params(k), generator)[0].double().numpy()
                    for k in range(2, NUM_IMAGES + 1)]
    images = []
    for G in views:
        warped = cv2.warpPerspective(scene, G @ T, (w, h), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE)
        images.append(mild_change(warped, rng))
    homographies = []
    for G in views[1:]:
        H = G @ np.linalg.inv(G1)
        homographies.append(H / H[2, 2])
    return images, homographies


def build_embedded_hpatches(dest: str | Path) -> None:
    """Write every sequence and the ``MANIFEST`` into the (existing, empty) folder ``dest``."""
    dest = Path(dest)
    manifest = [VERSION]
    for index, (name, function, size) in enumerate(SEQUENCES):
        rng = np.random.default_rng([SEED, index])
        generator = torch.Generator().manual_seed(SEED + index)
        source = load_source(function)
        if name.startswith("i_"):
            images, homographies = illumination_sequence(source, size, rng)
        else:
            images, homographies = viewpoint_sequence(source, size, rng, generator)
        folder = dest / name
        folder.mkdir(parents=True, exist_ok=True)
        files = {f"{k}.ppm": encode_pnm(img) for k, img in enumerate(images, start=1)}
        files.update({f"H_1_{k}": format_homography(H).encode() for k, H in enumerate(homographies, start=2)})
        for fname, data in files.items():
            (folder / fname).write_bytes(data)
            manifest.append(f"{name}/{fname} {len(data)}")
    (dest / "MANIFEST").write_text("\n".join(manifest) + "\n")


def is_complete(folder: str | Path) -> bool:
    """True when ``folder`` holds a finished build of this version (manifest and file sizes match)."""
    folder = Path(folder)
    try:
        lines = (folder / "MANIFEST").read_text().splitlines()
    except OSError:
        return False
    if not lines or lines[0] != VERSION:
        return False
    for line in lines[1:]:
        rel, _, size = line.rpartition(" ")
        path = folder / rel
        if not path.is_file() or path.stat().st_size != int(size):
            return False
    return len(lines) > 1


def _remove_stale_temps(base: Path, max_age_s: float = 3600.0) -> None:
    """Delete temporary build folders left by killed builds (older than ``max_age_s``)."""
    now = time.time()
    for p in base.glob(f".{FOLDER_NAME}.*.tmp"):
        try:
            if now - p.stat().st_mtime > max_age_s:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def ensure_embedded_hpatches(data_dir: str | Path | None = None) -> Path:
    """The embedded set's folder (``<data_dir or DATA_PATH>/hpatches_embedded``), built if needed."""
    base = Path(data_dir) if data_dir is not None else settings.data_path()
    final = base / FOLDER_NAME
    if is_complete(final):
        return final
    base.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(base)
    print(f"building the embedded HPatches-style set in {final} ...", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER_NAME}.", suffix=".tmp", dir=base))
    try:
        build_embedded_hpatches(tmp)
        if final.exists() and not is_complete(final):  # an unfinished or outdated copy: replace it
            trash = Path(tempfile.mkdtemp(prefix=f".{FOLDER_NAME}.old.", suffix=".tmp", dir=base))
            os.replace(final, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete(final):  # not another process having just finished the same build
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
