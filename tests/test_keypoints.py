import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.keypoints import (cell_targets, cell_valid_mask, extract_keypoints, gaussian_label_map,
                             keypoints_to_map, nms, pixels_to_descriptor_grid, sample_descriptors,
                             semi_to_heatmap, soft_argmax_refine)


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
