"""Photometric and homographic augmentation of image batches, in torch, on any device.

Images are ``B x 1 x H x W`` float in [0, 1]. Parameters follow the paper's code, whose
intensities are on the 0-255 scale (``max_abs_change: 50`` means +-50/255). Every random draw
comes from the :class:`Randomness` passed in, so a batch's augmentation is fixed by its seed.

Per-sample draws and several processes: every per-sample draw is made for the whole *global*
batch of the step (all processes together) and each process keeps the rows of its own samples
(:attr:`Randomness.rows`). A sample's augmentation therefore depends only on the step's seed and
the sample's position in the global batch, so ``N`` processes with batch ``B`` augment exactly
like one process with batch ``N * B`` (what distributed training needs to match single-process
training). With ``rows=None`` the batch is the global batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from utils.geometry import sample_homography, warp_image, warp_points, warped_valid_mask


@dataclass
class Randomness:
    """A CPU generator for parameters and a device generator for per-pixel noise.

    ``rows`` (``B`` int64, optional) are the positions of this process's samples in a global batch
    of ``global_batch`` samples; per-sample draws are made for the global batch and these rows kept.
    Draws shared by the whole batch (e.g. the order of the photometric primitives) are made once.
    """

    cpu: torch.Generator
    device: torch.Generator
    rows: torch.Tensor | None = None
    global_batch: int | None = None

    @classmethod
    def from_seed(cls, seed: int, device: torch.device, rows: torch.Tensor | None = None,
                  global_batch: int | None = None) -> "Randomness":
        cpu = torch.Generator().manual_seed(int(seed))
        dev = torch.Generator(device=device).manual_seed(int(seed) + 1) if device.type != "cpu" else cpu
        if rows is not None:
            rows = torch.as_tensor(rows, dtype=torch.long).cpu()
            if global_batch is None or rows.numel() == 0 or int(rows.max()) >= global_batch or int(rows.min()) < 0:
                raise ValueError(f"Randomness: rows {rows.tolist()} must lie in [0, global_batch={global_batch})")
        return cls(cpu, dev, rows, global_batch)

    # ---- per-sample draws: the leading dimension is the (local) batch
    def _global(self, batch: int) -> int:
        if self.rows is None:
            return batch
        if batch != self.rows.numel():
            raise ValueError(f"Randomness: a per-sample draw for {batch} samples, but this process has "
                             f"{self.rows.numel()} rows of the global batch")
        return int(self.global_batch)

    def _mine(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.rows is None else x[self.rows.to(x.device)]

    def rand(self, batch: int, *shape: int) -> torch.Tensor:
        """``batch x *shape`` draws of U(0, 1) (float32, CPU), one row per sample."""
        return self._mine(torch.rand((self._global(batch), *shape), generator=self.cpu))

    def randint(self, low: int, high: int, batch: int, *shape: int) -> torch.Tensor:
        """``batch x *shape`` integers in [low, high) (int64, CPU), one row per sample."""
        return self._mine(torch.randint(low, high, (self._global(batch), *shape), generator=self.cpu))

    def uniform(self, n: int, low: float, high: float, device) -> torch.Tensor:
        """One draw of U(low, high) per sample (``n`` = batch size) as a float32 tensor on ``device``."""
        return (low + (high - low) * self.rand(n)).to(device)

    def rand_like(self, x: torch.Tensor) -> torch.Tensor:
        """U(0, 1) of ``x``'s shape (first dimension = batch) on ``x``'s device."""
        shape = (self._global(x.shape[0]), *x.shape[1:])
        return self._mine(torch.rand(shape, generator=self.device, device=x.device, dtype=torch.float32))

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        shape = (self._global(x.shape[0]), *x.shape[1:])
        return self._mine(torch.randn(shape, generator=self.device, device=x.device, dtype=torch.float32))

    def homographies(self, batch: int, size, params: dict) -> torch.Tensor:
        """``batch x 3 x 3`` random homographies (:func:`utils.geometry.sample_homography`, CPU)."""
        return self._mine(sample_homography(self._global(batch), size, params, generator=self.cpu))

    # ---- draws shared by the whole batch
    def permutation(self, n: int) -> list[int]:
        return torch.randperm(n, generator=self.cpu).tolist()


# --------------------------------------------------------------------------------------------
# photometric primitives: (images, rng, **params) -> images
# --------------------------------------------------------------------------------------------
def random_brightness(img, rng: Randomness, max_abs_change: float = 50.0):
    delta = rng.uniform(img.shape[0], -max_abs_change, max_abs_change, img.device) / 255.0
    return (img + delta.view(-1, 1, 1, 1)).clamp(0, 1)


def random_contrast(img, rng: Randomness, strength_range=(0.5, 1.5)):
    factor = rng.uniform(img.shape[0], *strength_range, img.device).view(-1, 1, 1, 1)
    mean = img.mean(dim=(1, 2, 3), keepdim=True)
    return ((img - mean) * factor + mean).clamp(0, 1)


def additive_gaussian_noise(img, rng: Randomness, stddev_range=(0.0, 10.0)):
    std = rng.uniform(img.shape[0], *stddev_range, img.device).view(-1, 1, 1, 1) / 255.0
    return (img + std * rng.randn_like(img)).clamp(0, 1)


def additive_speckle_noise(img, rng: Randomness, prob_range=(0.0, 0.0035)):
    """Salt and pepper: each pixel turns black with probability p and white with probability p."""
    p = rng.uniform(img.shape[0], *prob_range, img.device).view(-1, 1, 1, 1)
    u = rng.rand_like(img)
    img = torch.where(u <= p, torch.zeros_like(img), img)
    return torch.where(u >= 1 - p, torch.ones_like(img), img)


def _gaussian_kernel1d(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """``B x (2r+1)`` normalised Gaussian kernels, one sigma per row."""
    x = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float32)
    k = torch.exp(-x[None] ** 2 / (2 * sigma[:, None] ** 2))
    return k / k.sum(dim=1, keepdim=True)


def _opencv_sigma(ksize):
    """The sigma OpenCV gives a Gaussian kernel of size ``ksize`` (number or tensor)."""
    return 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8


def _blur_per_image(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``B x 1 x H x W`` with one sigma per image (zero padding).

    The kernels reach ``3 * max_sigma`` (a bound from the parameters, not the batch's largest
    sigma), so an image's blur does not depend on the other images of its batch."""
    B = x.shape[0]
    radius = max(1, int(math.ceil(3 * max_sigma)))
    k = _gaussian_kernel1d(sigma, radius)
    y = F.conv2d(x.transpose(0, 1), k.view(B, 1, 1, -1), padding=(0, radius), groups=B)
    y = F.conv2d(y, k.view(B, 1, -1, 1), padding=(radius, 0), groups=B)
    return y.transpose(0, 1)


