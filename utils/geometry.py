"""Homographies: sampling, point and image warping, valid masks, resize/crop conjugation.

Conventions (docs/ARCHITECTURE.md, "Conventions"):

* points are float ``(x, y)`` pixels, x right, y down, the centre of the top-left pixel at (0, 0);
  an image of width W spans pixel centres x = 0 .. W-1;
* ``H_a_to_b`` maps points of image A into image B: ``p_b ~ H_a_to_b @ p_a``;
* ``warp_image(img_a, H_a_to_b, size_b)`` returns A seen in B's frame (it samples A at H^-1 p_b).

Every function is batched and device-agnostic; shapes are given as ``B x ...``.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

# Parameters of the random homography, with the paper's defaults (Synthetic Shapes / HA).
HOMOGRAPHY_DEFAULTS = {
    "translation": True,
    "rotation": True,
    "scaling": True,
    "perspective": True,
    "scaling_amplitude": 0.1,
    "perspective_amplitude_x": 0.1,
    "perspective_amplitude_y": 0.1,
    "patch_ratio": 0.5,
    "max_angle": math.pi / 2,
    "allow_artifacts": False,
    "translation_overflow": 0.0,
    "n_scales": 5,
    "n_angles": 25,
}


# --------------------------------------------------------------------------------------------
# points
# --------------------------------------------------------------------------------------------
def warp_points(points, H):
    """Apply homographies to points.

    Args:
        points: ``... x N x 2`` (x, y), numpy array or tensor.
        H: ``... x 3 x 3`` broadcastable against the points' leading dimensions.
    Returns:
        ``... x N x 2`` warped points, same type as ``points``. Points that go to infinity
        (w = 0) come back as inf.
    """
    if isinstance(points, np.ndarray):
        return warp_points(torch.from_numpy(np.asarray(points, dtype=np.float64)),
                           torch.from_numpy(np.asarray(H, dtype=np.float64))).numpy()
    H = H.to(points.dtype)
    homog = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)  # ... N 3
    out = homog @ H.transpose(-1, -2)
    return out[..., :2] / out[..., 2:3]


def inside_image(points, size, border: float = 0.0):
    """Mask of points with ``border <= x <= W-1-border`` and likewise for y.

    Args:
        points: ``... x N x 2``; size: (H, W). Returns a bool ``... x N`` (same library as input).
    """
    h, w = size
    x, y = points[..., 0], points[..., 1]
    return (x >= border) & (x <= w - 1 - border) & (y >= border) & (y <= h - 1 - border)


# --------------------------------------------------------------------------------------------
# homography algebra
# --------------------------------------------------------------------------------------------
def homography_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Exact homography from 4 point pairs (direct linear transform).

    Args:
        src, dst: ``B x 4 x 2``. Returns ``B x 3 x 3`` with H[2, 2] = 1 mapping src -> dst.
    """
    dtype = src.dtype
    src, dst = src.double(), dst.double()
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], dim=-1)
    A = torch.cat([rows_u, rows_v], dim=-2)  # B 8 8
    b = torch.cat([u, v], dim=-1).unsqueeze(-1)  # B 8 1
    h = torch.linalg.solve(A, b).squeeze(-1)
    H = torch.cat([h, torch.ones_like(h[..., :1])], dim=-1).reshape(*h.shape[:-1], 3, 3)
    return H.to(dtype)


def homography_dlt(src, dst) -> np.ndarray | None:
    """Least-squares homography from ``N >= 4`` point pairs (numpy ``N x 2`` each): the direct
    linear transform on Hartley-normalised points (centroid at 0, mean distance sqrt(2)), solved
    by SVD, every pair weighted equally and no robust step. Returns float64 3 x 3 with H[2, 2] = 1
    mapping src -> dst, or None (fewer than 4 pairs, degenerate points).
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if len(src) < 4 or len(src) != len(dst):
        return None

    def normaliser(p):
        c = p.mean(axis=0)
        d = np.linalg.norm(p - c, axis=1).mean()
        if not d > 0:
            return None
        s = np.sqrt(2.0) / d
        return np.array([[s, 0.0, -s * c[0]], [0.0, s, -s * c[1]], [0.0, 0.0, 1.0]])

    Ts, Td = normaliser(src), normaliser(dst)
    if Ts is None or Td is None:
        return None
    a = src @ Ts[:2, :2].T + Ts[:2, 2]
    b = dst @ Td[:2, :2].T + Td[:2, 2]
    x, y, u, v = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
    zeros, ones = np.zeros_like(x), np.ones_like(x)
    A = np.concatenate([np.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y, -u], axis=1),
                        np.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y, -v], axis=1)])
    H = np.linalg.svd(A)[2][-1].reshape(3, 3)  # the right singular vector of the smallest value
    H = np.linalg.inv(Td) @ H @ Ts
    if not np.isfinite(H).all() or abs(H[2, 2]) < 1e-12 * np.abs(H).max():
        return None
    return H / H[2, 2]


def resize_matrix(size_from, size_to, dtype=torch.float64) -> torch.Tensor:
    """3x3 matrix taking pixel coordinates of an image of ``size_from`` (H, W) to the same image
    resized to ``size_to`` (pixel-centre convention: ``x' = (x + 0.5) * s - 0.5``)."""
    sy = size_to[0] / size_from[0]
    sx = size_to[1] / size_from[1]
    return torch.tensor([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]], dtype=dtype)


