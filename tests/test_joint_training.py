"""SuperPoint joint training on the squares fixture: both losses go down, a resumed run continues
the same run, bf16 / fp16 (with the loss scaler) stay finite, validation measures matching, and
the COCO / KITTI configs carry the reference values."""
import math

import numpy as np
import pytest
import torch

import datasets
import settings
from datasets.augmentation import Randomness
from datasets.collate import collate
from models import build_model, extract_state_dict
from models.frontend import FrontendOutput
from tests.fixtures.recorder import Recorder
from training.checkpoints import latest_checkpoint, list_checkpoints, load_checkpoint
from training.superpoint import SuperPointTask, matches_overlay, matching_counts, mutual_nn_matches
from training.trainer import Trainer
from utils.config import ConfigError, load_config
from utils.keypoints import Keypoints

pytestmark = pytest.mark.numerics  # run again under lower CPU kernel sets (tests/lower_kernels.py)

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def squares_dataset(monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, "squares", "tests.fixtures.squares:Squares")
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared, busy CPU: one intra-op thread is faster
    yield
    torch.set_num_threads(n)


def config(kind="sparse", **over):
    base = ["data.dataset=squares", "data.warped_pair.enable=true", "data.augmentation.photometric.enable=true",
            "data.gaussian_label.enable=true", "model.batch_size=4", "model.eval_batch_size=4", "num_workers=0",
            "precision=fp32", "device=cpu", "train_iter=6", "save_interval=3", "tensorboard_interval=2",
            "validation_interval=3", "validation_size=1", "train_show_interval=3", "model.lambda_loss=1",
            f"model.dense_loss.enable={kind == 'dense'}", f"model.sparse_loss.enable={kind == 'sparse'}",
            "model.sparse_loss.params.num_matching_attempts=50",
            "model.sparse_loss.params.num_masked_non_matches_per_match=20",
            "model.dense_loss.params.lambda_d=250", "model.dense_loss.params.chunk_size=20"]
    return load_config(None, base + [f"{k}={v}" for k, v in over.items()])


def validation_of(cfg, state):
    """The task's validation metrics of weights ``state`` on the first 8 validation items."""
    task = SuperPointTask(cfg)
    net = build_model(cfg["model"])
    net.load_state_dict(state)
    net.eval()
    _, val_set = task.datasets()
    batches = [collate([val_set[i] for i in range(k, k + 4)]) for k in (0, 4)]
    with torch.no_grad():
        return task.validate(net, batches, CPU)


def fixed_batch_losses(cfg, state):
    """Detector and descriptor losses of weights ``state`` on 8 fixed training pairs."""
    task = SuperPointTask(cfg)
    net = build_model(cfg["model"])
    net.load_state_dict(state)
    train_set, _ = task.datasets()
    batch = collate([train_set[i] for i in range(8)])
    prepared = task.prepare(batch, True, Randomness.from_seed(123, CPU), CPU)
    with torch.no_grad():
        _, logs = task.loss(net, prepared)
    return float(logs["loss_det"] + logs["loss_det_warp"]), float(logs["loss_desc"])


@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_a_short_run_lowers_detector_and_descriptor_losses(kind):
    cfg = config(kind, train_iter=20, save_interval=100, tensorboard_interval=100, validation_interval=20)
    torch.manual_seed(cfg["seed"])
    init = build_model(cfg["model"]).state_dict()
    metrics = Trainer(cfg, kind, SuperPointTask(cfg), do_eval=True).train()
    final = extract_state_dict(load_checkpoint(latest_checkpoint(settings.exper_path() / kind / "checkpoints")))
    det0, desc0 = fixed_batch_losses(cfg, init)
    det1, desc1 = fixed_batch_losses(cfg, final)
    # (same pairs, same draws: no sampling noise; over seeds 0-3 the ratios were <= 0.74 / 0.90)
    assert det1 < 0.9 * det0 and desc1 < 0.95 * desc0, (det0, det1, desc0, desc1)
    assert set(metrics) >= {"precision", "recall", "mAP", "matching_accuracy", "matches_per_image"}
    assert metrics["matches_per_image"] > 0


