"""The warped pairs of joint training (datasets.pairs.prepare_batch) and the global-batch rows of
Randomness (a sample's draws do not depend on how the global batch is split over processes)."""
import pytest
import torch

from datasets.augmentation import Randomness
from datasets.pairs import prepare_batch
from training.descriptor_losses import sample_sparse_pairs
from utils.config import load_config
from utils.geometry import warp_points

CPU = torch.device("cpu")


def joint_data_cfg(*extra):
    return load_config(None, ["data.warped_pair.enable=true", "data.augmentation.photometric.enable=true",
                              "data.gaussian_label.enable=true", *extra])["data"]


def squares_batch(n=4, h=48, w=64):
    from datasets.collate import collate
    from tests.fixtures.squares import Squares
    ds = Squares(None, "train", size=(h, w))
    return collate([ds[i] for i in range(n)])


def test_a_sample_is_augmented_the_same_whatever_the_split_of_the_global_batch():
    cfg = joint_data_cfg()
    batch = squares_batch(4)
    whole = prepare_batch(batch, cfg, True, Randomness.from_seed(7, CPU), CPU)
    whole_pairs = sample_sparse_pairs(whole["homography"], (48, 64), 20, 5, Randomness.from_seed(8, CPU),
                                      warped_valid_mask=whole["warped_valid_mask"])
    for rank in (0, 1):  # two processes: rank r holds global rows r, r + 2 (the sampler's order)
        rows = torch.tensor([rank, rank + 2])
        part = {k: (v[rows] if isinstance(v, torch.Tensor) else [v[i] for i in rows]) for k, v in batch.items()}
        out = prepare_batch(part, cfg, True, Randomness.from_seed(7, CPU, rows=rows, global_batch=4), CPU)
        for k, v in out.items():
            if isinstance(v, torch.Tensor):
                assert torch.allclose(v, whole[k][rows], atol=1e-6), k
            else:
                assert v == whole[k], k
        pairs = sample_sparse_pairs(out["homography"], (48, 64), 20, 5,
                                    Randomness.from_seed(8, CPU, rows=rows, global_batch=4),
                                    warped_valid_mask=out["warped_valid_mask"])
        for a, b in zip(pairs, whole_pairs):
            assert torch.equal(a, b[rows])


def test_randomness_rows_are_checked():
    with pytest.raises(ValueError, match="global_batch"):
        Randomness.from_seed(0, CPU, rows=torch.tensor([0, 4]), global_batch=4)
    rng = Randomness.from_seed(0, CPU, rows=torch.tensor([1]), global_batch=2)
    with pytest.raises(ValueError, match="1 rows"):
        rng.rand(3)


def test_warped_image_labels_and_masks_follow_the_homography():
    cfg = joint_data_cfg("data.augmentation.photometric.enable=false")
    batch = squares_batch(2)
    out = prepare_batch(batch, cfg, True, Randomness.from_seed(3, CPU), CPU)
    H = out["homography"].double()
    # the warped image seen at H p equals the image at p, for pixel centres well inside both
    ys, xs = torch.meshgrid(torch.arange(6, 42).double(), torch.arange(6, 58).double(), indexing="ij")
    p = torch.stack([xs, ys], -1).reshape(1, -1, 2).expand(2, -1, -1)
    q = warp_points(p, H)
    for b in range(2):
        inside = (q[b, :, 0] > 1) & (q[b, :, 0] < 62) & (q[b, :, 1] > 1) & (q[b, :, 1] < 46)
        qi, pi = q[b][inside].round().long(), p[b][inside].long()
        # compare where the image is flat (away from the square's edges), so rounding does not matter
        img = batch["image"][b, 0]
        flat = torch.nn.functional.max_pool2d(img[None, None], 5, 1, 2)[0, 0] == \
            -torch.nn.functional.max_pool2d(-img[None, None], 5, 1, 2)[0, 0]
        sel = flat[pi[:, 1], pi[:, 0]]
        assert sel.sum() > 100
        got = out["warped_image"][b, 0, qi[sel, 1], qi[sel, 0]]
        assert torch.allclose(got, img[pi[sel, 1], pi[sel, 0]], atol=1e-4)
        # valid mask: 1 where the pixel sees the image, 0 where it does not (the 3 px margin,
        # eroded from the edges of both the image's footprint and the frame, is left out)
        grid = torch.stack(torch.meshgrid(torch.arange(64.0), torch.arange(48.0), indexing="xy"), -1)
        back = warp_points(grid.reshape(1, -1, 2).double(), torch.linalg.inv(H[b:b + 1]))[0]
        in_frame = ((grid[..., 0] >= 3) & (grid[..., 0] <= 60) & (grid[..., 1] >= 3) & (grid[..., 1] <= 44))
        far_inside = ((back[:, 0] > 9) & (back[:, 0] < 54) & (back[:, 1] > 9) & (back[:, 1] < 38)).view(48, 64)
        far_inside &= in_frame
        assert far_inside.sum() > 300
        outside = ((back[:, 0] < -1) | (back[:, 0] > 64) | (back[:, 1] < -1) | (back[:, 1] > 48)).view(48, 64)
        assert (out["warped_valid_mask"][b, 0][far_inside] == 1).all()
        assert (out["warped_valid_mask"][b, 0][outside] == 0).all()
    # labels: the warped keypoints, and Gaussian heatmaps peaking at 1 on them
    wpts = warp_points(batch["keypoints"].double(), H)
    for b in range(2):
        for x, y in wpts[b].tolist():
            if 0 <= round(x) < 64 and 0 <= round(y) < 48:
                assert out["warped_label_map"][b, 0, round(y), round(x)] == 1
                assert out["warped_label_heat"][b, 0, round(y), round(x)] == pytest.approx(1.0)
    assert out["warped_label_map"].sum() <= 8 and out["label_heat"].max() == pytest.approx(1.0)


def test_points_that_left_the_image_are_no_labels_of_the_warped_image():
    # homographic augmentation of A pushes a point outside A; the pair's warp (a zoom-out here)
    # would bring it back inside B: it must not become a label there
    cfg = joint_data_cfg("data.augmentation.photometric.enable=false")
    zoom_out = torch.tensor([[0.5, 0.0, 16.0], [0.0, 0.5, 12.0], [0.0, 0.0, 1.0]])  # A -> B: centre half-size
    image = torch.zeros(1, 1, 48, 64)
    pts = torch.tensor([[[-10.0, 20.0], [30.0, 20.0]]])  # the first lies outside A

    class Fixed(Randomness):
        def homographies(self, batch, size, params):
            return zoom_out.expand(batch, 3, 3).clone()

    g = torch.Generator().manual_seed(0)
    out = prepare_batch({"image": image, "keypoints": pts, "keypoint_mask": torch.ones(1, 2, dtype=torch.bool)},
                        cfg, True, Fixed(g, g), CPU)
    assert out["label_map"].sum() == 1
    assert out["warped_label_map"].sum() == 1 and out["warped_label_map"][0, 0, 22, 31] == 1  # (30,20) -> (31,22)
