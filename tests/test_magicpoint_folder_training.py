"""configs/magicpoint_folder_train.yaml: MagicPoint (train_base) learns exported labels of an image folder."""
import cv2
import numpy as np
import torch

import settings
from datasets.keypoint_labels import save_keypoint_labels
from models import load_pretrained
from training.checkpoints import latest_checkpoint
from training.magicpoint import MagicPointTask
from training.trainer import Trainer
from utils.config import load_config
from utils.keypoints import semi_to_heatmap

H, W = 48, 64


def test_train_base_learns_folder_labels(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    root.mkdir()
    labels = settings.exper_path() / "lab" / "predictions"
    points = {}
    for i in range(2):  # smooth random texture; labels at 5 arbitrary pixels away from the border
        img = cv2.GaussianBlur(rng.integers(0, 256, (H, W)).astype(np.uint8), (5, 5), 0)
        cv2.imwrite(str(root / f"im{i}.png"), img)
        pts = np.stack([rng.integers(8, W - 8, 5), rng.integers(8, H - 8, 5)], 1).astype(np.float32)
        points[f"im{i}"] = pts
        for split in ("train", "val"):
            save_keypoint_labels(labels / split / f"im{i}.npz", np.c_[pts, np.ones(5, np.float32)], (H, W))
    cfg = load_config("configs/magicpoint_folder_train.yaml", [
        f"data.root={root}", "data.labels=lab/predictions", f"data.preprocessing.resize=[{H},{W}]",
        "data.augmentation.photometric.enable=false", "data.augmentation.homographic.enable=false",
        "pretrained=null", "model.batch_size=2", "model.eval_batch_size=2", "num_workers=0", "device=cpu",
        "precision=fp32", "train_iter=80", "save_interval=80", "validation_interval=80", "validation_size=2"])
    Trainer(cfg, "mp_folder", MagicPointTask(cfg), do_eval=True).train()
    model = load_pretrained(cfg["model"], latest_checkpoint(settings.exper_path() / "mp_folder" / "checkpoints")).eval()
    for name, pts in points.items():
        img = torch.from_numpy(cv2.imread(str(root / f"{name}.png"), cv2.IMREAD_GRAYSCALE)).float()[None, None] / 255
        with torch.no_grad():
            heat = semi_to_heatmap(model(img)["semi"])[0, 0]
        xs, ys = pts[:, 0].astype(int), pts[:, 1].astype(int)
        on = heat[ys, xs]
        off = heat.clone()
        off[ys, xs] = float("nan")
        # the labelled pixels stand out from every other pixel of the image
        assert float(on.min()) > 0.1, (name, on)
        assert float(on.min()) > 10 * float(np.nanmedian(off.numpy())), (name, on)
