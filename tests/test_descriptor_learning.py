"""Does the descriptor learn? Each descriptor loss, trained on a handful of real image pairs,
must make mutual nearest-neighbour matching on those same pairs nearly perfect (an overfit
check: a loss or sampling bug that stops learning fails it), and the InfoNCE loss is checked
against its formula written out match by match."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from datasets.augmentation import Randomness
from models import build_model, frozen_modules, load_weights, train_mode
from models.frontend import Frontend, keypoint_settings
from training.descriptor_losses import SparsePairs, infonce_descriptor_loss, sample_sparse_pairs
from training.superpoint import SuperPointTask
from utils.config import load_config
from utils.geometry import inside_image, warp_points
from utils.io import read_image_gray
from utils.keypoints import sample_descriptors
from utils.matching import mutual_nn

REPO = Path(__file__).resolve().parent.parent
SIZE = (120, 160)
STEPS = 200  # Adam steps of the overfit check


def test_infonce_loss_matches_its_formula_match_by_match():
    torch.manual_seed(0)
    B, D, hc, wc = 2, 8, 3, 4
    desc = F.normalize(torch.randn(B, D, hc, wc), dim=1)
    warped = F.normalize(torch.randn(B, D, hc, wc), dim=1)
    # a translation by exactly one cell to the right: A's cell (i, j) is B's cell (i, j + 1)
    H = torch.tensor([[1.0, 0, 8], [0, 1, 0], [0, 0, 1]], dtype=torch.float64).repeat(B, 1, 1)
    cells_a = torch.tensor([[0, 5], [2, 6]])  # (row 0, col 0), (1, 1); (0, 2), (1, 2)
    centers = torch.tensor([[8 * (c % wc) + 3.5, 8 * (c // wc) + 3.5] for c in range(hc * wc)])
    points_b = centers[cells_a] + torch.tensor([8.0, 0.0])
    pairs = SparsePairs(cells_a, points_b, torch.ones(B, 2, dtype=torch.bool),
                        torch.zeros(B, 2, 0, dtype=torch.long), torch.zeros(B, 2, 0, dtype=torch.bool))
    t = 0.1
    loss, _ = infonce_descriptor_loss(desc, warped, pairs, H, temperature=t, exclusion=8.0)

    # by hand: the positive is B's cell one to the right (its centre is exactly p); non-matches are
    # the cells whose centre is more than 8 px from p (in A: whose warped centre is)
    fa, fb = desc.reshape(B, D, -1), warped.reshape(B, D, -1)
    per_image = []
    for b in range(B):
        terms = []
        for m in range(2):
            ca = int(cells_a[b, m])
            cb = ca + 1
            p = points_b[b, m]
            da, db = fa[b, :, ca], fb[b, :, cb]
            pos = float(da @ db)
            far_b = [j for j in range(hc * wc) if float(torch.linalg.norm(centers[j] - p)) > 8.0]
            shifted = centers + torch.tensor([8.0, 0])  # A's centres warped into B
            far_a = [j for j in range(hc * wc) if float(torch.linalg.norm(shifted[j] - p)) > 8.0]
            ab = -pos / t + torch.logsumexp(torch.tensor([pos / t] + [float(da @ fb[b, :, j]) / t for j in far_b]), 0)
            ba = -pos / t + torch.logsumexp(torch.tensor([pos / t] + [float(db @ fa[b, :, j]) / t for j in far_a]), 0)
            terms.append((float(ab) + float(ba)) / 2)
        per_image.append(sum(terms) / len(terms))
    assert float(loss) == pytest.approx(sum(per_image) / B, rel=1e-5)


def test_infonce_loss_is_near_zero_for_distinct_matching_descriptors_and_high_for_random_ones():
    torch.manual_seed(1)
    B, D, hc, wc = 1, 64, 6, 8
    H = torch.eye(3, dtype=torch.float64).unsqueeze(0)
    pairs = sample_sparse_pairs(H, (48, 64), 20, 0, Randomness.from_seed(0, torch.device("cpu")))
    # one-hot descriptors: every cell orthogonal to every other, identical in both images
    onehot = torch.eye(D)[:, : hc * wc].reshape(1, D, hc, wc)
    low, logs = infonce_descriptor_loss(onehot, onehot, pairs, H, temperature=0.05)
    assert float(low) < 1e-6 and float(logs["pos"]) == pytest.approx(1.0)
    other = F.normalize(torch.randn(B, D, hc, wc), dim=1)
    high, _ = infonce_descriptor_loss(onehot, other, pairs, H, temperature=0.05)
    assert float(high) > 1.0


def _pairs_config(loss: str):
    over = ["data.root=unused", "data.labels=null", f"data.preprocessing.resize={list(SIZE)}",
            "model.dense_loss.enable=false", "model.sparse_loss.enable=false", f"model.{loss}_loss.enable=true",
            "model.freeze=[encoder, detector]", "data.augmentation.photometric.enable=false",
            "model.detection_threshold=0.015", "model.nms=4", "model.remove_borders=4", "model.top_k=100",
            "model.subpixel.enable=false"]
    return load_config(REPO / "configs/superpoint_folder_train_heatmap.yaml", over)


@pytest.mark.parametrize("loss", ["dense", "sparse", "infonce"])
def test_each_descriptor_loss_overfits_a_few_real_pairs(shared_data, loss):
    """Three Freiburg frames, each with two fixed random homographies (and photometric noise): after
    STEPS Adam steps on the descriptor head of the shipped MagicPoint (encoder and detector frozen,
    as ``model.freeze: [encoder, detector]``), >= 95 % of the mutual nearest-neighbour matches of its
    detections with their exact warps are correct (within 3 px), from well below that before. The frozen
    encoder's features are computed once; each step runs the head and the configured loss."""
    import cv2

    weights = REPO / "pretrained" / "magicpoint_synth.pth"
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = _pairs_config(loss)
    task = SuperPointTask(cfg)
    frames = sorted((shared_data / "photos" / "freiburg").glob("*.png"))[::6][:3]
    images = torch.stack([torch.from_numpy(cv2.resize(read_image_gray(f), SIZE[::-1], interpolation=cv2.INTER_AREA))
                          for f in frames]).unsqueeze(1).repeat(2, 1, 1, 1)
    prepared = task.prepare({"image": images}, True, Randomness.from_seed(7, torch.device("cpu")), torch.device("cpu"))
    net = build_model(cfg["model"])
    load_weights(net, weights)
    frozen = frozen_modules(net, cfg["model"]["freeze"])
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    net.eval()
    with torch.no_grad():
        feats = {k: net.encode(prepared[f"{k}image"]) for k in ("", "warped_")}

    def accuracy():
        """Share of correct mutual nearest-neighbour matches between A's detections and their exact
        warps in B (every keypoint has its true partner, so only the descriptors decide)."""
        net.eval()
        with torch.no_grad():
            kp = Frontend(net, **keypoint_settings(cfg["model"]), channels_last=False)(prepared["image"]).keypoints
            pts_b = warp_points(kp.points.double(), prepared["homography"].double()).float()
            valid = kp.mask & inside_image(pts_b, SIZE)
            da = sample_descriptors(net(prepared["image"])["desc"], kp.points)
            db = sample_descriptors(net(prepared["warped_image"])["desc"], pts_b)
            ab, mutual = mutual_nn(2 - 2 * torch.bmm(da, db.transpose(1, 2)), valid, valid)
            err = torch.linalg.norm(pts_b.gather(1, ab.unsqueeze(-1).expand(-1, -1, 2)) - pts_b, dim=-1)
        assert int(valid.sum()) >= 200  # enough keypoints to measure
        return float((mutual & (err <= 3.0)).sum() / mutual.sum())

    before = accuracy()
    for _ in range(STEPS):
        train_mode(net, frozen)
        outs = {k: {"desc": net.describe(f)} for k, f in feats.items()}
        loss_value, _ = task.descriptor_loss(outs, prepared)
        opt.zero_grad()
        loss_value.backward()
        opt.step()
    after = accuracy()
    assert before < 0.9
    assert after >= 0.95, f"{loss}: matching accuracy {before:.3f} -> {after:.3f}"
