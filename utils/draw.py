"""Drawing keypoints and matches on images (OpenCV), returning RGB uint8 arrays.

Every function takes images as gray or RGB, float in [0, 1] (or [0, 255]) or uint8, and returns a
new ``H x W x 3`` uint8 RGB array; points are float (x, y) pixels (sub-pixel positions are drawn
with OpenCV's fixed-point ``shift``). ``save_rgb`` writes one atomically (PNG from the suffix).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from utils.io import atomic_imwrite

GREEN = (0, 200, 0)
RED = (230, 30, 30)
BLUE = (40, 120, 255)
YELLOW = (255, 210, 0)
_SHIFT = 4  # sub-pixel bits for cv2 drawing


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Gray or RGB, float ([0, 1], or [0, 255] when the max exceeds 1) or uint8 -> ``H x W x 3`` uint8."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)  # C x H x W
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.dtype != np.uint8:
        img = img.astype(np.float32)
        scale = 255.0 if float(np.nanmax(img)) <= 1.0 + 1e-6 else 1.0
        img = np.clip(np.nan_to_num(img) * scale, 0, 255).round().astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img)


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points, dtype=np.float64) * (1 << _SHIFT)).astype(np.int64)


def draw_keypoints(image: np.ndarray, points: np.ndarray, color=GREEN, radius: float = 2.0,
                   thickness: int = 1) -> np.ndarray:
    """Circles at ``points`` (N x 2 or N x 3, x y [score]) on a copy of ``image``."""
    out = to_rgb_uint8(image).copy()
    pts = np.asarray(points, dtype=np.float64)
    pts = pts.reshape(-1, 2) if pts.ndim != 2 else pts
    r = int(round(radius * (1 << _SHIFT)))
    for x, y in _fixed(pts[:, :2]):
        cv2.circle(out, (int(x), int(y)), r, color, thickness, cv2.LINE_AA, _SHIFT)
    return out


def side_by_side(images, gap: int = 8, background: int = 255) -> np.ndarray:
    """Images next to each other (top-aligned), separated by ``gap`` pixels."""
    imgs = [to_rgb_uint8(i) for i in images]
    h = max(i.shape[0] for i in imgs)
    w = sum(i.shape[1] for i in imgs) + gap * (len(imgs) - 1)
    out = np.full((h, w, 3), background, dtype=np.uint8)
    x = 0
    for i in imgs:
        out[: i.shape[0], x: x + i.shape[1]] = i
        x += i.shape[1] + gap
    return out


def error_colors(errors: np.ndarray, threshold: float) -> np.ndarray:
    """``L`` errors -> ``L x 3`` uint8 RGB: green at 0, yellow at ``threshold``, red from 2x it on."""
    r = np.clip(np.nan_to_num(np.asarray(errors, np.float64) / threshold, nan=2.0, posinf=2.0), 0.0, 2.0)
    f = r[:, None]
    g, y, red = np.array(GREEN, np.float64), np.array(YELLOW, np.float64), np.array(RED, np.float64)
    out = np.where(f <= 1.0, g + (y - g) * f, y + (red - y) * (f - 1.0))
    return np.round(out).astype(np.uint8)


def draw_matches(image1: np.ndarray, image2: np.ndarray, points1: np.ndarray, points2: np.ndarray,
                 correct: np.ndarray | None = None, gap: int = 8, thickness: int = 1,
                 max_lines: int | None = None, seed: int = 0, colors: np.ndarray | None = None) -> np.ndarray:
    """The two images side by side with a line per match (``points1[i]`` <-> ``points2[i]``).

    Lines are green where ``correct`` is True, red where False, blue without ``correct``;
    ``colors`` (``L x 3`` RGB, e.g. :func:`error_colors`) gives each line its own colour instead.
    ``max_lines`` draws a random subset (seeded) when there are more matches.
    """
    canvas = side_by_side([image1, image2], gap=gap)
    offset = np.array([to_rgb_uint8(image1).shape[1] + gap, 0.0])
    p1 = np.asarray(points1, dtype=np.float64).reshape(-1, 2)
    p2 = np.asarray(points2, dtype=np.float64).reshape(-1, 2) + offset
    idx = np.arange(len(p1))
    if max_lines is not None and len(idx) > max_lines:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_lines, replace=False))
    ok = None if correct is None else np.asarray(correct, dtype=bool)
    # incorrect matches first, so the correct ones stay visible on top
    if ok is not None:
        idx = idx[np.argsort(ok[idx], kind="stable")]
    a, b = _fixed(p1[idx]), _fixed(p2[idx])
    for k, i in enumerate(idx):
        if colors is not None:
            color = tuple(int(c) for c in colors[i])
        else:
            color = BLUE if ok is None else (GREEN if ok[i] else RED)
        pa, pb = (int(a[k, 0]), int(a[k, 1])), (int(b[k, 0]), int(b[k, 1]))
        cv2.line(canvas, pa, pb, color, thickness, cv2.LINE_AA, _SHIFT)
        cv2.circle(canvas, pa, 2 << _SHIFT, color, 1, cv2.LINE_AA, _SHIFT)
        cv2.circle(canvas, pb, 2 << _SHIFT, color, 1, cv2.LINE_AA, _SHIFT)
    return canvas


def put_title(image: np.ndarray, text: str, height: int = 22) -> np.ndarray:
    """A white band with ``text`` above ``image`` (RGB uint8 in, RGB uint8 out)."""
    img = to_rgb_uint8(image)
    band = np.full((height, img.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(band, text, (4, height - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, img], axis=0)


def save_rgb(path: str | Path, image: np.ndarray) -> None:
    """Write an RGB uint8 image (format from the suffix, e.g. .png) atomically."""
    atomic_imwrite(path, cv2.cvtColor(to_rgb_uint8(image), cv2.COLOR_RGB2BGR))
