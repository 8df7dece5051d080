"""File I/O shared by every stage: atomic writes and image reading.

Every output is written to a temporary file in the destination folder and then renamed over
the final name, so a crash or a kill never leaves a half-written file behind.
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

# the temporary files of atomic_path: ".<final name>.<random>.tmp"
TEMP_FILE = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")


def _name_the_file(e: OSError, path: Path) -> OSError:
    """``e`` with ``path`` as its file name ("[Errno 28] No space left on device: '<path>'")."""
    if e.filename:
        return e
    return OSError(e.errno, e.strerror or os.strerror(e.errno or errno.EIO), str(path))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` if the block succeeds.

    An ``OSError`` (a full disk, a read-only folder) is re-raised naming ``path``; the temporary
    file is removed whatever happens (a kill -9 can leave one: see :func:`remove_stale_temp_files`).
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise _name_the_file(e, path) from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def remove_stale_temp_files(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Delete the temporary files that a killed :func:`atomic_path` left in ``folder``.

    Only safe while no other process writes there: call it holding :func:`folder_lock`.
    Returns the deleted paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    removed = []
    for p in found:
        if p.is_file() and TEMP_FILE.match(p.name):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


class FolderBusy(OSError):
    """Another process holds the lock of a folder."""


LOCK_FILE = ".lock"


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "run") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (``<folder>/.lock``, ``flock``) for the block.

    A second process asking for the same folder fails at once with :class:`FolderBusy` naming
    the folder and the holder's pid. The operating system drops the lock when its process ends,
    however it ends (kill -9 included), so a stale lock never blocks a re-run.
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise FolderBusy(f"{folder}: another {what} is using this folder (pid {holder}); "
                             f"wait for it to end or choose another name") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield lock
    finally:
        os.close(fd)  # releases the flock


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsync'ed before the rename)."""
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


EXPORT_MANIFEST = "manifest.json"  # beside predictions/: what a complete export holds (exporters/predictions.py)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ImageReadError(IOError):
    """An image file is missing, cannot be decoded, or holds no usable picture."""


MIN_IMAGE_SIDE = 8  # one 8 x 8 cell of the network: anything smaller has no keypoint to find


def _check_decoded(path: Path, img: np.ndarray) -> None:
    """Degenerate pictures are errors naming the file: a side under one cell, NaN or inf pixels."""
    h, w = img.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise ImageReadError(f"{path}: image is {w}x{h} pixels, "
                             f"smaller than one {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} cell")
    if img.dtype.kind == "f" and not np.isfinite(img).all():
        raise ImageReadError(f"{path}: image holds NaN or infinite pixel values")


def read_image_gray(path: str | Path) -> np.ndarray:
    """Read an image file as float32 gray in [0, 1], shape H x W.

    Colour images are converted with OpenCV's BGR -> gray weights; 16-bit images are scaled by
    65535. Raises :class:`ImageReadError` naming the file if it is missing or unreadable, smaller
    than one 8 x 8 cell, or holds NaN / infinite values.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_GRAYSCALE) if data.size else None
    if img is None:
        raise ImageReadError(f"{path}: not a readable image")
    _check_decoded(path, img)
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
    _check_decoded(path, img)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
