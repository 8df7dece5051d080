"""Synthetic prediction pairs with a known homography, for tests, the notebook and the benchmark.

A pair looks like an exporter's output: a smooth random image, its warp by a sampled homography,
``n_points`` integer detections per image (a share of image 1's points re-detected in image 2
with a little localisation noise, the rest random), and unit descriptors that are close for
re-detected points and independent otherwise.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from utils.geometry import inside_image, sample_homography, warp_points
from utils.io import atomic_save_npz


def synthetic_pair(seed: int, size=(240, 320), n_points: int = 1000, dim: int = 256, repeat_ratio: float = 0.7,
                   noise_px: float = 0.7, desc_noise: float = 0.25, homography_params: dict | None = None) -> dict:
    """One pair in the prediction-file format (``image``, ``warped_image``, ``homography``, ``prob``, ...)."""
    rng = np.random.default_rng(seed)
    h, w = size
    params = {"patch_ratio": 0.85, "allow_artifacts": False, "max_angle": 0.4,
              **(homography_params or {})}
    H = sample_homography(1, size, params, generator=torch.Generator().manual_seed(seed))[0].double().numpy()
    coarse = rng.random((max(h // 8, 2), max(w // 8, 2))).astype(np.float32)
    image = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    warped_image = cv2.warpPerspective(image, H, (w, h), flags=cv2.INTER_LINEAR)

    pts1 = np.stack([rng.integers(0, w, n_points), rng.integers(0, h, n_points)], 1).astype(np.float64)
    desc1 = rng.normal(size=(n_points, dim))
    in2 = inside_image(warp_points(pts1, H), size)
    cand = np.nonzero(in2)[0]
    rep = rng.choice(cand, size=int(round(repeat_ratio * len(cand))), replace=False) if len(cand) else cand
    p_rep = np.round(warp_points(pts1[rep], H) + rng.normal(scale=noise_px, size=(len(rep), 2)))
    p_rep = np.clip(p_rep, 0, [w - 1, h - 1])
    d_rep = desc1[rep] + desc_noise * rng.normal(size=(len(rep), dim))
    n_rand = n_points - len(rep)
    p_rand = np.stack([rng.integers(0, w, n_rand), rng.integers(0, h, n_rand)], 1).astype(np.float64)
    pts2 = np.concatenate([p_rep, p_rand])
    desc2 = np.concatenate([d_rep, rng.normal(size=(n_rand, dim))])
    order = rng.permutation(n_points)  # exporters may write points in any order
    pts2, desc2 = pts2[order], desc2[order]

    def unit(d):
        return (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)

    return {
        "image": image.astype(np.float32), "warped_image": warped_image.astype(np.float32),
        "homography": H,
        "prob": np.concatenate([pts1, rng.random((n_points, 1))], 1).astype(np.float32),
        "warped_prob": np.concatenate([pts2, rng.random((n_points, 1))], 1).astype(np.float32),
        "desc": unit(desc1), "warped_desc": unit(desc2),
        "name": np.array(f"synthetic_{seed}"), "index": np.array(seed),
    }


def write_synthetic_folder(folder: str | Path, n_pairs: int, seed: int = 0, **kwargs) -> Path:
    """Write ``0.npz .. n_pairs-1.npz`` of :func:`synthetic_pair` into ``folder``; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_pairs):
        atomic_save_npz(folder / f"{i}.npz", **synthetic_pair(seed + i, **kwargs))
    return folder
