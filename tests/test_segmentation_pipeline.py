"""Segmentation end to end: joint training with the head on the real Cityscapes frame, export with
--export-segmentation, evaluation.py --evaluate-segmentation; and dropping keypoints by class."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import settings
from models import build_model
from models.frontend import Frontend
from training.checkpoints import latest_checkpoint, load_checkpoint
from training.losses_segmentation import segmentation_loss
from training.superpoint import SuperPointTask
from training.trainer import Trainer
from utils.config import load_config

REPO = Path(__file__).resolve().parent.parent


def cityscapes_root(shared_data: Path, tmp_path: Path) -> Path:
    """The real sample frame as both the train and the val split of a Cityscapes tree."""
    src = shared_data / "cityscapes_sample"
    root = tmp_path / "Cityscapes"
    for split in ("train", "val"):
        for kind in ("leftImg8bit", "gtFine"):
            d = root / kind / split / "frankfurt"
            d.mkdir(parents=True)
            for f in (src / kind / "val" / "frankfurt").iterdir():
                (d / f.name).symlink_to(f)
    return root


def overrides(root):
    return [f"data.root={root}", "data.preprocessing.resize=[128, 256]", "model.batch_size=1",
            "model.eval_batch_size=1", "model.learning_rate=0.001", "pretrained=null", "num_workers=0",
            "precision=fp32", "device=cpu", "train_iter=15", "save_interval=15", "validation_interval=15",
            "validation_size=1", "tensorboard_interval=5", "train_show_interval=100",
            "model.sparse_loss.params.num_matching_attempts=100",
            "model.sparse_loss.params.num_masked_non_matches_per_match=10"]


def seg_loss_of(state_dict, config, image, seg):
    model = build_model(config["model"])
    model.load_state_dict(state_dict)
    model.eval()
    with torch.no_grad():
        return float(segmentation_loss(model(image)["seg"], seg, 255))


def validation_miou(state_dict, config, task) -> float:
    """The task's validation mIoU of ``state_dict`` on the (single-item) validation split."""
    from datasets.collate import collate

    model = build_model(config["model"])
    model.load_state_dict(state_dict)
    model.eval()
    _, val_set = task.datasets()
    with torch.no_grad():
        return task.validate(model, [collate([val_set[0]])], torch.device("cpu"))["mIoU"]


def miou_by_hand(pred: np.ndarray, gt: np.ndarray, class_ids, ignore: int = 255) -> float:
    """Mean over the classes seen in prediction or ground truth of TP / (GT + PRED - TP), counting
    only pixels whose ground truth is one of the classes."""
    counted = (gt != ignore) & np.isin(gt, class_ids)
    ious = []
    for c in class_ids:
        tp = np.sum(counted & (gt == c) & (pred == c))
        union = np.sum(counted & (gt == c)) + np.sum(counted & (pred == c)) - tp
        if union:
            ious.append(tp / union)
    return float(np.mean(ious))


def test_train_export_evaluate_on_real_cityscapes(shared_data, tmp_path):
    torch.set_num_threads(1)
    root = cityscapes_root(shared_data, tmp_path)
    cfg = load_config(REPO / "configs/superpoint_cityscapes_finetune.yaml", overrides(root))
    task = SuperPointTask(cfg)
    train_set, _ = task.datasets()
    item = train_set[0]
    assert item["seg"].shape == (128, 256)

    torch.manual_seed(int(cfg["seed"]))  # the trainer's initial weights
    initial = build_model(cfg["model"]).state_dict()
    metrics = Trainer(cfg, "cs_seg", task, do_eval=True).train()
    assert "matching_accuracy" in metrics
    ck = load_checkpoint(latest_checkpoint(settings.exper_path() / "cs_seg" / "checkpoints"))
    # the trainer's last validation is that of the saved weights; the initial weights, validated the
    # same way, are the baseline the training must beat
    assert metrics["mIoU"] == pytest.approx(validation_miou(ck["model_state_dict"], cfg, task))
    assert metrics["mIoU"] > validation_miou(initial, cfg, task)
    before = seg_loss_of(initial, cfg, item["image"][None], item["seg"][None])
    after = seg_loss_of(ck["model_state_dict"], cfg, item["image"][None], item["seg"][None])
    assert after < 0.7 * before, (before, after)

    # export with segmentation, then evaluate it
    env_run = dict(cwd=REPO, capture_output=True, text=True, timeout=600)
    r = subprocess.run([sys.executable, "export.py", "export_descriptor", "configs/superpoint_cityscapes_export.yaml",
                        "cs_export", "--export-segmentation", "--set", f"data.root={root}",
                        "--set", "data.preprocessing.resize=[128, 256]", "--set", "pretrained=cs_seg",
                        "--set", "device=cpu"], **env_run)
    assert r.returncode == 0, r.stderr
    pred = settings.exper_path() / "cs_export" / "predictions"
    npz = np.load(pred / "0.npz")
    assert npz["seg"].shape == npz["seg_gt"].shape == (128, 256)
    assert npz["warped_image"].shape == (128, 256) and npz["homography"].shape == (3, 3)
    assert np.array_equal(npz["seg_gt"], item["seg"].numpy())
    r = subprocess.run([sys.executable, "evaluation.py", str(pred), "--evaluate-segmentation", "--outputImg"],
                       **env_run)
    assert r.returncode == 0, r.stderr
    res = json.loads((pred / "segmentation_results.json").read_text())
    assert res["num_images"] == 1
    assert res["mIoU"] == pytest.approx(miou_by_hand(npz["seg"], npz["seg_gt"], res["class_ids"]))
    assert any((pred / "segmentation").glob("*_pred.png"))