def test_validation_matches_everything_on_identical_pairs():
    # identity "warps": image B is image A, so every keypoint's mutual nearest neighbour is its own
    # copy, at 0 px: matching accuracy is exactly 1 and there is one match per keypoint
    identity = {f"data.warped_pair.params.{k}": "false" for k in ("translation", "rotation", "scaling", "perspective")}
    cfg = config(**identity, **{"data.warped_pair.params.patch_ratio": 1.0})
    torch.manual_seed(0)
    state = build_model(cfg["model"]).state_dict()
    m = validation_of(cfg, state)
    assert m["matching_accuracy"] == 1.0 and m["matches_per_image"] > 5
    # the same weights on real warps: strictly fewer correct matches
    assert validation_of(config(), state)["matching_accuracy"] < 1.0




class CountingNet(torch.nn.Module):
    """The network, counting the images it is run on."""

    def __init__(self, net):
        super().__init__()
        self.net, self.images = net, 0

    def forward(self, x):
        self.images += x.shape[0]
        return self.net(x)


def test_validation_runs_the_network_once_per_image_with_the_metrics_of_separate_passes():
    from evaluations.detection_pr import DetectionAccumulator
    from models.frontend import Frontend, keypoint_settings

    cfg = config()
    task = SuperPointTask(cfg)
    torch.manual_seed(0)
    net = CountingNet(build_model(cfg["model"]).eval())
    _, val_set = task.datasets()
    batches = [collate([val_set[i] for i in range(k, k + 4)]) for k in (0, 4)]
    with torch.no_grad():
        metrics = task.validate(net, batches, CPU)
    assert net.images == 2 * 8  # each image and each warped image once
    # the same metrics from a pass of its own for the detections and one per side for matching
    acc, rng = DetectionAccumulator(distance=2.0), Randomness.from_seed(0, CPU)
    frontend = Frontend(net, **keypoint_settings(cfg["model"]))
    correct = total = 0
    with torch.no_grad():
        for batch in batches:
            prepared = task.prepare(batch, False, rng, CPU)
            task.validate_detections(acc, net, prepared)
            c, t = matching_counts(frontend(prepared["image"]), frontend(prepared["warped_image"]),
                                   prepared["homography"], task.match_distance)
            correct, total = correct + c, total + t
    expected = {**task.detection_metrics(acc), "matching_accuracy": correct / total, "matches_per_image": total / 8}
    assert metrics == expected and total > 0 and metrics["recall"] > 0


def test_resume_continues_the_same_loss_curve():
    cfg = config()
    straight = Recorder(cfg)
    Trainer(cfg, "straight", straight).train()
    first, second = Recorder(cfg), Recorder(cfg)
    Trainer(config(train_iter=3), "halves", first).train()
    Trainer(cfg, "halves", second).train()  # resumes from checkpoint 3
    assert first.losses + second.losses == pytest.approx(straight.losses, rel=1e-6)
    w1 = load_checkpoint(latest_checkpoint(settings.exper_path() / "straight" / "checkpoints"))["model_state_dict"]
    w2 = load_checkpoint(latest_checkpoint(settings.exper_path() / "halves" / "checkpoints"))["model_state_dict"]
    for k in w1:
        assert torch.allclose(w1[k].float(), w2[k].float(), atol=1e-6), k


def test_bf16_autocast_on_cpu_trains_finite():
    cfg = config("dense", precision="bf16", train_iter=3)
    task = Recorder(cfg)
    Trainer(cfg, "bf16", task).train()
    assert len(task.losses) == 3 and all(math.isfinite(v) for v in task.losses)
    w = load_checkpoint(latest_checkpoint(settings.exper_path() / "bf16" / "checkpoints"))["model_state_dict"]
    assert all(torch.isfinite(v.float()).all() for v in w.values())


