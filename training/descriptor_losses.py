"""Descriptor losses of joint training: dense (the paper's hinge loss over all cell pairs),
sparse (sampled correspondences, contrastive hinge) and InfoNCE (sampled correspondences, each
against every non-matching cell).

All compare the coarse descriptor maps of an image A and of its warp B (``H`` maps A's pixels
into B). Cell ``(i, j)`` of an 8x8 grid has its centre at pixel ``(8j + 3.5, 8i + 3.5)`` (the
convention of :func:`utils.keypoints.pixels_to_descriptor_grid`); cells are numbered row-major.
Everything is computed in float32 with autocast disabled (safe under bf16/fp16 training).

Dense loss, per image (the paper, eq. 5-6)::

    s_ij = 1  if || H c_i - c_j || <= descriptor_dist   (c = cell centres in pixels) else 0
    l_ij = lambda_d * s_ij * max(0, m_p - d_i . d'_j) + (1 - s_ij) * max(0, d_i . d'_j - m_n)
    L    = sum_{i valid in A, j valid in B} l_ij / (n_valid_A * n_valid_B)

i.e. the mean over all counted cell pairs (with every cell valid this is the paper's
``1 / (Hc Wc)^2`` normalisation); the batch loss is the mean of the per-image losses. A cell is
valid when all its pixels are (the valid masks of ``datasets.pairs``). The ``Hc Wc x Hc Wc``
dot products are computed by matrix products (never the ``B x Hc x Wc x Hc x Wc x D`` product a
naive implementation builds); when the ``B x Hc Wc x Hc Wc`` table itself is too large it is
computed over chunks of A's cells, each chunk recomputed in the backward pass (activation
checkpointing), so memory holds one chunk at a time.

Sparse loss, per image (a batched form of the reference implementation's sparse loss)::

    matches   M cells i of A, drawn without replacement among those whose centre lands inside
              B's valid area at p_i = H c_i; descriptor of B at p_i: bilinear at the exact
              position, L2-normalised (method 2d) or the nearest cell's (method 1d)
    negatives K cells j of B per match, uniform over B's valid cells whose centre is farther
              than one cell (8 px) from p_i
    cos: pos = mean_i max(0, 1 - d_i . d'(p_i)),       neg_ij = max(0, d_i . d'_j - 0.2)
    l2:  pos = mean_i ||d_i - d'(p_i)||^2,             neg_ij = max(0, sqrt(1.6) - ||d_i - d'_j||)^2
    neg = sum_ij neg_ij / (number of neg_ij > 0, + 1)   ("hard negatives" mean, as the reference)
    L   = lamda_d * pos + neg

InfoNCE loss, per image (:func:`infonce_descriptor_loss`; matches drawn as for the sparse loss)::

    for each match i:  -log( e^(d_i . d'(p_i) / t) / (e^(d_i . d'(p_i) / t) + sum_j e^(d_i . d'_j / t)) )
              j over B's valid cells farther than one cell from p_i; the same from B to A; averaged

(``sqrt(2 - 2 * 0.2)`` is the L2 distance of unit vectors with cosine 0.2, so both variants put
the negative margin at the same place.) The draws are made in ``datasets``-side preparation
with the step's :class:`datasets.augmentation.Randomness` (see :func:`sample_sparse_pairs`), so
the loss itself is deterministic.
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from utils.geometry import inside_image, pixel_grid, warp_points
from utils.keypoints import CELL, cell_valid_mask, sample_descriptors


def _fp32(fn):
    """Run a loss with autocast off (it casts its inputs to float32), whatever the caller's precision."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        types = sorted({a.device.type for a in args if isinstance(a, torch.Tensor)} or {"cpu"})
        with contextlib.ExitStack() as stack:
            for t in types:
                stack.enter_context(torch.autocast(t, enabled=False))
            return fn(*args, **kwargs)

    return wrapper


def cell_centers(coarse_size, device=None, cell: int = CELL) -> torch.Tensor:
    """Pixel centres of the cells of a ``Hc x Wc`` grid, row-major: ``Hc*Wc x 2`` (x, y) float32."""
    return (pixel_grid(coarse_size, device=device, dtype=torch.float64) * cell + (cell - 1) / 2).reshape(-1, 2).float()


def warp_cell_centers(homography: torch.Tensor, coarse_size, cell: int = CELL) -> torch.Tensor:
    """Cell centres of A mapped into B: ``B x Hc*Wc x 2`` float32 (computed in float64).

    Centres that go to infinity are returned as a far-away finite value (they match nothing)."""
    c = cell_centers(coarse_size, homography.device, cell).double()
    H = homography.double()
    w = warp_points(c.unsqueeze(0).expand(H.shape[0], -1, -1), H)
    return torch.nan_to_num(w, nan=1e9, posinf=1e9, neginf=-1e9).clamp(-1e9, 1e9).float()