class SkyTopModel(torch.nn.Module):
    """Keypoint logits everywhere; segmentation says 'sky' (cs34 id 23) on the top half."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        B, _, H, W = x.shape
        semi = torch.full((B, 65, H // 8, W // 8), -5.0)
        semi[:, 27] = 5.0  # a strong keypoint in the middle of every cell
        seg = torch.zeros(B, 34, H, W)
        seg[:, 7] = 1.0
        seg[:, 23, :, :, ][:, : H // 2] = 2.0
        return {"semi": semi, "desc": torch.nn.functional.normalize(torch.ones(B, 8, H // 8, W // 8), dim=1),
                "seg": seg}


def test_keypoints_on_dropped_classes_are_removed():
    img = torch.zeros(1, 1, 64, 64)
    keep_all = Frontend(SkyTopModel(), detection_threshold=0.1, nms_radius=2, border=0)(img)
    no_sky = Frontend(SkyTopModel(), detection_threshold=0.1, nms_radius=2, border=0, drop_classes=[23])(img)
    y_all = keep_all.keypoints.points[0][keep_all.keypoints.mask[0]][:, 1]
    y_kept = no_sky.keypoints.points[0][no_sky.keypoints.mask[0]][:, 1]
    assert (y_all < 32).any() and len(y_kept) > 0
    assert (y_kept >= 32).all() and len(y_kept) == int((y_all >= 32).sum())


def test_drop_class_names_resolve_and_bad_names_fail():
    from utils.segmentation_labels import class_ids
    assert class_ids("cs34", ["sky", "Person", 26]) == [23, 24, 26]
    assert class_ids("cs4", ["sky", "dynamic"]) == [2, 3]
    with pytest.raises(ValueError, match="drop_keypoints_on.*unknown class 'skyy'"):
        class_ids("cs34", ["skyy"])


def test_joint_training_on_real_coco_panoptic(shared_data, tmp_path):
    """train_joint with data.dataset: coco_panoptic and load_panoptic: true on the real COCO sample
    (panoptic PNGs + JSON decoded on the fly into Cityscapes-34 labels)."""
    torch.set_num_threads(1)
    src = shared_data / "coco_sample"
    root = tmp_path / "COCO"
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):  # the two sample images serve as both splits
        (root / f"{split}2017").symlink_to(src / "val2017")
        (root / "annotations" / f"panoptic_{split}2017").symlink_to(src / "annotations" / "panoptic_val2017")
        (root / "annotations" / f"panoptic_{split}2017.json").symlink_to(src / "annotations" / "panoptic_val2017.json")
    cfg = load_config(REPO / "configs/superpoint_cityscapes_finetune.yaml",
                      overrides(root) + ["data.dataset=coco_panoptic", "data.load_panoptic=true", "train_iter=3",
                                         "model.batch_size=2", "model.eval_batch_size=2"])
    task = SuperPointTask(cfg)
    item = task.datasets()[0][0]
    assert item["seg"].shape == (128, 256)
    values = set(item["seg"].unique().tolist())
    assert values <= set(range(34)) | {255} and len(values - {255}) >= 2  # real classes, void ignored
    metrics = Trainer(cfg, "coco_seg", task, do_eval=True).train()
    ck = load_checkpoint(latest_checkpoint(settings.exper_path() / "coco_seg" / "checkpoints"))
    # the reported mIoU is that of the saved weights' segmentation of the validation items, by hand
    model = build_model(cfg["model"])
    model.load_state_dict(ck["model_state_dict"])
    model.eval()
    val_items = [task.datasets()[1][i] for i in range(2)]
    with torch.no_grad():
        preds = [model(it["image"][None])["seg"].argmax(1)[0].numpy() for it in val_items]
    gts = [it["seg"].numpy() for it in val_items]
    expected = miou_by_hand(np.stack(preds), np.stack(gts), list(range(34)))
    assert metrics["mIoU"] == pytest.approx(expected)
    assert ck["n_iter"] == 3 and any(k.startswith("seg_head.") for k in ck["model_state_dict"])