def crop_matrix(top: float, left: float, dtype=torch.float64) -> torch.Tensor:
    """3x3 matrix taking pixel coordinates to those of a crop whose top-left pixel is (left, top)."""
    return torch.tensor([[1.0, 0.0, -left], [0.0, 1.0, -top], [0.0, 0.0, 1.0]], dtype=dtype)


def conjugate_homography(H_a_to_b: torch.Tensor, T_a: torch.Tensor, T_b: torch.Tensor) -> torch.Tensor:
    """The homography between transformed images: ``T_b @ H_a_to_b @ T_a^-1``.

    ``T_a`` / ``T_b`` take pixel coordinates of A / B to those of the resized or cropped A' / B'
    (see :func:`resize_matrix`, :func:`crop_matrix`). Returns ``H_a'_to_b'``, normalised to H[2,2]=1.
    """
    T_a = T_a.to(H_a_to_b)
    T_b = T_b.to(H_a_to_b)
    H = T_b @ H_a_to_b @ torch.linalg.inv(T_a)
    return H / H[..., 2:3, 2:3]


# --------------------------------------------------------------------------------------------
# random homographies
# --------------------------------------------------------------------------------------------
def _truncated_normal(shape, std: float, generator, dtype=torch.float64) -> torch.Tensor:
    """Normal(0, std) truncated to +-2 std, by inverse CDF (works with any generator)."""
    lo = 0.5 * (1 + math.erf(-2 / math.sqrt(2)))
    u = lo + (1 - 2 * lo) * torch.rand(shape, generator=generator, dtype=dtype)
    return torch.special.ndtri(u) * std


def _pick_valid(candidates: torch.Tensor, valid: torch.Tensor, generator) -> torch.Tensor:
    """For each batch row pick one candidate uniformly among the valid ones.

    candidates: ``B x K x ...``; valid: ``B x K`` (at least one True per row).
    """
    weights = valid.double() + 1e-12 * (~valid.any(dim=1, keepdim=True)).double()
    idx = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    return candidates[torch.arange(candidates.shape[0]), idx]


def _all_inside(quads: torch.Tensor) -> torch.Tensor:
    """``... x 4 x 2`` normalised quads -> bool ``...``: every corner inside [0, 1]^2."""
    return ((quads >= 0) & (quads <= 1)).all(dim=-1).all(dim=-1)


