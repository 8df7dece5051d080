"""Descriptor losses on a known homography: perfect descriptors cost ~0, shuffled ones a lot;
the chunked dense loss equals the materialised one; the sparse sampler draws what it says."""

import pytest
import torch
import torch.nn.functional as F

from datasets.augmentation import Randomness
from training.descriptor_losses import (
    cell_centers,
    dense_descriptor_loss,
    dense_descriptor_loss_naive,
    sample_sparse_pairs,
    sparse_descriptor_loss,
    warp_cell_centers,
)
from utils.geometry import sample_homography, warped_valid_mask

H_IMG, W_IMG = 48, 64  # 6 x 8 cells
HC, WC = 6, 8
N = HC * WC


def rotation_about_cell():
    """90 degree rotation about the centre of cell (row 2, col 3), pixel (27.5, 19.5): it maps
    cell centres onto cell centres (x, y) -> (cx + cy - y, cy - cx + x)."""
    cx, cy = 27.5, 19.5
    return torch.tensor([[[0.0, -1.0, cx + cy], [1.0, 0.0, cy - cx], [0.0, 0.0, 1.0]]])


def perfect_pair(H, D=64):
    """One-hot descriptors: A's cell i gets e_i; B's cell j gets e_i where H maps cell i onto
    cell j, and e_{D-1} (unused by A) where nothing maps. Returns (desc_a, desc_b, hits)."""
    a = torch.eye(D)[:N].T.reshape(1, D, HC, WC)
    b = torch.zeros(1, D, N)
    b[0, D - 1] = 1.0
    warped = warp_cell_centers(H, (HC, WC))[0]
    centers = cell_centers((HC, WC))
    hits = 0
    for i in range(N):
        d = (centers - warped[i]).norm(dim=1)
        j = int(d.argmin())
        if d[j] < 1e-4:
            b[0, :, j] = 0.0
            b[0, i, j] = 1.0
            hits += 1
    return a, b.reshape(1, D, HC, WC), hits


def test_rotation_maps_cell_centres_onto_cell_centres():
    warped = warp_cell_centers(rotation_about_cell(), (HC, WC))[0]
    # cell (row 0, col 0) at (3.5, 3.5) -> (43.5, -4.5): outside; cell (row 2, col 3) is the fixed point
    assert torch.allclose(warped[0], torch.tensor([43.5, -4.5]))
    assert torch.allclose(warped[2 * WC + 3], torch.tensor([27.5, 19.5]))


def test_dense_loss_zero_for_perfect_and_large_for_shuffled():
    H = rotation_about_cell()
    a, b, hits = perfect_pair(H)
    assert hits >= 20
    # descriptor_dist 4: on this lattice only the exact cell corresponds (neighbours are 8 px away)
    kw = dict(lambda_d=250.0, descriptor_dist=4.0, chunk_size=5)
    loss, logs = dense_descriptor_loss(a, b, H, **kw)
    assert float(loss) == pytest.approx(0.0, abs=1e-7)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(0))
    shuffled = b.reshape(1, -1, N)[..., perm].reshape_as(b)
    bad, logs = dense_descriptor_loss(a, shuffled, H, **kw)
    # one-hot descriptors that no longer match: every corresponding pair costs lambda_d * (1 - 0)
    # (a shuffled cell rarely lands on its own place), normalised by the N x N pairs
    assert float(bad) > 0.8 * 250.0 * hits / N ** 2
    # ... and the displaced copies of A's descriptors now sit at non-corresponding cells
    assert float(logs["neg"]) > 0 and float(logs["pos"]) + float(logs["neg"]) == pytest.approx(float(bad))


def test_dense_negative_term_counts_similar_non_corresponding_cells():
    # all descriptors identical: every non-corresponding pair has dot 1 -> hinge 1 - 0.2
    H = torch.eye(3)[None]
    d = F.normalize(torch.ones(1, 4, HC, WC), dim=1)
    loss, logs = dense_descriptor_loss(d, d, H, lambda_d=1.0, descriptor_dist=4.0)
    assert float(logs["pos"]) == pytest.approx(0.0, abs=1e-6)
    assert float(logs["neg"]) == pytest.approx(0.8 * (N * N - N) / N ** 2, rel=1e-5)


