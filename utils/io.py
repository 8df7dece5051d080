"""File I/O shared by every stage: atomic writes and image reading.

Every output is written to a temporary file in the destination folder and then renamed over
the final name, so a crash or a kill never leaves a half-written file behind.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npz(path: str | Path, compressed: bool = False, **arrays: Any) -> None:
    """``np.savez`` to ``path`` atomically (``path`` should end in ``.npz``)."""
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_imwrite(path: str | Path, image: np.ndarray) -> None:
    """Write an image with OpenCV (format from the suffix) atomically."""
    import cv2

    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise IOError(f"{path}: OpenCV could not encode the image")
    atomic_write_bytes(path, encoded.tobytes())


class ImageReadError(IOError):
    """An image file is missing or cannot be decoded."""


def read_image_gray(path: str | Path) -> np.ndarray:
    """Read an image file as float32 gray in [0, 1], shape H x W.

    Colour images are converted with OpenCV's BGR -> gray weights; 16-bit images are scaled by
    65535. Raises :class:`ImageReadError` naming the file if it is missing or unreadable.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_GRAYSCALE) if data.size else None
    if img is None:
        raise ImageReadError(f"{path}: not a readable image")
    scale = 65535.0 if img.dtype == np.uint16 else 255.0
    return img.astype(np.float32) / scale


def read_image_color(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB, shape H x W x 3 (for drawing and segmentation loaders)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise ImageReadError(f"{path}: not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
