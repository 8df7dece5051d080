"""Joint training on real photographs with labels made by the homography-adaptation export:
both losses go down, and a resumed run continues the uninterrupted loss curve."""
import argparse
import shutil
from pathlib import Path

import pytest
import torch

import settings
from datasets.augmentation import Randomness
from datasets.collate import collate
from exporters import detector_labels
from models import build_model, build_network
from models.stand_in import seeded_stand_in
from tests.fixtures.recorder import Recorder
from training.checkpoints import latest_checkpoint, load_checkpoint
from training.superpoint import SuperPointTask
from training.trainer import Trainer
from utils.config import load_config

REPO = Path(__file__).resolve().parent.parent
SIZE = "[96, 128]"


@pytest.fixture
def photos_with_labels(shared_data, tmp_path):
    """Six real photos and their keypoint labels, exported by homography adaptation."""
    root = tmp_path / "photos"
    root.mkdir()
    for p in sorted((shared_data / "photos" / "freiburg").glob("*.png"))[:6]:
        shutil.copy(p, root / p.name)
    weights = REPO / "pretrained" / "magicpoint_synth.pth"
    if not weights.is_file():  # before the trained MagicPoint exists: detector-like seeded weights
        weights = tmp_path / "stand_in.pth"
        torch.save(seeded_stand_in(build_network("SuperPointNet_gauss2")).state_dict(), weights)
    for split in ("train", "val"):  # a folder's splits are the same images unless split files say otherwise
        cfg = load_config(REPO / "configs/magicpoint_folder_export.yaml",
                          [f"data.root={root}", f"data.preprocessing.resize={SIZE}", "data.homography_adaptation.num=8",
                           f"pretrained={weights}", "device=cpu", "num_workers=0", f"data.export_folder={split}"])
        detector_labels.run(cfg, settings.exper_path() / "photos_ha", argparse.Namespace())
    return root


def joint_config(root, **over):
    base = {"data.root": str(root), "data.labels": "photos_ha/predictions", "data.preprocessing.resize": SIZE,
            "model.batch_size": 2, "model.eval_batch_size": 2, "model.learning_rate": 0.001, "num_workers": 0,
            "precision": "fp32", "device": "cpu", "train_iter": 12, "save_interval": 6, "pretrained": "null",
            "tensorboard_interval": 6, "validation_interval": 12, "validation_size": 1, "train_show_interval": 100,
            "model.sparse_loss.params.num_matching_attempts": 200}
    base.update(over)
    return load_config(REPO / "configs/superpoint_folder_train_heatmap.yaml", [f"{k}={v}" for k, v in base.items()])


def losses_on_fixed_batch(task, state_dict, cfg):
    """Detector and descriptor losses of a model on the first training batch (fixed augmentation),
    with batch statistics in batch norm, as in training (the running averages of a short run are not
    settled yet)."""
    torch.manual_seed(0)
    model = build_model(cfg["model"])
    model.load_state_dict(state_dict)
    model.train()
    train_set, _ = task.datasets()
    batch = collate([train_set[i] for i in range(4)])
    prepared = task.prepare(batch, True, Randomness.from_seed(123, torch.device("cpu")), torch.device("cpu"))
    with torch.no_grad():
        _, logs = task.loss(model, prepared)
    return float(logs["loss_det"]), float(logs["loss_desc"])


def test_joint_training_on_real_photos_lowers_both_losses(photos_with_labels):
    torch.set_num_threads(1)
    cfg = joint_config(photos_with_labels, train_iter=40, save_interval=40, validation_interval=40)
    task = SuperPointTask(cfg)
    assert len(task.datasets()[0]) == 6  # every photo has its exported labels
    torch.manual_seed(int(cfg["seed"]))
    initial = build_model(cfg["model"]).state_dict()
    Trainer(cfg, "sp_photos", task, do_eval=True).train()
    final = load_checkpoint(latest_checkpoint(settings.exper_path() / "sp_photos" / "checkpoints"))
    det0, desc0 = losses_on_fixed_batch(task, initial, cfg)
    det1, desc1 = losses_on_fixed_batch(task, final["model_state_dict"], cfg)
    assert det1 < 0.85 * det0 and desc1 < 0.9 * desc0, (det0, det1, desc0, desc1)


def test_resumed_run_continues_the_loss_curve(photos_with_labels):
    torch.set_num_threads(1)
    straight = Recorder(joint_config(photos_with_labels))
    Trainer(straight.config, "straight", straight).train()
    first = Recorder(joint_config(photos_with_labels, train_iter=6))
    Trainer(first.config, "halves", first).train()
    second = Recorder(joint_config(photos_with_labels))
    Trainer(second.config, "halves", second).train()  # resumes at iteration 6
    assert len(straight.losses) == 12 and len(first.losses) + len(second.losses) == 12
    assert first.losses + second.losses == pytest.approx(straight.losses, rel=1e-5, abs=1e-6)
