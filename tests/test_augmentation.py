
import pytest
import torch

from datasets.augmentation import (
    Randomness,
    additive_gaussian_noise,
    additive_shade,
    additive_speckle_noise,
    motion_blur,
    photometric_augmentation,
    random_brightness,
    random_contrast,
    random_warp,
)
from datasets.pairs import prepare_batch
from utils.config import load_config


def rng(seed=0):
    return Randomness.from_seed(seed, torch.device("cpu"))


def flat(v=0.5, b=4, h=32, w=40):
    return torch.full((b, 1, h, w), v)


def test_brightness_shifts_by_at_most_the_amplitude_and_is_constant_per_image():
    out = random_brightness(flat(), rng(), max_abs_change=50)
    deltas = (out - 0.5).view(4, -1)
    assert torch.allclose(deltas, deltas[:, :1].expand_as(deltas))  # one shift per image
    assert deltas.abs().max() <= 50 / 255 + 1e-6 and deltas.abs().max() > 1e-3


def test_contrast_scales_around_the_mean():
    img = torch.zeros(2, 1, 4, 4)
    img[:, :, :2] = 0.6
    img[:, :, 2:] = 0.4
    out = random_contrast(img, rng(), strength_range=(2.0, 2.0))
    assert torch.allclose(out[:, :, :2], torch.tensor(0.7)) and torch.allclose(out[:, :, 2:], torch.tensor(0.3))


def test_gaussian_noise_std_within_range():
    out = additive_gaussian_noise(flat(b=2, h=200, w=200), rng(), stddev_range=(10, 10))
    assert (out - 0.5).std().item() == pytest.approx(10 / 255, rel=0.05)


def test_speckle_turns_pixels_black_and_white_at_the_rate():
    out = additive_speckle_noise(flat(b=1, h=300, w=300), rng(), prob_range=(0.01, 0.01))
    assert (out == 0).float().mean().item() == pytest.approx(0.01, rel=0.15)
    assert (out == 1).float().mean().item() == pytest.approx(0.01, rel=0.15)


def test_shade_only_darkens_for_positive_transparency():
    out = additive_shade(flat(b=2, h=120, w=160), rng(), transparency_range=(0.5, 0.5), kernel_size_range=(51, 51))
    assert (out <= 0.5 + 1e-6).all() and out.min() < 0.45


def test_motion_blur_preserves_flat_images_and_blurs_an_edge():
    assert torch.allclose(motion_blur(flat(), rng(), max_kernel_size=7), flat(), atol=1e-6)
    img = torch.zeros(8, 1, 20, 20)
    img[..., 10:] = 1.0
    out = motion_blur(img, rng(3), max_kernel_size=7)
    assert torch.allclose(out.mean(), img.mean(), atol=0.02)  # mass preserved
    assert ((out > 0.01) & (out < 0.99)).any()  # some images got a blurred edge


def test_photometric_is_reproducible_and_rejects_unknown():
    cfg = load_config(None, ["data.augmentation.photometric.enable=true"])["data"]["augmentation"]["photometric"]
    img = torch.rand(2, 1, 40, 48)
    a = photometric_augmentation(img, cfg, rng(5))
    b = photometric_augmentation(img, cfg, rng(5))
    assert torch.equal(a, b) and not torch.equal(a, img)
    with pytest.raises(ValueError, match="unknown.*sharpen"):
        photometric_augmentation(img, {**cfg, "primitives": ["sharpen"]}, rng())


def test_random_warp_moves_keypoints_with_the_image():
    # bright dots at known points must end up at the warped keypoints
    h, w = 96, 128
    pts = torch.tensor([[[40.0, 30.0], [80.0, 60.0], [64.0, 48.0]]])
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    img = sum(torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0) for x, y in pts[0].tolist())[None, None]
    params = load_config(None)["data"]["augmentation"]["homographic"]["params"]
    out, wpts, mask, H = random_warp(img, pts, torch.ones(1, 1, h, w), params, 2, rng(1))
    for x, y in wpts[0].tolist():
        if 3 <= x < w - 3 and 3 <= y < h - 3:
            patch = out[0, 0, int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2]
            assert patch.max() > 0.6
    assert mask.shape == (1, 1, h, w) and 0 < mask.mean() <= 1


def test_prepare_batch_pair_labels_follow_homography():
    cfg = load_config(None, ["data.warped_pair.enable=true", "data.warped_pair.params.allow_artifacts=false"])
    pts = torch.tensor([[[20.0, 16.0], [40.0, 30.0]]])
    batch = {"image": torch.rand(1, 1, 48, 64), "keypoints": pts, "keypoint_mask": torch.ones(1, 2, dtype=torch.bool)}
    out = prepare_batch(batch, cfg["data"], True, rng(2), torch.device("cpu"))
    assert out["label_map"][0, 0, 16, 20] == 1 and out["label_map"].sum() == 2
    from utils.geometry import warp_points
    wp = warp_points(pts.double(), out["homography"].double())[0]
    for x, y in wp.tolist():
        if 0 <= round(x) < 64 and 0 <= round(y) < 48:
            assert out["warped_label_map"][0, 0, round(y), round(x)] == 1
    assert set(out) >= {"warped_image", "warped_valid_mask", "homography", "warped_label_map"}