def test_fp16_with_loss_scaler_trains_saves_and_resumes_the_scaler(monkeypatch):
    # fp16 is refused on the CPU by configuration; force it to run the GradScaler code path here
    import training.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "autocast_dtype", lambda precision, device: torch.float16)
    over = {"model.grad_clip": 1.0, "model.batch_size": 2, "save_interval": 1}  # (fp16 is slow on CPUs)
    cfg = config(train_iter=1, **over)
    t = Trainer(cfg, "fp16", Recorder(cfg))
    t.train()
    assert t.scaler is not None and t.scaler.is_enabled()
    ck = load_checkpoint(latest_checkpoint(settings.exper_path() / "fp16" / "checkpoints"))
    assert "scaler_state_dict" in ck and ck["scaler_state_dict"]["scale"] > 0
    assert all(torch.isfinite(v.float()).all() for v in ck["model_state_dict"].values())
    t2 = Trainer(cfg, "fp16", Recorder(cfg))
    t2._build()  # what a resumed run starts from: the checkpoint's scaler state
    assert t2.n_iter == 1 and t2.scaler.state_dict()["scale"] == ck["scaler_state_dict"]["scale"]


def outputs(points, desc):
    pts = torch.tensor(points, dtype=torch.float32)[None]
    kp = Keypoints(pts, torch.ones(pts.shape[:2]), torch.ones(pts.shape[:2], dtype=torch.bool))
    return FrontendOutput(kp, torch.nn.functional.normalize(torch.tensor(desc, dtype=torch.float32), dim=-1)[None],
                          None, {})


