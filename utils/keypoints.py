"""Keypoints: label maps <-> 65-channel cells, heatmaps, NMS, extraction, descriptor sampling.

Conventions: points are (x, y) pixels with the centre of the top-left pixel at (0, 0). A
65-channel map holds the 64 pixels of an 8x8 cell in row-major order (channel = 8*dy + dx)
followed by the "no keypoint" dustbin at index 64. Everything is batched and device-agnostic.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

CELL = 8


# --------------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------------
def keypoints_to_map(points: torch.Tensor, size, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Rasterise keypoints into a binary map (each point to its nearest pixel).

    Args:
        points: ``B x N x 2`` (x, y); size: (H, W); mask: optional ``B x N`` bool of real points
            (for padded batches). Points outside the image are dropped.
    Returns:
        ``B x 1 x H x W`` float map in {0, 1}.
    """
    B, N = points.shape[:2]
    h, w = size
    out = torch.zeros(B, h * w, device=points.device, dtype=torch.float32)
    if N == 0:
        return out.view(B, 1, h, w)
    ij = torch.round(points).long()
    x, y = ij[..., 0], ij[..., 1]
    keep = (x >= 0) & (x < w) & (y >= 0) & (y < h) & torch.isfinite(points).all(-1)
    if mask is not None:
        keep &= mask.bool()
    flat = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1))
    out.scatter_reduce_(1, flat, keep.float(), reduce="amax")
    return out.view(B, 1, h, w)


def gaussian_label_map(label_map: torch.Tensor, sigma: float) -> torch.Tensor:
    """Soft label heatmap: a Gaussian of std ``sigma`` px with peak 1 at each keypoint.

    Args:
        label_map: ``B x 1 x H x W`` binary keypoint map. Returns the same shape, values in [0, 1].
    """
    if sigma <= 0:
        return label_map
    radius = max(1, int(math.ceil(3 * sigma)))
    coords = torch.arange(-radius, radius + 1, device=label_map.device, dtype=torch.float32)
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))  # peak 1, separable
    out = F.conv2d(label_map.float(), g.view(1, 1, 1, -1), padding=(0, radius))
    out = F.conv2d(out, g.view(1, 1, -1, 1), padding=(radius, 0))
    return out.clamp(max=1.0)


def cell_targets(label_map: torch.Tensor, cell: int = CELL) -> torch.Tensor:
    """65-channel training targets from a (binary or soft) keypoint map.

    Each cell's 64 pixel values plus a dustbin of ``max(0, 1 - sum)`` are normalised to sum to 1:
    one keypoint gives a one-hot target, two share the mass, an empty cell is all dustbin.

    Args:
        label_map: ``B x 1 x H x W`` with H, W multiples of ``cell``.
    Returns:
        ``B x 65 x H/8 x W/8``.
    """
    x = F.pixel_unshuffle(label_map.float(), cell)
    dustbin = (1 - x.sum(dim=1, keepdim=True)).clamp(min=0)
    t = torch.cat([x, dustbin], dim=1)
    return t / t.sum(dim=1, keepdim=True).clamp(min=1e-12)


def cell_valid_mask(valid: torch.Tensor, cell: int = CELL) -> torch.Tensor:
    """A cell counts in the loss only if all its pixels are valid.

    Args: valid ``B x 1 x H x W`` in {0, 1}. Returns ``B x H/8 x W/8``.
    """
    return F.pixel_unshuffle(valid.float(), cell).amin(dim=1)


def semi_to_heatmap(semi: torch.Tensor, cell: int = CELL) -> torch.Tensor:
    """Cell logits ``B x 65 x Hc x Wc`` -> keypoint probability ``B x 1 x Hc*8 x Wc*8``."""
    prob = torch.softmax(semi.float(), dim=1)[:, :-1]
    return F.pixel_shuffle(prob, cell)