def sample_homography(batch: int, size, params: Mapping | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample random homographies as in the paper's homographic adaptation.

    A square patch covering ``patch_ratio`` of the image is perturbed (perspective, scaling,
    translation, rotation, each optional); the returned homography maps that perturbed patch of
    image A onto the whole of image B, so ``warp_image(A, H, size)`` looks like a zoomed, rotated
    view of A. With ``allow_artifacts: false`` the patch stays inside A (no empty borders in B).

    Args:
        batch: number of homographies B.
        size: (H, W) of the images in pixels (A and B have the same size).
        params: keys of :data:`HOMOGRAPHY_DEFAULTS` (missing keys take those defaults).
        generator: a CPU ``torch.Generator`` for reproducibility.
    Returns:
        ``B x 3 x 3`` float32 ``H_a_to_b`` on the CPU.
    """
    p = dict(HOMOGRAPHY_DEFAULTS)
    if params:
        unknown = set(params) - set(p)
        if unknown:
            raise KeyError(f"unknown homography parameters: {sorted(unknown)} (known: {sorted(p)})")
        p.update(params)
    g = generator
    B = batch
    ratio = float(p["patch_ratio"])
    margin = (1 - ratio) / 2
    # corners in normalised coordinates, order: top-left, bottom-left, bottom-right, top-right
    unit = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    src = (margin + ratio * unit).expand(B, 4, 2).clone()

    artifacts = bool(p["allow_artifacts"])
    if p["perspective"]:
        amp_x, amp_y = float(p["perspective_amplitude_x"]), float(p["perspective_amplitude_y"])
        if not artifacts:
            amp_x, amp_y = min(amp_x, margin), min(amp_y, margin)
        dy = _truncated_normal((B,), amp_y / 2, g)
        dx_left = _truncated_normal((B,), amp_x / 2, g)
        dx_right = _truncated_normal((B,), amp_x / 2, g)
        src = src + torch.stack([
            torch.stack([dx_left, dy], -1), torch.stack([dx_left, -dy], -1),
            torch.stack([dx_right, dy], -1), torch.stack([dx_right, -dy], -1)], dim=1)

    if p["scaling"]:
        n = int(p["n_scales"])
        scales = torch.cat([torch.ones(B, 1, dtype=torch.float64),
                            1 + _truncated_normal((B, n), float(p["scaling_amplitude"]) / 2, g)], dim=1)
        center = src.mean(dim=1, keepdim=True)  # B 1 2
        scaled = (src - center).unsqueeze(1) * scales[..., None, None] + center.unsqueeze(1)  # B K 4 2
        valid = torch.ones_like(scales, dtype=torch.bool) if artifacts else _all_inside(scaled)
        src = _pick_valid(scaled, valid, g)

    if p["translation"]:
        lo, hi = src.min(dim=1).values, src.max(dim=1).values  # B 2
        overflow = float(p["translation_overflow"]) if artifacts else 0.0
        low = -lo - overflow
        high = 1 - hi + overflow
        t = low + (high - low) * torch.rand((B, 2), generator=g, dtype=torch.float64)
        src = src + t.unsqueeze(1)

    if p["rotation"]:
        n = int(p["n_angles"])
        max_angle = float(p["max_angle"])
        angles = torch.cat([torch.zeros(B, 1, dtype=torch.float64),
                            (2 * torch.rand((B, n), generator=g, dtype=torch.float64) - 1) * max_angle], dim=1)
        c, s = torch.cos(angles), torch.sin(angles)
        rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # B K 2 2
        center = src.mean(dim=1, keepdim=True)
        rotated = ((src - center).unsqueeze(1) @ rot.transpose(-1, -2)) + center.unsqueeze(1)  # B K 4 2
        valid = torch.ones_like(angles, dtype=torch.bool) if artifacts else _all_inside(rotated)
        src = _pick_valid(rotated, valid, g)

    h, w = size
    scale = torch.tensor([w - 1, h - 1], dtype=torch.float64)
    src_px = src * scale
    dst_px = unit.expand(B, 4, 2) * scale
    return homography_from_points(src_px, dst_px).float()


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------
def warp_image(image: torch.Tensor, H_a_to_b: torch.Tensor, size_b, mode: str = "bilinear") -> torch.Tensor:
    """Image A seen in B's frame.

    Args:
        image: ``B x C x Ha x Wa``; H_a_to_b: ``B x 3 x 3`` (or ``3 x 3``); size_b: (Hb, Wb).
        mode: 'bilinear' or 'nearest'. Outside A the result is 0.
    Returns:
        ``B x C x Hb x Wb``.
    """
    from kornia.geometry.transform import warp_perspective

    if H_a_to_b.dim() == 2:
        H_a_to_b = H_a_to_b.expand(image.shape[0], 3, 3)
    dtype = image.dtype
    out = warp_perspective(image.float(), H_a_to_b.to(image.device, torch.float32), dsize=tuple(size_b),
                           mode=mode, padding_mode="zeros", align_corners=True)
    return out.to(dtype)


def pixel_grid(size, device=None, dtype=torch.float32) -> torch.Tensor:
    """All pixel centres of an image of ``size`` (H, W) as an ``H x W x 2`` (x, y) grid."""
    h, w = size
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                            torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack([xs, ys], dim=-1)


def warped_valid_mask(H_a_to_b: torch.Tensor, size_a, size_b, border: int = 0) -> torch.Tensor:
    """Pixels of B that see a pixel of A, eroded by ``border`` pixels.

    Args:
        H_a_to_b: ``B x 3 x 3``. size_a / size_b: (H, W).
    Returns:
        ``B x 1 x Hb x Wb`` float mask in {0, 1}.
    """
    if H_a_to_b.dim() == 2:
        H_a_to_b = H_a_to_b.unsqueeze(0)
    B = H_a_to_b.shape[0]
    grid = pixel_grid(size_b, device=H_a_to_b.device, dtype=torch.float64).reshape(1, -1, 2)
    H_b_to_a = torch.linalg.inv(H_a_to_b.double())
    back = warp_points(grid.expand(B, -1, -1), H_b_to_a)
    h_a, w_a = size_a
    eps = 1e-6  # bilinear sampling outside the outermost pixel centres mixes in the zero padding
    inside = ((back[..., 0] >= -eps) & (back[..., 0] <= w_a - 1 + eps) &
              (back[..., 1] >= -eps) & (back[..., 1] <= h_a - 1 + eps))
    mask = inside.reshape(B, 1, *size_b).float()
    if border > 0:
        mask = erode(mask, border)
    return mask


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary erosion of a ``B x 1 x H x W`` {0,1} mask with a (2r+1)^2 square.

    Outside the image counts as valid: only the boundary between valid and invalid pixels moves,
    the image's own border stays valid (it is not an artefact of the warp, and the detector must be
    taught that it is no keypoint).
    """
    if radius <= 0:
        return mask
    k = 2 * radius + 1
    inv = F.pad(1 - mask, (radius,) * 4, value=0.0)
    return 1 - F.max_pool2d(inv, kernel_size=k, stride=1)


# --------------------------------------------------------------------------------------------
# two-view geometry (calibrated cameras, numpy)
# --------------------------------------------------------------------------------------------
# ``K`` is a 3 x 3 intrinsic matrix for the project's pixel convention; ``T_0to1`` a 4 x 4 rigid
# transform taking points of camera 0's frame into camera 1's: X1 = R X0 + t.
def scale_intrinsics(K, size_from, size_to) -> np.ndarray:
    """Intrinsics of an image of ``size_from`` (H, W) resized (stretched) to ``size_to``.

    ``resize_matrix(size_from, size_to) @ K``: exact under the pixel-centre convention
    (``fx' = fx * sx``, ``cx' = (cx + 0.5) * sx - 0.5``, likewise y). Returns float64 3 x 3.
    """
    return resize_matrix(size_from, size_to).numpy() @ np.asarray(K, dtype=np.float64)


def normalize_points(points, K) -> np.ndarray:
    """Pixels ``N x 2`` -> normalised camera coordinates ``N x 2`` (``K^-1 [x, y, 1]``, z dropped)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    K = np.asarray(K, dtype=np.float64)
    homog = np.concatenate([p, np.ones((len(p), 1))], axis=1) @ np.linalg.inv(K).T
    return homog[:, :2] / homog[:, 2:3]


def essential_matrix(T_0to1) -> np.ndarray:
    """``E = [t]_x R`` of a 4 x 4 relative pose: ``x1^T E x0 = 0`` for normalised points."""
    T = np.asarray(T_0to1, dtype=np.float64)
    t = T[:3, 3]
    t_x = np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])
    return t_x @ T[:3, :3]


def symmetric_epipolar_error(points0, points1, K0, K1, T_0to1) -> np.ndarray:
    """Squared symmetric epipolar distance of matches, in normalised camera coordinates.

    For normalised matches x0, x1 (``N x 2`` pixels in, ``N`` out):
    ``d = (x1^T E x0)^2 * (1 / |(E x0)_12|^2 + 1 / |(E^T x1)_12|^2)``, i.e. the squared distance of
    x1 to the epipolar line of x0 plus that of x0 to the line of x1 (SuperGlue's definition; its
    correctness threshold is 5e-4). Degenerate lines (zero normal) give inf.
    """
    x0 = normalize_points(points0, K0)
    x1 = normalize_points(points1, K1)
    x0 = np.concatenate([x0, np.ones((len(x0), 1))], axis=1)
    x1 = np.concatenate([x1, np.ones((len(x1), 1))], axis=1)
    E = essential_matrix(T_0to1)
    Ex0 = x0 @ E.T         # N x 3: epipolar lines in image 1
    Etx1 = x1 @ E          # N x 3: epipolar lines in image 0
    num = np.sum(x1 * Ex0, axis=1) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        d = num * (1.0 / (Ex0[:, 0] ** 2 + Ex0[:, 1] ** 2) + 1.0 / (Etx1[:, 0] ** 2 + Etx1[:, 1] ** 2))
    return np.where(np.isfinite(d), d, np.inf)


def rotation_angle_error(R_est, R_true) -> float:
    """Angle (degrees) of the rotation taking ``R_est`` to ``R_true``: ``acos((tr(R_est^T R_true) - 1) / 2)``."""
    c = (np.trace(np.asarray(R_est, np.float64).T @ np.asarray(R_true, np.float64)) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def translation_angle_error(t_est, t_true) -> float:
    """Angle (degrees) between two translation directions, sign-free: ``min(a, 180 - a)``.

    The essential matrix fixes the translation only up to scale and sign; a zero vector gives 90
    (no direction is known). SuperGlue / LoFTR fold the angle the same way.
    """
    a = np.asarray(t_est, np.float64).reshape(3)
    b = np.asarray(t_true, np.float64).reshape(3)
    n = np.linalg.norm(a) * np.linalg.norm(b)
    if not n > 0:
        return 90.0
    angle = float(np.degrees(np.arccos(np.clip(a @ b / n, -1.0, 1.0))))
    return min(angle, 180.0 - angle)
