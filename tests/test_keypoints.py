import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.keypoints import (
    cell_targets,
    cell_valid_mask,
    extract_keypoints,
    gaussian_label_map,
    keypoints_to_map,
    nms,
    pixels_to_descriptor_grid,
    sample_descriptors,
    semi_to_heatmap,
    soft_argmax_refine,
)

pytestmark = pytest.mark.numerics  # run again under lower CPU kernel sets (tests/lower_kernels.py)


def greedy_nms_reference(heat: np.ndarray, radius: int, threshold: float) -> np.ndarray:
    """Plain-loop greedy NMS: visit by decreasing score (ties: lower row-major index first)."""
    h, w = heat.shape
    flat = heat.reshape(-1)
    order = sorted([i for i in range(h * w) if flat[i] >= threshold], key=lambda i: (-flat[i], i))
    kept = np.zeros((h, w), bool)
    for i in order:
        y, x = divmod(i, w)
        y0, y1, x0, x1 = max(0, y - radius), min(h, y + radius + 1), max(0, x - radius), min(w, x + radius + 1)
        if not kept[y0:y1, x0:x1].any():
            kept[y, x] = True
    return kept


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("radius", [1, 2, 4])
def test_nms_equals_greedy_reference_with_ties(seed, radius):
    rng = np.random.default_rng(seed)
    # quantised scores create many ties; include the border
    heat = np.round(rng.random((2, 23, 31)) * 6) / 6
    got = nms(torch.from_numpy(heat).float().unsqueeze(1), radius, threshold=0.3)
    for b in range(2):
        want = greedy_nms_reference(heat[b].astype(np.float32), radius, 0.3)
        assert np.array_equal(got[b, 0].numpy(), want)


def test_nms_chain_keeps_alternate_points():
    # scores decreasing along a row, 1 px apart: greedy keeps 0, 2, 4 (radius 1)
    heat = torch.zeros(1, 1, 3, 7)
    heat[0, 0, 1, :5] = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    kept = nms(heat, 1, 0.1)[0, 0, 1]
    assert kept.tolist() == [True, False, True, False, True, False, False]


def test_extract_keypoints_threshold_border_topk():
    heat = torch.zeros(1, 1, 32, 32)
    heat[0, 0, 10, 10] = 0.9
    heat[0, 0, 20, 25] = 0.5
    heat[0, 0, 1, 1] = 0.95  # inside the border
    heat[0, 0, 10, 11] = 0.8  # suppressed by (10, 10)
    heat[0, 0, 28, 5] = 0.01  # below threshold
    kp = extract_keypoints(heat, threshold=0.015, nms_radius=4, border=4, top_k=None)
    assert kp.points[0].tolist() == [[10.0, 10.0], [25.0, 20.0]]
    assert kp.scores[0].tolist() == pytest.approx([0.9, 0.5])
    kp1 = extract_keypoints(heat, threshold=0.015, nms_radius=4, border=4, top_k=1)
    assert kp1.points.shape == (1, 1, 2) and kp1.points[0, 0].tolist() == [10.0, 10.0]


def test_extract_keypoints_pads_batches():
    heat = torch.zeros(2, 1, 16, 16)
    heat[0, 0, 5, 5] = 0.5
    heat[0, 0, 10, 10] = 0.6
    heat[1, 0, 8, 8] = 0.7
    kp = extract_keypoints(heat, 0.1, 2, 0)
    assert kp.mask.tolist() == [[True, True], [True, False]]
    assert [t.shape[0] for t in kp.to_list()] == [2, 1]