# --------------------------------------------------------------------------------------------
# non-maximum suppression
# --------------------------------------------------------------------------------------------
def _window_max_1d(x: torch.Tensor, dim: int, radius: int) -> torch.Tensor:
    """Max over ``[i - r, i + r]`` along ``dim`` (outside the tensor counts as -inf).

    Doubling: after step j each entry holds the max of 2^j neighbours, so a window of 2r+1 takes
    about log2(2r+1) element-wise maxima (much faster on CPU than ``max_pool2d``).
    """
    n = x.shape[dim]
    pad = [0, 0] * (x.dim() - 1 - (dim % x.dim())) + [radius, radius]
    m = F.pad(x, pad, value=float("-inf"))
    width, k = 1, 2 * radius + 1
    while 2 * width <= k:
        length = m.shape[dim] - width
        m = torch.maximum(m.narrow(dim, 0, length), m.narrow(dim, width, length))
        width *= 2
    rest = k - width
    if rest:
        length = m.shape[dim] - rest
        m = torch.maximum(m.narrow(dim, 0, length), m.narrow(dim, rest, length))
    return m.narrow(dim, 0, n)


def _max_pool(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Max over a (2r+1)^2 square window (same size as ``x``), separable: rows, then columns."""
    return _window_max_1d(_window_max_1d(x, -1, radius), -2, radius)


def _rank_dtype(n: int) -> torch.dtype:
    # ranks are compared as floats (max-pool needs a float map on every device): exact below 2^24
    return torch.float32 if n < 2 ** 24 else torch.float64


def _sorted_candidates(flat: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices and scores of ``flat >= threshold``, by decreasing score, ties by index."""
    cand = torch.nonzero(flat >= threshold).squeeze(1)  # ascending index = (b, row-major)
    scores = flat[cand]
    order = torch.sort(scores, descending=True, stable=True).indices  # ties keep index order
    return cand[order], scores[order]


# Above this many (window element x unresolved candidate) pairs per pixel of the image, a dense
# max-pool round over the whole map is cheaper than gathering windows around the candidates.
_DENSE_ROUND_RATIO = 4.0


def greedy_nms_indices(heat: torch.Tensor, radius: int, threshold: float = 0.0) -> torch.Tensor:
    """Exact greedy NMS; returns the flat indices (into ``B*H*W``) of the kept points.

    Greedy NMS (as in MagicLeap's front end) visits candidates (``heat >= threshold``) by
    decreasing score and keeps one unless a kept point lies within the (2r+1)^2 square around it;
    equal scores are visited in row-major order. The same set is computed in parallel rounds: a
    candidate ranking highest among the unresolved candidates of its window is kept and its window
    is suppressed; the rest stay unresolved. Work is restricted to the candidates: each round
    gathers the windows of the still-unresolved ones from a padded rank map (a dense max-pool
    round is used instead while they are too many for that to pay off). The number of rounds is
    the length of the longest chain of overlapping windows with decreasing scores.

    Args:
        heat: ``B x 1 x H x W`` scores; radius >= 0 (0 keeps every candidate).
    Returns:
        int64 indices into ``heat.reshape(-1)``, ordered by decreasing score (ties: lower index
        first), i.e. in the order greedy NMS keeps them.
    """
    B, _, H, W = heat.shape
    flat = heat.reshape(-1)
    cand, _ = _sorted_candidates(flat, threshold)
    n = cand.numel()
    if radius <= 0 or n == 0:
        return cand
    r = int(radius)
    dev = heat.device
    hp, wp = H + 2 * r, W + 2 * r
    b, rem = torch.div(cand, H * W, rounding_mode="floor"), cand % (H * W)
    y, x = torch.div(rem, W, rounding_mode="floor"), rem % W
    pos = b * (hp * wp) + (y + r) * wp + (x + r)  # candidate i (rank n - i) in the padded map
    ranks = torch.zeros(B * hp * wp, device=dev, dtype=_rank_dtype(n))
    ranks[pos] = torch.arange(n, 0, -1, device=dev, dtype=ranks.dtype)
    d = torch.arange(-r, r + 1, device=dev)
    offsets = (d[:, None] * wp + d[None, :]).reshape(-1)  # the (2r+1)^2 window, row-major
    k = offsets.numel()
    unresolved = torch.arange(n, device=dev)  # candidate ids, ascending = decreasing score
    kept = []
    while unresolved.numel():
        p = pos[unresolved]
        if unresolved.numel() * k > _DENSE_ROUND_RATIO * ranks.numel():
            grid = ranks.view(B, 1, hp, wp)
            is_max_map = (grid > 0) & (grid == _max_pool(grid, r))
            is_max = is_max_map.view(-1)[p]
            sup = _max_pool(is_max_map.to(ranks.dtype), r).view(-1) > 0
            ranks.masked_fill_(sup, 0)
        else:
            own = ranks[p]
            is_max = ranks[p[:, None] + offsets].amax(dim=1) == own
            ranks[(p[is_max, None] + offsets).reshape(-1)] = 0
        kept.append(unresolved[is_max])
        unresolved = unresolved[~is_max]
        unresolved = unresolved[ranks[pos[unresolved]] > 0]
    ids = torch.sort(torch.cat(kept)).values
    return cand[ids]


def nms(heat: torch.Tensor, radius: int, threshold: float = 0.0) -> torch.Tensor:
    """Exact greedy non-maximum suppression on a heatmap, batched and on any device.

    See :func:`greedy_nms_indices` for the rule (decreasing score, ties by row-major position).

    Args:
        heat: ``B x 1 x H x W`` scores; radius: NMS radius in pixels (0 keeps every candidate).
    Returns:
        ``B x 1 x H x W`` bool map of kept points.
    """
    if radius <= 0:
        return heat >= threshold
    kept = torch.zeros(heat.numel(), dtype=torch.bool, device=heat.device)
    kept[greedy_nms_indices(heat, radius, threshold)] = True
    return kept.view(heat.shape)


# --------------------------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------------------------
class Keypoints(NamedTuple):
    """A padded batch of keypoints, sorted by decreasing score within each image.

    points ``B x K x 2`` (x, y) float; scores ``B x K``; mask ``B x K`` bool (False = padding).
    """

    points: torch.Tensor
    scores: torch.Tensor
    mask: torch.Tensor

    def to_list(self) -> list[torch.Tensor]:
        """Per image an ``N_i x 3`` tensor (x, y, score)."""
        out = []
        for p, s, m in zip(self.points, self.scores, self.mask):
            out.append(torch.cat([p[m], s[m, None]], dim=1))
        return out


def extract_keypoints(heat: torch.Tensor, threshold: float, nms_radius: int, border: int = 0,
                      top_k: int | None = None, subpixel: bool = False, patch_size: int = 5) -> Keypoints:
    """Heatmap -> keypoints: threshold, NMS, border removal, top-k, optional subpixel refinement.

    Args:
        heat: ``B x 1 x H x W`` probabilities.
        threshold: keep scores ``>= threshold``.
        nms_radius: see :func:`nms` (applied to all candidates, before border removal).
        border: drop points closer than ``border`` pixels to the image edge (after NMS).
        top_k: keep at most this many per image (None or <= 0: all).
        subpixel: refine each position by :func:`soft_argmax_refine` over a ``patch_size`` patch.
    Returns:
        :class:`Keypoints` with K = min(top_k, most points in any image of the batch); within an
        image by decreasing score, equal scores in row-major order.
    """
    B, _, H, W = heat.shape
    dev = heat.device
    idx = greedy_nms_indices(heat, nms_radius, threshold)  # by decreasing score over the batch
    b, rem = torch.div(idx, H * W, rounding_mode="floor"), idx % (H * W)
    y, x = torch.div(rem, W, rounding_mode="floor"), rem % W
    if border > 0:
        inside = (x >= border) & (x <= W - 1 - border) & (y >= border) & (y <= H - 1 - border)
        idx, b, x, y = idx[inside], b[inside], x[inside], y[inside]
    # group by image, keeping the score order inside each image
    order = torch.sort(b, stable=True).indices
    idx, b, x, y = idx[order], b[order], x[order], y[order]
    counts = torch.bincount(b, minlength=B)
    slot = torch.arange(b.numel(), device=dev) - (torch.cumsum(counts, 0) - counts)[b]
    k = int(counts.max()) if B and b.numel() else 0
    if top_k is not None and top_k > 0:
        k = min(k, int(top_k))
        keep = slot < k
        idx, b, x, y, slot = idx[keep], b[keep], x[keep], y[keep], slot[keep]
    points = torch.zeros(B, k, 2, device=dev, dtype=torch.float32)
    scores = torch.zeros(B, k, device=dev, dtype=torch.float32)
    mask = torch.zeros(B, k, device=dev, dtype=torch.bool)
    points[b, slot] = torch.stack([x, y], dim=-1).float()
    scores[b, slot] = heat.reshape(-1)[idx].float()
    mask[b, slot] = True
    if subpixel and k:
        points = torch.where(mask[..., None], soft_argmax_refine(heat, points, patch_size), points)
    return Keypoints(points, scores, mask)


def soft_argmax_refine(heat: torch.Tensor, points: torch.Tensor, patch_size: int = 5) -> torch.Tensor:
    """Sub-pixel positions: the heat-weighted mean position in a square patch around each point.

    Args:
        heat: ``B x 1 x H x W`` (non-negative); points: ``B x N x 2`` integer-valued (x, y);
        patch_size: odd side of the patch.
    Returns:
        ``B x N x 2`` refined points (the offset stays within the patch).
    """
    B, _, H, W = heat.shape
    r = patch_size // 2
    padded = F.pad(heat.float(), (r, r, r, r)).view(B, -1)
    Wp = W + 2 * r
    d = torch.arange(-r, r + 1, device=heat.device)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    dx, dy = dx.reshape(-1), dy.reshape(-1)  # P
    xi = points[..., 0].round().long().clamp(0, W - 1)
    yi = points[..., 1].round().long().clamp(0, H - 1)
    idx = (yi[..., None] + r + dy) * Wp + (xi[..., None] + r + dx)  # B N P
    vals = torch.gather(padded, 1, idx.view(B, -1)).view(*idx.shape).clamp(min=0)
    total = vals.sum(-1).clamp(min=1e-12)
    off_x = (vals * dx).sum(-1) / total
    off_y = (vals * dy).sum(-1) / total
    return torch.stack([xi + off_x, yi + off_y], dim=-1)


# --------------------------------------------------------------------------------------------
# descriptors
# --------------------------------------------------------------------------------------------
def pixels_to_descriptor_grid(points: torch.Tensor, coarse_size, cell: int = CELL) -> torch.Tensor:
    """Pixel (x, y) -> ``grid_sample`` coordinates in [-1, 1] on a ``Hc x Wc`` descriptor map.

    Descriptor j of a row covers pixels ``8j .. 8j+7`` and sits at their centre ``8j + 3.5``, so the
    coarse coordinate of pixel x is ``u = (x - 3.5) / 8``; with ``align_corners=True`` the
    normalised coordinate is ``2u / (Wc - 1) - 1`` (and the same for y).
    """
    hc, wc = coarse_size
    u = (points[..., 0] - (cell - 1) / 2) / cell
    v = (points[..., 1] - (cell - 1) / 2) / cell
    gx = 2 * u / max(wc - 1, 1) - 1
    gy = 2 * v / max(hc - 1, 1) - 1
    return torch.stack([gx, gy], dim=-1)


def sample_descriptors(desc: torch.Tensor, points: torch.Tensor, cell: int = CELL) -> torch.Tensor:
    """Bilinearly interpolate the coarse descriptor map at pixel positions, then L2-normalise.

    Args:
        desc: ``B x D x Hc x Wc``; points: ``B x N x 2`` (x, y) pixels.
    Returns:
        ``B x N x D`` unit descriptors.
    """
    B, D, hc, wc = desc.shape
    if points.shape[1] == 0:
        return desc.new_zeros(B, 0, D)
    grid = pixels_to_descriptor_grid(points.to(desc.dtype), (hc, wc), cell).view(B, 1, -1, 2)
    out = F.grid_sample(desc, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return F.normalize(out.view(B, D, -1).transpose(1, 2), p=2, dim=-1)