def random_case(seed, B=2, D=16):
    g = torch.Generator().manual_seed(seed)
    desc = F.normalize(torch.randn(B, D, HC, WC, generator=g), dim=1)
    wdesc = F.normalize(torch.randn(B, D, HC, WC, generator=g), dim=1)
    H = sample_homography(B, (H_IMG, W_IMG), {"patch_ratio": 0.85, "allow_artifacts": True}, generator=g)
    wvalid = warped_valid_mask(H, (H_IMG, W_IMG), (H_IMG, W_IMG), border=3)
    return desc, wdesc, H, wvalid


@pytest.mark.parametrize("chunk", [0, 7, 48])
def test_chunked_dense_loss_equals_materialised_loss_and_gradient(chunk):
    desc, wdesc, H, wvalid = random_case(1)
    valid = torch.ones(2, 1, H_IMG, W_IMG)
    valid[1, :, :9] = 0  # a partly valid A too
    kw = dict(lambda_d=800.0, descriptor_dist=8.0)
    d1, w1 = desc.clone().requires_grad_(), wdesc.clone().requires_grad_()
    d2, w2 = desc.clone().requires_grad_(), wdesc.clone().requires_grad_()
    fast, _ = dense_descriptor_loss(d1, w1, H, wvalid, valid, chunk_size=chunk, **kw)
    slow = dense_descriptor_loss_naive(d2, w2, H, wvalid, valid, **kw)
    assert fast.item() == pytest.approx(slow.item(), abs=1e-5, rel=1e-5)
    fast.backward()
    slow.backward()
    assert torch.allclose(d1.grad, d2.grad, atol=1e-5) and torch.allclose(w1.grad, w2.grad, atol=1e-5)
    assert d1.grad.abs().sum() > 0


def test_automatic_chunks_follow_the_element_budget(monkeypatch):
    import training.descriptor_losses as dl

    desc, wdesc, H, wvalid = random_case(5)
    calls = []
    real = dl._dense_chunk
    monkeypatch.setattr(dl, "_dense_chunk", lambda a, *rest: calls.append(a.shape[1]) or real(a, *rest))
    monkeypatch.setattr(dl, "DENSE_CHUNK_ELEMENTS", 2 * N * 10)  # batch 2 x 10 rows x N cells
    loss, _ = dl.dense_descriptor_loss(desc, wdesc, H, wvalid)
    assert calls == [10, 10, 10, 10, 8]
    assert loss.item() == pytest.approx(dense_descriptor_loss_naive(desc, wdesc, H, wvalid).item(), rel=1e-5)


