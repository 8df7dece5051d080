"""Homographic adaptation (models/homography_adaptation.py) against hand-made answers."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import build_model, build_network
from models.homography_adaptation import homography_adaptation, prepare_detector, sample_adaptation_homographies
from utils.config import load_config
from utils.geometry import warp_points
from utils.keypoints import extract_keypoints, semi_to_heatmap
from utils.numerics import FP32_REORDERED

pytestmark = pytest.mark.numerics  # run again under lower CPU kernel sets (tests/lower_kernels.py)


def ha_config(**kw):
    cfg = load_config(None)["data"]["homography_adaptation"]
    cfg.update(kw)
    return cfg


class HeatmapAsSemi(torch.nn.Module):
    """A fake network: reads its input as a keypoint heatmap and returns the cell logits whose
    softmax is that heatmap (every 8x8 cell must sum to less than 1)."""

    def forward(self, x):
        cells = F.pixel_unshuffle(x.float(), 8)
        dustbin = 1 - cells.sum(dim=1, keepdim=True)
        assert bool((dustbin > 0).all())
        return {"semi": torch.log(torch.cat([cells, dustbin], dim=1) + 1e-30)}


def sparse_heatmap(seed, size=(48, 64), batch=2):
    g = torch.Generator().manual_seed(seed)
    heat = torch.rand(batch, 1, *size, generator=g) * 0.01          # below the 0.015 threshold
    peaks = torch.rand(batch, 1, size[0] // 8, size[1] // 8, generator=g) * 0.25 + 0.02
    # one peak per cell at a random position (neighbouring cells' peaks compete in NMS)
    pos = torch.randint(0, 64, (batch, 1, size[0] // 8, size[1] // 8), generator=g)
    onehot = F.one_hot(pos, 64).permute(0, 1, 4, 2, 3).reshape(batch, 64, size[0] // 8, size[1] // 8).float()
    return heat + F.pixel_shuffle(onehot * peaks, 8)


def test_identity_only_is_exactly_the_detector_heatmap_and_its_nms():
    heat = sparse_heatmap(0)
    model = HeatmapAsSemi()
    out = homography_adaptation(model, heat, ha_config(num=1), torch.Generator().manual_seed(0))
    direct = semi_to_heatmap(model(heat)["semi"])
    assert torch.equal(out, direct)
    assert torch.allclose(direct, heat, atol=1e-6)
    want = extract_keypoints(direct, 0.015, 4, 4, 600).to_list()
    got = extract_keypoints(out, 0.015, 4, 4, 600).to_list()
    for g, w in zip(got, want):
        assert g.shape[0] > 10 and torch.equal(g, w)
    # max aggregation of a single view is the same heatmap
    out_max = homography_adaptation(model, heat, ha_config(num=1, aggregation="max"))
    assert torch.equal(out_max, direct)


def test_recovers_known_points_under_many_homographies():
    """Blobs at known positions; the "detector" responds where the image is bright. Every view
    is warped, detected and warped back: the aggregate peaks at the true positions only if the
    homographies are applied in the right directions."""
    h, w = 96, 128
    truth = np.array([[30, 30], [64, 40], [90, 60], [40, 66], [75, 70], [100, 35]], np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w), np.float32)
    for x, y in truth:
        img = np.maximum(img, np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 1.5 ** 2)))
    image = torch.from_numpy(img)[None, None]
    cfg = ha_config(num=40, batch_size=16)
    H = sample_adaptation_homographies(1, 40, (h, w), cfg["homographies"]["params"], torch.Generator().manual_seed(3))
    # the blobs must really move in the views, or the test proves nothing
    moved = (warp_points(torch.from_numpy(truth)[None].expand(40, -1, -1), H[0]) - torch.from_numpy(truth)).norm(dim=-1)
    assert float(moved[1:].median()) > 10
    heat, counts = homography_adaptation(lambda x: x, image, cfg, homographies=H, return_counts=True)
    assert float(counts.max()) == 40 and float(counts[0, 0, 48, 64]) > 20
    kp = extract_keypoints(heat, 0.3, 4, 4).to_list()[0]
    assert kp.shape[0] == len(truth)
    d = torch.cdist(kp[:, :2], torch.from_numpy(truth))
    assert bool((d.min(dim=1).values <= 1.0).all()) and bool((d.min(dim=0).values <= 1.0).all())
    # aligned views keep the peaks high (misaligned ones would average them away)
    assert bool((kp[:, 2] > 0.6).all())


def test_batching_does_not_change_the_result():
    torch.manual_seed(0)
    model = build_network("SuperPointNet_gauss2", {"descriptor_dim": 16}).eval()
    images = torch.rand(2, 1, 32, 40)
    gens = lambda: [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)]  # noqa: E731
    ref = [homography_adaptation(model, images[i:i + 1], ha_config(num=6, batch_size=1), [g])
           for i, g in enumerate(gens())]
    both = homography_adaptation(model, images, ha_config(num=6, batch_size=5), gens())
    for i in range(2):
        assert FP32_REORDERED.check(both[i:i + 1], ref[i]).ok
    # the inference copy (traced, descriptor head cut, batch norm folded, channels-last) agrees
    fast = prepare_detector(model)
    assert "convDa" not in dict(fast.named_modules())
    out = homography_adaptation(fast, images, ha_config(num=6, batch_size=4), gens())
    assert FP32_REORDERED.check(out, both).ok


def expected_translation_case(A, shifts, margin, ramp):
    """Per-pixel values each view contributes, written out for integer x translations."""
    h, w = A.shape
    vals, valid = [], []
    ys, xs = np.mgrid[0:h, 0:w]
    for t in shifts:
        if t == 0:
            vals.append(A * ramp(xs))
            valid.append(np.ones((h, w), bool))
            continue
        # the edge the shift creates is eroded in the image (one side) and in the view (the
        # other side, pulled back); the rows' own borders stay valid
        lo, hi = max(0, -t) + margin, w - 1 - max(0, t) - margin
        ok = (xs >= lo) & (xs <= hi) & (ys >= 0)
        vals.append(np.where(ok, A * ramp(xs + t), 0.0))
        valid.append(ok)
    return np.stack(vals), np.stack(valid)


@pytest.mark.parametrize("aggregation", ["sum", "max"])
@pytest.mark.parametrize("filter_counts", [0, 3])
def test_aggregation_and_filter_counts_hand_made(aggregation, filter_counts):
    h, w, margin = 16, 24, 1
    shifts = [0, 3, -2]
    A = np.random.default_rng(0).random((h, w)).astype(np.float32)
    ramp = lambda x: (x + 1.0) / w  # noqa: E731 - the fake detector's gain depends on the view's column

    def detector(views):
        cols = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w)
        return views * (cols + 1.0) / w

    H = torch.eye(3).repeat(1, len(shifts), 1, 1)
    H[0, :, 0, 2] = torch.tensor(shifts, dtype=torch.float32)   # x_view = x + t
    cfg = ha_config(aggregation=aggregation, filter_counts=filter_counts, valid_border_margin=margin)
    got, counts = homography_adaptation(detector, torch.from_numpy(A)[None, None], cfg, homographies=H,
                                        return_counts=True)
    vals, valid = expected_translation_case(A, shifts, margin, ramp)
    n = valid.sum(0)
    want = vals.sum(0) / n if aggregation == "sum" else vals.max(0)
    if filter_counts:
        want = np.where(n >= filter_counts, want, 0.0)
        assert 0 < (n < filter_counts).sum() < n.size  # both cases occur
    np.testing.assert_array_equal(counts[0, 0].numpy(), n)
    np.testing.assert_allclose(got[0, 0].numpy(), want, atol=1e-5)
    if aggregation == "sum" and not filter_counts:
        # the sum and the max really differ here
        assert np.abs(want - vals.max(0)).max() > 0.1


def test_filter_counts_zeroes_pixels_seen_by_few_views():
    h, w = 16, 24
    H = torch.eye(3).repeat(1, 2, 1, 1)
    H[0, 1, 0, 2] = 6.0
    img = torch.full((1, 1, h, w), 0.5)
    out = homography_adaptation(lambda x: x, img, ha_config(filter_counts=2, valid_border_margin=0), homographies=H)
    # pixels x >= w - 6 leave the shifted view: seen once, dropped; the others keep 0.5
    assert torch.all(out[..., w - 6:] == 0)
    assert torch.allclose(out[..., : w - 6], torch.tensor(0.5))


def test_sizes_not_multiple_of_8_are_padded_for_the_network():
    torch.manual_seed(0)
    model = build_network("SuperPointNet_gauss2", {"descriptor_dim": 16}).eval()
    img = torch.rand(1, 1, 30, 45)
    out = homography_adaptation(model, img, ha_config(num=3, batch_size=3), torch.Generator().manual_seed(0))
    assert out.shape == (1, 1, 30, 45) and torch.isfinite(out).all() and float(out.max()) > 0


def test_bad_settings_are_reported():
    img = torch.zeros(1, 1, 16, 16)
    with pytest.raises(ValueError, match="aggregation"):
        homography_adaptation(lambda x: x, img, ha_config(aggregation="mean"))
    with pytest.raises(ValueError, match="num"):
        homography_adaptation(lambda x: x, img, ha_config(num=0))


def test_view_sampling_matches_the_geometry_module():
    """The adaptation's own float32 sampling (one grid for the warp and the mask) agrees with
    utils.geometry.warp_image / warped_valid_mask."""
    from models.homography_adaptation import _pull, _sample
    from utils.geometry import warp_image, warped_valid_mask

    h, w = 40, 56
    H = sample_adaptation_homographies(1, 8, (h, w), ha_config()["homographies"]["params"],
                                       torch.Generator().manual_seed(1))[0]
    img = torch.rand(8, 1, h, w, generator=torch.Generator().manual_seed(2))
    grid, mask = _pull(torch.linalg.inv(H.double()), (h, w), 2)
    want_mask = warped_valid_mask(H.double(), (h, w), (h, w), 2)
    assert torch.equal(mask, want_mask) and float(want_mask.mean()) > 0.3
    inside = want_mask.bool()
    torch.testing.assert_close(_sample(img, grid)[inside], warp_image(img, H, (h, w))[inside], atol=1e-4, rtol=0)


def test_prepare_detector_fuses_a_network_with_a_segmentation_head():
    """The segmentation head reads tensor sizes, which torch.fx cannot trace: it is kept out of the
    trace and cut with the descriptor head, with no fallback warning."""
    import warnings

    torch.manual_seed(0)
    model = build_model(load_config(None, ["model.params={descriptor_dim: 16}", "model.segmentation_head.enable=true",
                                           "model.segmentation_head.num_classes=4",
                                           "model.segmentation_head.channels=8"])["model"]).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old fallback warned "running ... unfused (TraceError ...)"
        fast = prepare_detector(model)
    modules = dict(fast.named_modules())
    assert "seg_head" not in modules and "convDa" not in modules and "bnPa" not in modules  # BN folded
    images = torch.rand(2, 1, 32, 40)
    with torch.no_grad():
        assert FP32_REORDERED.check(fast(images)["semi"], model(images)["semi"]).ok


def test_prepare_detector_folds_with_the_one_folding_bit_for_bit():
    """prepare_detector's folded convolutions are models.inference.fold_batchnorm's, which are
    torch's fuse_conv_bn_eval's bit for bit (what the labels were made with before: same bytes)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from models.inference import fold_batchnorm

    torch.manual_seed(1)
    model = build_network("SuperPointNet_gauss2", {"descriptor_dim": 16}).eval()
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
    torch_fused = fuse_conv_bn_eval(model.convPa, model.bnPa)
    w, b = fold_batchnorm(model.convPa, model.bnPa)
    assert torch.equal(w, torch_fused.weight) and torch.equal(b, torch_fused.bias)
    fast = prepare_detector(model, channels_last=False)
    folded = [m for m in fast.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == w.shape[0]
              and m.in_channels == w.shape[1] and torch.equal(m.weight, w)]
    assert len(folded) == 1 and torch.equal(folded[0].bias, b)