def additive_shade(img, rng: Randomness, nb_ellipses: int = 20, transparency_range=(-0.5, 0.8),
                   kernel_size_range=(100, 150)):
    """Darken (or lighten) the image under a blurred random set of ellipses."""
    B, _, H, W = img.shape
    dev = img.device
    min_dim = min(H, W) / 4
    n = B * nb_ellipses
    ax = torch.maximum(rng.rand(B, nb_ellipses).view(n) * min_dim, torch.tensor(min_dim / 5))
    ay = torch.maximum(rng.rand(B, nb_ellipses).view(n) * min_dim, torch.tensor(min_dim / 5))
    max_rad = torch.maximum(ax, ay)
    cx = max_rad + rng.rand(B, nb_ellipses).view(n) * (W - 2 * max_rad).clamp(min=0)
    cy = max_rad + rng.rand(B, nb_ellipses).view(n) * (H - 2 * max_rad).clamp(min=0)
    angle = rng.rand(B, nb_ellipses).view(n) * math.pi
    # The mask is smooth after the large blur, so draw and blur it at 1/4 resolution.
    f = 4
    h, w = max(1, H // f), max(1, W // f)
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32) * f,
                            torch.arange(w, device=dev, dtype=torch.float32) * f, indexing="ij")
    params = [t.to(dev).view(B, nb_ellipses, 1, 1) for t in (cx, cy, ax, ay, angle)]
    cx, cy, ax, ay, angle = params
    dx, dy = xs - cx, ys - cy
    u = dx * torch.cos(angle) + dy * torch.sin(angle)
    v = -dx * torch.sin(angle) + dy * torch.cos(angle)
    mask = ((u / ax) ** 2 + (v / ay) ** 2 <= 1).any(dim=1, keepdim=True).float()  # B 1 h w
    ksize = rng.randint(kernel_size_range[0], kernel_size_range[1] + 1, B)
    sigma = (_opencv_sigma(ksize.float()) / f).to(dev).clamp(min=0.5)
    mask = _blur_per_image(mask, sigma, max(0.5, _opencv_sigma(kernel_size_range[1]) / f))
    mask = F.interpolate(mask, size=(H, W), mode="bilinear", align_corners=False)
    transparency = rng.uniform(B, *transparency_range, dev).view(-1, 1, 1, 1)
    return (img * (1 - transparency * mask)).clamp(0, 1)