def _cell_mask(valid: torch.Tensor | None, B: int, n: int, device) -> torch.Tensor:
    """``B x 1 x H x W`` pixel mask (or None) -> ``B x n`` float cell mask."""
    if valid is None:
        return torch.ones(B, n, device=device)
    return cell_valid_mask(valid).reshape(B, -1).float()


# --------------------------------------------------------------------------------------------
# dense
# --------------------------------------------------------------------------------------------
# automatic chunks of the dense loss: at most this many elements per B x rows x cells table
# (2^24 floats = 64 MB; the loss holds about six such tables per chunk)
DENSE_CHUNK_ELEMENTS = 2 ** 24


def _dense_chunk(a: torch.Tensor, b: torch.Tensor, warped: torch.Tensor, centers: torch.Tensor,
                 weight: torch.Tensor, positive_margin: float, negative_margin: float, dist2: float):
    """Positive and negative hinge sums of one chunk of A's cells.

    a ``B x c x D``; b ``B x D x N``; warped ``B x c x 2`` (A centres in B); centers ``N x 2``
    (B's centres); weight ``B x c x N``. Returns two ``B`` tensors.
    """
    dots = torch.bmm(a, b)  # B c N
    d2 = ((warped.unsqueeze(2) - centers.view(1, 1, -1, 2)) ** 2).sum(-1)
    s = (d2 <= dist2).float()
    pos = (s * weight * F.relu(positive_margin - dots)).sum(dim=(1, 2))
    neg = ((1 - s) * weight * F.relu(dots - negative_margin)).sum(dim=(1, 2))
    return pos, neg