def test_keypoints_to_map_and_cell_targets():
    pts = torch.tensor([[[3.0, 2.0], [9.4, 8.6], [100.0, 1.0]]])  # last one outside
    m = keypoints_to_map(pts, (16, 16))
    assert m.sum() == 2 and m[0, 0, 2, 3] == 1 and m[0, 0, 9, 9] == 1
    t = cell_targets(m)
    assert t.shape == (1, 65, 2, 2)
    assert t[0, 8 * 2 + 3, 0, 0] == 1.0  # cell (0,0): pixel (dy=2, dx=3)
    assert t[0, 8 * 1 + 1, 1, 1] == 1.0  # cell (1,1): pixel (9,9) -> (dy=1, dx=1)
    assert t[0, 64, 0, 1] == 1.0 and t[0, 64, 1, 0] == 1.0  # empty cells: dustbin
    two = torch.zeros(1, 1, 8, 8)
    two[0, 0, 0, 0] = two[0, 0, 7, 7] = 1
    t2 = cell_targets(two)[0, :, 0, 0]
    assert t2[0] == 0.5 and t2[63] == 0.5 and t2[64] == 0


def test_semi_to_heatmap_inverts_cell_layout():
    semi = torch.full((1, 65, 2, 3), -20.0)
    semi[0, 8 * 5 + 6, 1, 2] = 20.0  # cell row 1, col 2, pixel dy=5, dx=6
    heat = semi_to_heatmap(semi)
    assert heat.shape == (1, 1, 16, 24)
    iy, ix = divmod(int(heat.argmax()), 24)
    assert (iy, ix) == (8 + 5, 16 + 6)


def test_cell_valid_mask_requires_all_pixels():
    v = torch.ones(1, 1, 16, 16)
    v[0, 0, 0, 0] = 0
    m = cell_valid_mask(v)
    assert m.tolist() == [[[0.0, 1.0], [1.0, 1.0]]]


def test_gaussian_label_peak_and_spread():
    m = torch.zeros(1, 1, 15, 15)
    m[0, 0, 7, 7] = 1
    g = gaussian_label_map(m, 1.0)
    assert g[0, 0, 7, 7] == pytest.approx(1.0)
    assert g[0, 0, 7, 8] == pytest.approx(np.exp(-0.5), rel=1e-5)


def test_descriptor_grid_normalisation():
    # cell centres map exactly onto descriptor samples
    pts = torch.tensor([[[3.5, 3.5], [8 * 4 + 3.5, 8 * 2 + 3.5]]])
    g = pixels_to_descriptor_grid(pts, (3, 5))
    assert torch.allclose(g, torch.tensor([[[-1.0, -1.0], [1.0, 1.0]]]))


def test_sample_descriptors_hand_made_map():
    desc = torch.zeros(1, 2, 2, 2)
    desc[0, 0, 0, 0] = 1.0  # top-left cell points along dim 0
    desc[0, 1, 0, 1] = 1.0  # top-right cell along dim 1
    out = sample_descriptors(desc, torch.tensor([[[3.5, 3.5], [11.5, 3.5], [7.5, 3.5]]]))
    assert torch.allclose(out[0, 0], torch.tensor([1.0, 0.0]))
    assert torch.allclose(out[0, 1], torch.tensor([0.0, 1.0]))
    # halfway: equal mix, normalised
    assert torch.allclose(out[0, 2], torch.tensor([1.0, 1.0]) / np.sqrt(2), atol=1e-6)


def test_soft_argmax_recovers_subpixel_peak():
    yy, xx = torch.meshgrid(torch.arange(20.0), torch.arange(20.0), indexing="ij")
    true = (9.3, 10.6)
    heat = torch.exp(-((xx - true[0]) ** 2 + (yy - true[1]) ** 2) / (2 * 0.8 ** 2))[None, None]
    ref = soft_argmax_refine(heat, torch.tensor([[[9.0, 11.0]]]), patch_size=5)[0, 0]
    assert abs(ref[0] - true[0]) < 0.05 and abs(ref[1] - true[1]) < 0.05


