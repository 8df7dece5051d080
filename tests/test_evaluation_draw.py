"""utils/draw.py: colours and positions of drawn keypoints and matches."""
import numpy as np

from utils.draw import GREEN, RED, draw_keypoints, draw_matches, put_title, save_rgb, side_by_side, to_rgb_uint8


def test_to_rgb_uint8_scales_floats_and_keeps_uint8():
    assert to_rgb_uint8(np.full((2, 3), 1.0, np.float32)).tolist() == [[[255] * 3] * 3] * 2
    assert to_rgb_uint8(np.full((2, 2), 128.0)).max() == 128  # already 0..255
    assert to_rgb_uint8(np.full((1, 4, 4), 7, np.uint8)).shape == (4, 4, 3)


def test_draw_keypoints_at_sub_pixel_positions():
    img = draw_keypoints(np.zeros((20, 30)), np.array([[10.0, 5.0, 0.9]]), radius=2.0)
    ys, xs = np.nonzero(img[..., 1])
    assert abs(xs.mean() - 10) < 0.5 and abs(ys.mean() - 5) < 0.5
    assert img[..., 2].max() == 0  # green only (RGB)


def test_draw_matches_colours_and_offset():
    a, b = np.zeros((20, 30)), np.zeros((20, 40))
    canvas = draw_matches(a, b, np.array([[5.0, 5.0], [5.0, 15.0]]), np.array([[5.0, 5.0], [5.0, 15.0]]),
                          correct=np.array([True, False]), gap=10)
    assert canvas.shape == (20, 30 + 10 + 40, 3)
    # the (anti-aliased) line of match 0 (y = 5) is green, that of match 1 (y = 15) red
    r, g, b_ = canvas[5, 20].astype(int)
    assert g > 150 and r == 0 and b_ == 0
    r, g, b_ = canvas[15, 20].astype(int)
    assert r > 150 and g < 50 and b_ < 50
    # the second image starts after the first one and the gap: its end point is drawn there
    assert canvas[5, 30 + 10 + 5 + 2, 1] > 100
    assert side_by_side([a, b]).shape == (20, 78, 3)
    assert put_title(a, "x").shape == (42, 30, 3)


def test_save_rgb_writes_a_png(tmp_path):
    import cv2

    img = np.zeros((4, 5, 3), np.uint8)
    img[..., 0] = 255  # red in RGB
    save_rgb(tmp_path / "a" / "x.png", img)
    back = cv2.imread(str(tmp_path / "a" / "x.png"))
    assert back[0, 0].tolist() == [0, 0, 255]  # BGR on disk


def test_training_keypoint_overlay_colours():
    import torch

    from training.magicpoint import keypoint_overlay

    img = torch.full((20, 30), 0.5)
    rgb = keypoint_overlay(img, np.array([[5.0, 5.0]]), np.array([[20.0, 12.0]]))
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
    assert rgb[5, 5].tolist() == list(RED) and rgb[5, 7].tolist() == list(RED)  # filled, radius 2
    assert rgb[12, 20].tolist() == list(GREEN)
    assert rgb[0, 0].tolist() == [128, 128, 128]