@_fp32
def dense_descriptor_loss(desc: torch.Tensor, warped_desc: torch.Tensor, homography: torch.Tensor,
                          warped_valid_mask: torch.Tensor | None = None, valid_mask: torch.Tensor | None = None,
                          lambda_d: float = 800.0, positive_margin: float = 1.0, negative_margin: float = 0.2,
                          descriptor_dist: float = 8.0, chunk_size: int = 0, cell: int = CELL):
    """The paper's dense descriptor hinge loss (see the module docstring for the formula).

    Args:
        desc, warped_desc: ``B x D x Hc x Wc`` descriptor maps of A and of B (unit vectors).
        homography: ``B x 3 x 3`` A -> B in pixels.
        warped_valid_mask / valid_mask: ``B x 1 x H x W`` valid pixels of B / A (None = all).
        chunk_size: A cells per chunk; 0 = automatic: all at once if the ``B x cells x cells``
            tables stay under :data:`DENSE_CHUNK_ELEMENTS` elements, else chunks that do. With
            several chunks each is recomputed in the backward pass.
    Returns:
        (loss, {"pos": weighted positive term, "neg": negative term}) -- batch means, with
        ``loss = pos + neg``.
    """
    desc, warped_desc = desc.float(), warped_desc.float()
    B, D, hc, wc = desc.shape
    n = hc * wc
    a = desc.reshape(B, D, n).transpose(1, 2)  # B N D
    b = warped_desc.reshape(B, D, n)  # B D N
    centers = cell_centers((hc, wc), desc.device, cell)
    warped = warp_cell_centers(homography.to(desc.device), (hc, wc), cell)
    va = _cell_mask(valid_mask, B, n, desc.device)
    vb = _cell_mask(warped_valid_mask, B, n, desc.device)
    norm = (va.sum(1) * vb.sum(1)).clamp(min=1.0)
    step = int(chunk_size) if chunk_size > 0 else max(1, DENSE_CHUNK_ELEMENTS // (B * n))
    dist2 = float(descriptor_dist) ** 2
    pos = desc.new_zeros(B)
    neg = desc.new_zeros(B)
    recompute = torch.is_grad_enabled() and step < n and (desc.requires_grad or warped_desc.requires_grad)
    for s0 in range(0, n, step):
        sl = slice(s0, min(n, s0 + step))
        weight = va[:, sl, None] * vb[:, None, :]
        args = (a[:, sl], b, warped[:, sl], centers, weight, float(positive_margin), float(negative_margin), dist2)
        if recompute:
            p, q = checkpoint(_dense_chunk, *args, use_reentrant=False)
        else:
            p, q = _dense_chunk(*args)
        pos = pos + p
        neg = neg + q
    pos = float(lambda_d) * pos / norm
    neg = neg / norm
    return (pos + neg).mean(), {"pos": pos.mean().detach(), "neg": neg.mean().detach()}


def dense_descriptor_loss_naive(desc, warped_desc, homography, warped_valid_mask=None, valid_mask=None,
                                lambda_d=800.0, positive_margin=1.0, negative_margin=0.2, descriptor_dist=8.0,
                                cell: int = CELL) -> torch.Tensor:
    """The same loss with the full ``B x Hc x Wc x Hc x Wc x D`` product materialised (reference
    for tests only: its memory grows as ``(Hc Wc)^2 D``)."""
    desc, warped_desc = desc.float(), warped_desc.float()
    B, D, hc, wc = desc.shape
    a = desc.permute(0, 2, 3, 1).reshape(B, hc, wc, 1, 1, D)
    b = warped_desc.permute(0, 2, 3, 1).reshape(B, 1, 1, hc, wc, D)
    prod = a * b
    dots = prod.sum(-1)  # B hc wc hc wc
    centers = cell_centers((hc, wc), desc.device, cell).view(1, 1, 1, hc, wc, 2)
    warped = warp_cell_centers(homography, (hc, wc), cell).view(B, hc, wc, 1, 1, 2)
    s = (torch.linalg.norm(warped.double() - centers.double(), dim=-1) <= descriptor_dist).float()
    va = _cell_mask(valid_mask, B, hc * wc, desc.device).view(B, hc, wc, 1, 1)
    vb = _cell_mask(warped_valid_mask, B, hc * wc, desc.device).view(B, 1, 1, hc, wc)
    hinge = lambda_d * s * F.relu(positive_margin - dots) + (1 - s) * F.relu(dots - negative_margin)
    norm = (va.sum(dim=(1, 2, 3, 4)) * vb.sum(dim=(1, 2, 3, 4))).clamp(min=1)
    per_image = (hinge * va * vb).sum(dim=(1, 2, 3, 4)) / norm
    return per_image.mean()


# --------------------------------------------------------------------------------------------
# sparse
# --------------------------------------------------------------------------------------------
class SparsePairs(NamedTuple):
    """Sampled correspondences of a batch (``M`` matches, ``K`` negatives per match).

    cells_a ``B x M`` int64 cell index in A; points_b ``B x M x 2`` the cell centre mapped into B
    (pixels); match_mask ``B x M`` bool; negatives_b ``B x M x K`` int64 cell index in B;
    negative_mask ``B x M x K`` bool.
    """

    cells_a: torch.Tensor
    points_b: torch.Tensor
    match_mask: torch.Tensor
    negatives_b: torch.Tensor
    negative_mask: torch.Tensor


def sample_sparse_pairs(homography: torch.Tensor, image_size, num_matches: int, num_negatives: int, rng,
                        valid_mask: torch.Tensor | None = None, warped_valid_mask: torch.Tensor | None = None,
                        exclusion: float = float(CELL), cell: int = CELL) -> SparsePairs:
    """Draw the matches and negatives of the sparse loss (see the module docstring).

    Args:
        homography: ``B x 3 x 3`` A -> B. image_size: (H, W) of A and B (multiples of 8).
        num_matches: M (at most the number of cells); num_negatives: K per match.
        rng: a :class:`datasets.augmentation.Randomness` (per-sample draws, see its ``rows``).
        valid_mask / warped_valid_mask: ``B x 1 x H x W`` (None = all valid).
        exclusion: B cells whose centre lies within this many pixels of the match are no negatives.
    """
    B = homography.shape[0]
    dev = homography.device
    h, w = image_size
    hc, wc = h // cell, w // cell
    n = hc * wc
    warped = warp_cell_centers(homography, (hc, wc), cell)  # B N 2
    ok = inside_image(warped, (h, w))
    if valid_mask is not None:
        ok &= _cell_mask(valid_mask, B, n, dev) > 0.5
    if warped_valid_mask is not None:
        x = warped[..., 0].round().long().clamp(0, w - 1)
        y = warped[..., 1].round().long().clamp(0, h - 1)
        ok &= warped_valid_mask.reshape(B, -1).gather(1, y * w + x) > 0.5

    # M matches without replacement: the M valid cells with the smallest random keys
    m = min(int(num_matches), n)
    keys = rng.rand(B, n).to(dev).masked_fill(~ok, 2.0)
    cells_a = keys.argsort(dim=1)[:, :m]
    match_mask = ok.gather(1, cells_a)
    points_b = warped.gather(1, cells_a.unsqueeze(-1).expand(-1, -1, 2))

    # K negatives per match, uniform over B's valid cells (inverse CDF over the valid ones)
    k = int(num_negatives)
    vb = _cell_mask(warped_valid_mask, B, n, dev) > 0.5
    n_valid = vb.sum(1)  # B
    # (drawn by the device generator: the global batch's B x M x K draws are many)
    u = rng.rand_like(torch.empty(B, m, k, device=dev))
    target = (u * n_valid.view(B, 1, 1)).floor().long() + 1  # the target-th valid cell, 1..n_valid
    target = torch.minimum(target, n_valid.view(B, 1, 1).clamp(min=1))
    csum = vb.long().cumsum(1)
    negatives = torch.searchsorted(csum, target.view(B, -1)).clamp(max=n - 1).view(B, m, k)
    centers = cell_centers((hc, wc), dev, cell)
    d2 = ((centers[negatives] - points_b.unsqueeze(2)) ** 2).sum(-1)
    negative_mask = (d2 > exclusion ** 2) & match_mask.unsqueeze(-1) & (n_valid > 0).view(B, 1, 1)
    return SparsePairs(cells_a, points_b, match_mask, negatives, negative_mask)


def _nearest_cell(points: torch.Tensor, coarse_size, cell: int = CELL) -> torch.Tensor:
    """``... x 2`` pixel positions -> index of the cell whose centre is nearest (clamped to the grid)."""
    hc, wc = coarse_size
    j = ((points[..., 0] - (cell - 1) / 2) / cell).round().long().clamp(0, wc - 1)
    i = ((points[..., 1] - (cell - 1) / 2) / cell).round().long().clamp(0, hc - 1)
    return i * wc + j


@_fp32
def sparse_descriptor_loss(desc: torch.Tensor, warped_desc: torch.Tensor, pairs: SparsePairs,
                           lamda_d: float = 1.0, dist: str = "cos", method: str = "2d",
                           positive_margin: float = 1.0, negative_margin: float = 0.2, cell: int = CELL):
    """Contrastive loss on sampled correspondences (see the module docstring for the formula).

    Args:
        desc, warped_desc: ``B x D x Hc x Wc`` descriptor maps of A and B (unit vectors).
        pairs: from :func:`sample_sparse_pairs`. dist: ``cos`` | ``l2``. method: ``2d`` (bilinear
            at the exact match position) | ``1d`` (nearest cell).
    Returns:
        (loss, {"pos": lamda_d * positive term, "neg": negative term}) -- batch means.
    """
    if dist not in ("cos", "l2"):
        raise ValueError(f"model.sparse_loss.params.dist: expected cos or l2, got {dist!r}")
    if method not in ("1d", "2d"):
        raise ValueError(f"model.sparse_loss.params.method: expected 1d or 2d, got {method!r}")
    desc, warped_desc = desc.float(), warped_desc.float()
    B, D, hc, wc = desc.shape
    n = hc * wc
    flat_a = desc.reshape(B, D, n)
    flat_b = warped_desc.reshape(B, D, n)
    da = flat_a.gather(2, pairs.cells_a.unsqueeze(1).expand(-1, D, -1)).transpose(1, 2)  # B M D
    h, w = hc * cell, wc * cell
    pts = torch.stack([pairs.points_b[..., 0].clamp(0, w - 1), pairs.points_b[..., 1].clamp(0, h - 1)], -1)
    if method == "2d":
        db = sample_descriptors(warped_desc, pts, cell)  # B M D, bilinear + L2-normalised
    else:
        idx = _nearest_cell(pts, (hc, wc), cell)
        db = flat_b.gather(2, idx.unsqueeze(1).expand(-1, D, -1)).transpose(1, 2)
    mm = pairs.match_mask.float()
    if dist == "cos":
        pos = F.relu(positive_margin - (da * db).sum(-1))
    else:
        pos = ((da - db) ** 2).sum(-1)
    pos = (pos * mm).sum(1) / mm.sum(1).clamp(min=1.0)

    # negatives: dot products with every cell of B by one matrix product, then gathered
    M, K = pairs.negatives_b.shape[1:]
    dots = torch.bmm(da, flat_b).gather(2, pairs.negatives_b.reshape(B, M, K))  # B M K
    if dist == "cos":
        hinge = F.relu(dots - negative_margin)
    else:
        na = (da ** 2).sum(-1, keepdim=True)  # B M 1
        nb = (flat_b ** 2).sum(1).gather(1, pairs.negatives_b.reshape(B, -1)).view(B, M, K)
        l2 = (na + nb - 2 * dots).clamp(min=1e-12).sqrt()
        hinge = F.relu(math.sqrt(2 - 2 * negative_margin) - l2) ** 2
    nm = pairs.negative_mask.float()
    hinge = hinge * nm
    hard = (hinge > 0).float().sum(dim=(1, 2))
    neg = hinge.sum(dim=(1, 2)) / (hard + 1)
    pos = float(lamda_d) * pos
    return (pos + neg).mean(), {"pos": pos.mean().detach(), "neg": neg.mean().detach()}


# --------------------------------------------------------------------------------------------
# InfoNCE
# --------------------------------------------------------------------------------------------
@_fp32
def infonce_descriptor_loss(desc: torch.Tensor, warped_desc: torch.Tensor, pairs: SparsePairs,
                            homography: torch.Tensor, valid_mask: torch.Tensor | None = None,
                            warped_valid_mask: torch.Tensor | None = None, temperature: float = 0.05,
                            exclusion: float = float(CELL), cell: int = CELL):
    """Cross entropy of each sampled match against every non-matching cell, both ways (InfoNCE).

    For match ``i`` (cell ``c_i`` of A, seen at ``p_i = H c_i`` in B, descriptor ``d'(p_i)`` bilinear
    in B's map)::

        A -> B:  -log softmax_j(s_ij / t)[pos],  s_i,pos = d_i . d'(p_i),  j over B's valid cells
                 whose centre lies farther than ``exclusion`` pixels from p_i
        B -> A:  the same for d'(p_i) against A's valid cells whose centre, warped by H, lies
                 farther than ``exclusion`` from p_i
        L = mean over matches of the two terms' average; the batch loss is the mean over matches
        of all images.

    Unlike the hinge losses, every cell of the other image competes with the match, so the
    gradient always comes from the hardest non-matches: what nearest-neighbour matching needs.

    Args:
        desc, warped_desc: ``B x D x Hc x Wc`` unit descriptor maps of A and B.
        pairs: from :func:`sample_sparse_pairs` (its negatives are not used).
        homography: ``B x 3 x 3`` A -> B. valid_mask / warped_valid_mask: ``B x 1 x H x W`` or None.
    Returns:
        (loss, {"pos": mean positive similarity, "neg": mean hardest non-match similarity}).
    """
    desc, warped_desc = desc.float(), warped_desc.float()
    B, D, hc, wc = desc.shape
    n = hc * wc
    h, w = hc * cell, wc * cell
    flat_a = desc.reshape(B, D, n)
    flat_b = warped_desc.reshape(B, D, n)
    da = flat_a.gather(2, pairs.cells_a.unsqueeze(1).expand(-1, D, -1)).transpose(1, 2)  # B M D
    pts = torch.stack([pairs.points_b[..., 0].clamp(0, w - 1), pairs.points_b[..., 1].clamp(0, h - 1)], -1)
    db = sample_descriptors(warped_desc, pts, cell)  # B M D
    pos = (da * db).sum(-1)  # B M

    far2 = float(exclusion) ** 2
    centers_b = cell_centers((hc, wc), desc.device, cell)  # N 2
    near_b = ((centers_b.view(1, 1, n, 2) - pairs.points_b.unsqueeze(2)) ** 2).sum(-1) <= far2  # B M N
    ok_b = ~near_b & (_cell_mask(warped_valid_mask, B, n, desc.device) > 0.5).unsqueeze(1)
    centers_a = warp_cell_centers(homography.to(desc.device), (hc, wc), cell)  # B N 2 (A's cells in B)
    near_a = ((centers_a.unsqueeze(1) - pairs.points_b.unsqueeze(2)) ** 2).sum(-1) <= far2
    ok_a = ~near_a & (_cell_mask(valid_mask, B, n, desc.device) > 0.5).unsqueeze(1)

    t = float(temperature)
    sim_b = torch.bmm(da, flat_b).masked_fill(~ok_b, float("-inf"))  # B M N
    sim_a = torch.bmm(db, flat_a).masked_fill(~ok_a, float("-inf"))
    terms = []
    for sims in (sim_b, sim_a):
        logits = torch.cat([pos.unsqueeze(-1), sims], dim=-1) / t
        terms.append(torch.logsumexp(logits, dim=-1) - pos / t)
    per_match = (terms[0] + terms[1]) / 2
    mm = pairs.match_mask.float()
    # per image, then over the batch (as the other losses: any split of the batch averages the same)
    loss = ((per_match * mm).sum(1) / mm.sum(1).clamp(min=1.0)).mean()
    hardest = torch.maximum(sim_a.amax(-1), sim_b.amax(-1)).clamp(min=-1.0)
    logs = {"pos": ((pos * mm).sum() / mm.sum().clamp(min=1.0)).detach(),
            "neg": ((hardest * mm).sum() / mm.sum().clamp(min=1.0)).detach()}
    return loss, logs