# --------------------------------------------------------------------------------------------
# full extraction against a per-image, plain-loop reference
# --------------------------------------------------------------------------------------------
def extract_reference(heat: np.ndarray, threshold: float, radius: int, border: int, top_k):
    """One image, plain loops: greedy NMS, then border removal, then the best ``top_k``.

    Returns a list of (x, y, score) by decreasing score, ties in row-major order.
    """
    h, w = heat.shape
    kept = greedy_nms_reference(heat, radius, threshold) if radius > 0 else heat >= threshold
    pts = []
    for y in range(h):
        for x in range(w):
            if kept[y, x] and border <= x <= w - 1 - border and border <= y <= h - 1 - border:
                pts.append((x, y, float(heat[y, x])))
    pts.sort(key=lambda p: (-p[2], p[1] * w + p[0]))
    return pts[:top_k] if top_k else pts


def _extraction_cases():
    rng = np.random.default_rng(7)
    heat = np.round(rng.random((3, 29, 37)) * 8) / 8  # many ties
    heat[1] *= 0.4  # second image: far fewer points above the threshold
    heat[2, :, :] = 0.0
    heat[2, 0, 5] = heat[2, 28, 36] = heat[2, 3, 3] = heat[2, 14, 0] = 0.9  # on / near the border
    heat[2, 3, 4] = 0.9  # a tie next to (3, 3): the lower row-major index wins
    return heat.astype(np.float32)


@pytest.mark.parametrize("radius,border,top_k", [(1, 0, None), (2, 3, None), (4, 4, 25), (3, 1, 5), (0, 2, 10)])
@pytest.mark.parametrize("dense_rounds", [False, True])
def test_extract_keypoints_equals_per_image_reference(radius, border, top_k, dense_rounds, monkeypatch):
    import utils.keypoints as K
    if dense_rounds:  # force the whole-map rounds instead of the candidate gathers
        monkeypatch.setattr(K, "_DENSE_ROUND_RATIO", 0.0)
    heat = _extraction_cases()
    kp = extract_keypoints(torch.from_numpy(heat)[:, None], 0.3, radius, border, top_k)
    counts = []
    for b in range(heat.shape[0]):
        want = extract_reference(heat[b], 0.3, radius, border, top_k)
        counts.append(len(want))
        m = kp.mask[b]
        assert int(m.sum()) == len(want)
        assert not m[len(want):].any() and m[:len(want)].all()  # padding only at the end
        got = [(int(x), int(y), float(s)) for (x, y), s in zip(kp.points[b][m].tolist(), kp.scores[b][m].tolist())]
        assert got == want
    assert len(set(counts)) > 1  # the batch really mixes different counts
    assert kp.points.shape[1] == max(counts)


def test_max_pool_matches_torch_max_pool():
    from utils.keypoints import _max_pool
    x = torch.rand(2, 1, 19, 26) - 0.5  # negative values: padding must not win
    for r in range(1, 6):
        assert torch.equal(_max_pool(x, r), F.max_pool2d(x, 2 * r + 1, stride=1, padding=r))


def test_nms_on_a_flat_map_keeps_a_regular_lattice():
    # all scores equal: greedy in row-major order keeps every (r+1)-th pixel in both directions
    heat = torch.full((1, 1, 10, 13), 0.5)
    kept = nms(heat, 2, 0.1)[0, 0]
    ys, xs = torch.nonzero(kept, as_tuple=True)
    assert set(ys.tolist()) == {0, 3, 6, 9} and set(xs.tolist()) == {0, 3, 6, 9, 12}
    assert int(kept.sum()) == 20


def test_subpixel_keeps_padding_and_refines_real_points():
    heat = torch.zeros(2, 1, 16, 16)
    heat[0, 0, 8, 8] = 1.0
    heat[0, 0, 8, 9] = 0.5  # pulls the refined x to the right; suppressed by NMS
    heat[1, 0, 4, 4] = 0.8
    heat[1, 0, 12, 12] = 0.7
    kp = extract_keypoints(heat, 0.1, 2, 0, subpixel=True, patch_size=3)
    assert kp.mask.tolist() == [[True, False], [True, True]]
    assert kp.points[0, 0].tolist() == pytest.approx([8 + 0.5 / 1.5, 8.0])
    assert kp.points[0, 1].tolist() == [0.0, 0.0]