def test_descriptor_losses_are_float32_under_bf16_autocast():
    desc, wdesc, H, wvalid = random_case(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = dense_descriptor_loss(desc.bfloat16(), wdesc.bfloat16(), H, wvalid, chunk_size=10)
        pairs = sample_sparse_pairs(H, (H_IMG, W_IMG), 30, 5, Randomness.from_seed(0, torch.device("cpu")),
                                    warped_valid_mask=wvalid)
        sloss, _ = sparse_descriptor_loss(desc.bfloat16(), wdesc.bfloat16(), pairs)
    assert loss.dtype == torch.float32 and sloss.dtype == torch.float32
    ref = dense_descriptor_loss_naive(desc.bfloat16().float(), wdesc.bfloat16().float(), H, wvalid)
    assert float(loss) == pytest.approx(float(ref), rel=1e-5)


def rng(seed=0):
    return Randomness.from_seed(seed, torch.device("cpu"))


def test_sparse_pairs_follow_the_homography_and_avoid_the_match():
    desc, wdesc, H, wvalid = random_case(3)
    pairs = sample_sparse_pairs(H, (H_IMG, W_IMG), 25, 12, rng(), warped_valid_mask=wvalid)
    centers = cell_centers((HC, WC))
    warped = warp_cell_centers(H, (HC, WC))
    for b in range(2):
        m = pairs.match_mask[b]
        cells = pairs.cells_a[b][m]
        assert m.sum() >= 10 and len(set(cells.tolist())) == len(cells)  # without replacement
        pts = pairs.points_b[b][m]
        assert torch.allclose(pts, warped[b][cells])
        # matches land inside B's valid area
        xi, yi = pts[:, 0].round().long(), pts[:, 1].round().long()
        assert (wvalid[b, 0, yi, xi] == 1).all()
        # no cell whose warp leaves B was chosen while valid ones were left
        # negatives: valid cells of B, farther than 8 px from the match
        neg = pairs.negatives_b[b][pairs.negative_mask[b]]
        cell_ok = F.pixel_unshuffle(wvalid[b:b + 1], 8).amin(1).reshape(-1)
        assert (cell_ok[neg] == 1).all()
        far = (centers[pairs.negatives_b[b]] - pairs.points_b[b].unsqueeze(1)).norm(dim=-1)
        assert (far[pairs.negative_mask[b]] > 8).all()
        assert not pairs.negative_mask[b][~m].any()
        assert pairs.negative_mask[b][m].float().mean() > 0.8


@pytest.mark.parametrize("dist", ["cos", "l2"])
@pytest.mark.parametrize("method", ["2d", "1d"])
def test_sparse_loss_zero_for_perfect_and_large_for_shuffled(dist, method):
    H = rotation_about_cell()
    a, b, hits = perfect_pair(H)
    pairs = sample_sparse_pairs(H, (H_IMG, W_IMG), 40, 20, rng(1))
    assert int(pairs.match_mask.sum()) == hits  # fewer valid cells than asked: all of them
    loss, logs = sparse_descriptor_loss(a, b, pairs, lamda_d=1.0, dist=dist, method=method)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(0))
    shuffled = b.reshape(1, -1, N)[..., perm].reshape_as(b)
    bad, logs = sparse_descriptor_loss(a, shuffled, pairs, lamda_d=1.0, dist=dist, method=method)
    # orthogonal one-hots: 1 - cos = 1 per match, ||a - b||^2 = 2 per match (a few shuffled
    # cells may land on their own place)
    assert float(logs["pos"]) > (0.8 if dist == "cos" else 1.6)


def test_sparse_negative_term_is_the_mean_over_hard_negatives():
    # identical descriptors everywhere: every negative has cosine 1 -> hinge 0.8, all hard
    H = torch.eye(3)[None]
    d = F.normalize(torch.ones(1, 4, HC, WC), dim=1)
    pairs = sample_sparse_pairs(H, (H_IMG, W_IMG), 10, 6, rng(2))
    n = int(pairs.negative_mask.sum())
    _, logs = sparse_descriptor_loss(d, d, pairs, dist="cos")
    assert float(logs["neg"]) == pytest.approx(0.8 * n / (n + 1), rel=1e-5)
    _, logs = sparse_descriptor_loss(d, d, pairs, dist="l2")
    assert float(logs["neg"]) == pytest.approx(1.6 * n / (n + 1), rel=1e-4)  # (sqrt(1.6) - 0)^2
    assert float(logs["pos"]) == pytest.approx(0.0, abs=1e-6)


def test_sparse_loss_rejects_unknown_options():
    desc, wdesc, H, wvalid = random_case(4, B=1)
    pairs = sample_sparse_pairs(H, (H_IMG, W_IMG), 5, 2, rng())
    with pytest.raises(ValueError, match="dist"):
        sparse_descriptor_loss(desc, wdesc, pairs, dist="manhattan")
    with pytest.raises(ValueError, match="method"):
        sparse_descriptor_loss(desc, wdesc, pairs, method="3d")
