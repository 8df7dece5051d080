"""Small drawing helpers for export previews (OpenCV, BGR uint8 images)."""
from __future__ import annotations

import cv2
import numpy as np


def to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """Gray float in [0, 1] (H x W) or uint8 (H x W or H x W x 3) -> BGR uint8 H x W x 3."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(np.round(img.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(img)


def draw_keypoints(image: np.ndarray, points: np.ndarray, color=(0, 255, 0), radius: int = 2) -> np.ndarray:
    """Circles at ``points`` (N x 2+, x y first) on a copy of ``image``; returns BGR uint8."""
    out = to_bgr_uint8(image).copy()
    pts = np.asarray(points, dtype=np.float64)
    if pts.size == 0:
        return out
    for x, y in pts.reshape(len(pts), -1)[:, :2]:
        cv2.circle(out, (int(round(x)), int(round(y))), radius, color, thickness=-1, lineType=cv2.LINE_AA)
    return out


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 8) -> np.ndarray:
    """Two BGR images next to each other (top-aligned, black padding)."""
    h = max(left.shape[0], right.shape[0])
    out = np.zeros((h, left.shape[1] + gap + right.shape[1], 3), np.uint8)
    out[:left.shape[0], :left.shape[1]] = left
    out[:right.shape[0], left.shape[1] + gap:] = right
    return out