def motion_blur(img, rng: Randomness, max_kernel_size: int = 3):
    """Blur along a random direction (horizontal, vertical or a diagonal) with a random length."""
    B = img.shape[0]
    dev = img.device
    K = 2 * ((max_kernel_size + 1) // 2) - 1 if max_kernel_size > 1 else 1  # largest odd size
    K = max(K, 1)
    sizes = rng.randint(0, (max_kernel_size + 1) // 2, B) * 2 + 1  # odd
    modes = rng.randint(0, 4, B)
    c = K // 2
    r = torch.arange(K, dtype=torch.float32) - c
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    lines = torch.stack([(yy == 0), (xx == 0), (yy == xx), (yy == -xx)]).float()  # 4 K K
    kernels = lines[modes]  # B K K
    half = ((sizes - 1) // 2).float().view(B, 1, 1)
    inside = (xx.abs() <= half) & (yy.abs() <= half)
    var = (sizes.float() ** 2 / 16).view(B, 1, 1)
    window = torch.exp(-(xx ** 2 + yy ** 2) / (2 * var))
    kernels = kernels * inside * window
    kernels = kernels / kernels.sum(dim=(1, 2), keepdim=True)
    x = F.pad(img.transpose(0, 1), (c, c, c, c), mode="replicate")
    out = F.conv2d(x, kernels.to(dev).unsqueeze(1), groups=B)
    return out.transpose(0, 1).clamp(0, 1)


PHOTOMETRIC = {
    "random_brightness": random_brightness,
    "random_contrast": random_contrast,
    "additive_gaussian_noise": additive_gaussian_noise,
    "additive_speckle_noise": additive_speckle_noise,
    "additive_shade": additive_shade,
    "motion_blur": motion_blur,
}


def photometric_augmentation(img: torch.Tensor, config: dict, rng: Randomness) -> torch.Tensor:
    """Apply the configured photometric primitives in a random order.

    Args:
        img: ``B x 1 x H x W`` in [0, 1]. config: ``data.augmentation.photometric`` of a merged
            config (every primitive's ``params`` present).
    """
    names = list(config["primitives"])
    unknown = [n for n in names if n not in PHOTOMETRIC]
    if unknown:
        raise ValueError(f"data.augmentation.photometric.primitives: unknown {unknown} "
                         f"(expected some of {', '.join(PHOTOMETRIC)})")
    order = rng.permutation(len(names))  # one order for the whole batch
    params = config["params"]
    out = img.float()
    for i in order:
        name = names[i]
        out = PHOTOMETRIC[name](out, rng, **params[name])
    return out


# --------------------------------------------------------------------------------------------
# homographic
# --------------------------------------------------------------------------------------------
def random_warp(img: torch.Tensor, keypoints: torch.Tensor, valid: torch.Tensor, params: dict,
                border: int, rng: Randomness):
    """Warp each image (and its keypoints and valid mask) by its own random homography.

    Args:
        img: ``B x 1 x H x W``; keypoints: ``B x N x 2``; valid: ``B x 1 x H x W`` mask of pixels
        that carry content; params: homography parameters; border: valid-mask erosion in pixels.
    Returns:
        (warped image, warped keypoints ``B x N x 2`` (may fall outside), warped valid mask,
        ``B x 3 x 3`` homographies from input to output).
    """
    B, _, H, W = img.shape
    Hs = rng.homographies(B, (H, W), params).to(img.device)
    warped = warp_image(img, Hs, (H, W))
    pts = warp_points(keypoints.double(), Hs.double()).float() if keypoints.numel() else keypoints
    mask = warped_valid_mask(Hs, (H, W), (H, W), border=border)
    if not bool((valid > 0.5).all()):  # carry an already partial mask along
        mask = mask * (warp_image(valid.float(), Hs, (H, W), mode="nearest") > 0.5).float()
    return warped, pts, mask, Hs
