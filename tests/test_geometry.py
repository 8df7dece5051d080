import math

import numpy as np
import pytest
import torch

from utils.geometry import (
    conjugate_homography,
    crop_matrix,
    homography_from_points,
    inside_image,
    resize_matrix,
    sample_homography,
    warp_image,
    warp_points,
    warped_valid_mask,
)

pytestmark = pytest.mark.numerics  # run again under lower CPU kernel sets (tests/lower_kernels.py)


def test_warp_points_known_homography():
    H = torch.tensor([[2.0, 0, 3], [0, 1, -1], [0, 0, 1]])
    pts = torch.tensor([[[0.0, 0.0], [1.0, 2.0]]])
    assert torch.allclose(warp_points(pts, H), torch.tensor([[[3.0, -1.0], [5.0, 1.0]]]))
    # projective division
    H = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0.5, 0, 1]])
    assert torch.allclose(warp_points(torch.tensor([[2.0, 4.0]]), H), torch.tensor([[1.0, 2.0]]))


def test_warp_points_numpy_in_numpy_out():
    H = np.array([[1.0, 0, 5], [0, 1, 7], [0, 0, 1]])
    out = warp_points(np.array([[1.0, 1.0]]), H)
    assert isinstance(out, np.ndarray) and np.allclose(out, [[6.0, 8.0]])


def test_homography_from_points_recovers_known():
    H = torch.tensor([[1.1, 0.05, 4.0], [-0.03, 0.95, -2.0], [1e-4, 2e-4, 1.0]], dtype=torch.float64)
    src = torch.tensor([[[0.0, 0.0], [0.0, 99.0], [149.0, 99.0], [149.0, 0.0]]], dtype=torch.float64)
    dst = warp_points(src, H)
    assert torch.allclose(homography_from_points(src, dst)[0], H, atol=1e-9)


def test_warp_image_translation_moves_pixels():
    img = torch.zeros(1, 1, 20, 30)
    img[0, 0, 5, 7] = 1.0
    H = torch.tensor([[1.0, 0, 4], [0, 1, 2], [0, 0, 1]])  # A -> B: shift by (+4, +2)
    out = warp_image(img, H.unsqueeze(0), (20, 30))
    assert out[0, 0, 7, 11] == pytest.approx(1.0, abs=1e-5)
    assert out.sum() == pytest.approx(1.0, abs=1e-4)


def test_warp_image_agrees_with_warp_points_under_rotation():
    # a bright dot at a known point follows warp_points under a sampled homography
    torch.manual_seed(0)
    h, w = 120, 160
    g = torch.Generator().manual_seed(3)
    H = sample_homography(1, (h, w), {"patch_ratio": 0.8, "allow_artifacts": False}, generator=g)
    p_a = torch.tensor([[[80.0, 60.0]]])
    p_b = warp_points(p_a, H)[0, 0]
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    blob = torch.exp(-((xx - 80) ** 2 + (yy - 60) ** 2) / (2 * 3.0 ** 2))[None, None]
    out = warp_image(blob, H, (h, w))[0, 0]
    iy, ix = divmod(int(out.argmax()), w)
    assert abs(ix - p_b[0]) <= 1.0 and abs(iy - p_b[1]) <= 1.0


def test_sample_homography_no_artifacts_keeps_corners_inside():
    g = torch.Generator().manual_seed(0)
    size = (240, 320)
    H = sample_homography(64, size, {"allow_artifacts": False, "patch_ratio": 0.85,
                                     "perspective_amplitude_x": 0.2, "perspective_amplitude_y": 0.2,
                                     "scaling_amplitude": 0.2, "max_angle": math.pi / 2}, generator=g)
    corners_b = torch.tensor([[0.0, 0.0], [319.0, 0.0], [319.0, 239.0], [0.0, 239.0]]).expand(64, 4, 2)
    corners_a = warp_points(corners_b.double(), torch.linalg.inv(H.double()))
    assert inside_image(corners_a, size, border=-1e-3).all()
    # and they are not all the identity
    assert (H - torch.eye(3)).abs().amax(dim=(1, 2)).min() > 1e-3


def test_sample_homography_is_deterministic_for_a_seed():
    a = sample_homography(4, (60, 80), None, generator=torch.Generator().manual_seed(7))
    b = sample_homography(4, (60, 80), None, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_valid_mask_identity_and_shift():
    eye = torch.eye(3).unsqueeze(0)
    assert warped_valid_mask(eye, (10, 12), (10, 12)).all()
    shift = torch.tensor([[[1.0, 0, 3], [0, 1, 0], [0, 0, 1]]])
    m = warped_valid_mask(shift, (10, 12), (10, 12))[0, 0]
    assert m[:, :3].sum() == 0 and m[:, 3:].all()
    m2 = warped_valid_mask(shift, (10, 12), (10, 12), border=1)[0, 0]
    # only the warp's boundary moves: the image's own border stays valid
    assert m2[:, :4].sum() == 0 and m2[:, 4:].all()
    assert warped_valid_mask(eye, (10, 12), (10, 12), border=3).all()


def test_resize_conjugation_matches_pixel_centres():
    # a pure resize of an image of width 4 -> 8: pixel centre 0 maps to 0.5, 3 maps to 6.5
    S = resize_matrix((4, 4), (8, 8))
    assert torch.allclose(warp_points(torch.tensor([[0.0, 0.0], [3.0, 3.0]], dtype=torch.float64), S),
                          torch.tensor([[0.5, 0.5], [6.5, 6.5]], dtype=torch.float64))
    H = torch.tensor([[1.0, 0, 10], [0, 1, 5], [0, 0, 1]], dtype=torch.float64)
    T = resize_matrix((100, 200), (50, 100))
    C = crop_matrix(2, 3)
    Hs = conjugate_homography(H, T, C @ T)
    p = torch.tensor([[40.0, 30.0]], dtype=torch.float64)
    expected = warp_points(warp_points(p, H), C @ T)
    assert torch.allclose(warp_points(warp_points(p, T), Hs), expected)