def test_matching_accuracy_on_a_hand_made_pair():
    # B = A shifted by (+10, +5); descriptors: A's keypoint i is e_i; in B, the true images of
    # keypoints 0 and 1 carry e_0 and e_1, keypoint 2's image carries e_3 and a distractor far away
    # carries e_2 -> 3 mutual matches, 2 correct (within 3 px)
    H = torch.tensor([[[1.0, 0, 10], [0, 1, 5], [0, 0, 1]]])
    a = outputs([[10, 10], [30, 20], [50, 40]], [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    b = outputs([[20, 15], [41, 26], [60, 45], [5, 50]], [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]])
    ab, mutual = mutual_nn_matches(a.descriptors, a.keypoints.mask, b.descriptors, b.keypoints.mask)
    assert ab[0].tolist() == [0, 1, 3] and mutual.all()
    assert matching_counts(a, b, H, 3.0) == (2, 3)  # (41, 26) is 1.4 px from (40, 25)
    assert matching_counts(a, b, H, 1.0) == (1, 3)


def test_matches_overlay_draws_the_hand_made_pair():
    H = torch.tensor([[[1.0, 0, 10], [0, 1, 5], [0, 0, 1]]])
    a = outputs([[10, 10], [30, 20], [50, 40]], [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    b = outputs([[20, 15], [41, 26], [60, 45], [5, 50]], [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]])
    img = torch.zeros(60, 70)
    rgb = matches_overlay(img, img, a, b, H, 3.0)
    assert rgb.shape == (60, 140, 3) and rgb.dtype == np.uint8
    # A(10,10) -> B(20,15) correct: green at both ends; A(50,40) -> B(5,50) wrong: red
    def strongest(x, y):  # brightest R, G, B around an end point (the lines are anti-aliased)
        return rgb[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).max(0).astype(int)

    for (x, y) in [(10, 10), (70 + 20, 15)]:
        r, g, _ = strongest(x, y)
        assert g > 150 and r < 60, (x, y, r, g)
    for (x, y) in [(50, 40), (70 + 5, 50)]:
        r, g, _ = strongest(x, y)
        assert r > 150 and g < 60, (x, y, r, g)
    assert rgb[55, 30].tolist() == [0, 0, 0]  # away from every line


def test_padded_keypoints_never_match():
    a = outputs([[10, 10], [30, 20]], [[1, 0], [0, 1]])
    b = outputs([[10, 10], [30, 20]], [[1, 0], [0, 1]])
    b.keypoints.mask[0, 1] = False  # padding
    _, mutual = mutual_nn_matches(a.descriptors, a.keypoints.mask, b.descriptors, b.keypoints.mask)
    assert mutual[0].tolist() == [True, False]


def test_joint_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="warped_pair.enable"):
        SuperPointTask(config(**{"data.warped_pair.enable": False}))
    with pytest.raises(ConfigError, match="dense_loss.enable and model.sparse_loss.enable"):
        SuperPointTask(config(**{"model.dense_loss.enable": True}))
    with pytest.raises(ConfigError, match="model.sparse_loss.params.dist"):
        SuperPointTask(config(**{"model.sparse_loss.params.dist": "cosine"}))
    detector_only = SuperPointTask(config(**{"model.lambda_loss": 0}))
    assert detector_only.descriptor_loss_kind is None and detector_only.unused_parameters


@pytest.mark.parametrize("path, dataset, size, batch, attempts, iters", [
    ("configs/superpoint_coco_train_heatmap.yaml", "coco", [240, 320], 8, 1000, 200000),
    ("configs/superpoint_kitti_train_heatmap.yaml", "kitti", [384, 1248], 4, 600, 170000),
])
def test_reference_configs_load_with_their_values(path, dataset, size, batch, attempts, iters):
    cfg = load_config(path)
    d, m = cfg["data"], cfg["model"]
    assert d["dataset"] == dataset and d["preprocessing"]["resize"] == size and d["labels"]
    assert d["warped_pair"]["enable"] and d["gaussian_label"] == {"enable": True, "sigma": 0.2}
    assert d["augmentation"]["photometric"]["enable"] and not d["augmentation"]["homographic"]["enable"]
    assert d["warped_pair"]["params"]["patch_ratio"] == 0.85 and d["warped_pair"]["params"]["allow_artifacts"]
    assert m["name"] == "SuperPointNet_gauss2" and m["batch_size"] == batch and m["learning_rate"] == 1e-4
    assert m["lambda_loss"] == 1 and m["sparse_loss"]["enable"] and not m["dense_loss"]["enable"]
    assert m["sparse_loss"]["params"]["num_matching_attempts"] == attempts
    assert m["sparse_loss"]["params"]["num_masked_non_matches_per_match"] == 100
    assert cfg["train_iter"] == iters
    task = SuperPointTask(cfg)
    assert task.descriptor_loss_kind == "sparse"


def test_train_joint_command_line_with_the_coco_config():
    import train4

    argv = ["train_joint", "configs/superpoint_coco_train_heatmap.yaml", "cli", "--eval", "--debug",
            "--set", "data.dataset=squares", "--set", "num_workers=0", "--set", "device=cpu",
            "--set", "precision=fp32", "--set", "train_iter=2", "--set", "validation_interval=2",
            "--set", "validation_size=1", "--set", "model.sparse_loss.params.num_matching_attempts=20",
            "--set", "model.sparse_loss.params.num_masked_non_matches_per_match=5"]
    assert train4.main(argv) == 0
    exp = settings.exper_path() / "cli"
    assert (exp / "config.yml").is_file()
    assert [i for i, _ in list_checkpoints(exp / "checkpoints")] == [2]
    events = list((settings.runs_path() / "cli").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0


def test_a_finished_run_validates_again_with_eval():
    cfg = config(train_iter=1, validation_interval=100)
    Trainer(cfg, "done", SuperPointTask(cfg)).train()
    metrics = Trainer(cfg, "done", SuperPointTask(cfg), do_eval=True).train()  # nothing left to train
    assert "matching_accuracy" in metrics and "precision" in metrics
