"""The reference README's commands that used to fail or do something silently wrong: each one works,
or stops with a one-line error that names the fix."""
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import datasets
import settings
from evaluations.segmentation import evaluate_segmentation_folder
from models import build_model, build_network, load_weights
from tests.fixtures.image_trees import coco_tree
from training.checkpoints import resolve_pretrained, save_checkpoint
from training.magicpoint import MagicPointTask
from training.trainer import Trainer
from utils.config import load_config
from utils.segmentation_labels import CS4_CLASSES, CS34_TO_CS4

REPO = Path(__file__).resolve().parent.parent
RUN = dict(cwd=REPO, capture_output=True, text=True, timeout=600)


def error_line(r: subprocess.CompletedProcess) -> str:
    """The command's one-line error (exit code 2, a single `error:` line on stderr)."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.stderr[-2000:]
    return errors[0]


# ---- tensorboard --logdir runs: the viewer is installed and sees every validation --------------
def test_tensorboard_reads_the_run_including_its_last_validation(monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setitem(datasets.DATASETS, "squares", "tests.fixtures.squares:Squares")
    cfg = load_config(None, ["data.dataset=squares", "model.batch_size=4", "model.eval_batch_size=4",
                             "num_workers=0", "precision=fp32", "device=cpu", "train_iter=5", "save_interval=100",
                             "tensorboard_interval=1", "validation_interval=3", "validation_size=1",
                             "train_show_interval=100"])
    metrics = Trainer(cfg, "tb_run", MagicPointTask(cfg), do_eval=True).train()
    events = EventAccumulator(str(settings.runs_path() / "tb_run")).Reload()
    val_tags = [t for t in events.Tags()["scalars"] if t.startswith("val/")]
    assert val_tags
    for tag in val_tags:  # the validation inside the loop (3) and the one at train_iter (5)
        assert [e.step for e in events.Scalars(tag)] == [3, 5], tag
    last = {t[len("val/"):]: events.Scalars(t)[-1].value for t in val_tags}
    assert last == pytest.approx({k: metrics[k] for k in last}, rel=1e-6)
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5]


# ---- pretrained: logs/<name> follows SUPERPOINT_EXPER_DIR ----------------------------------------
def test_pretrained_logs_prefix_resolves_in_the_experiment_dir():
    cfg = load_config(REPO / "configs/superpoint_cityscapes_export.yaml", ["device=cpu"])
    assert cfg["pretrained"] == "logs/superpoint_cityscapes"
    net = build_network("SuperPointNet_gauss2")
    ckpt = save_checkpoint(settings.exper_path() / "superpoint_cityscapes" / "checkpoints", 7, net)
    assert settings.exper_path() != REPO / "logs"  # conftest points SUPERPOINT_EXPER_DIR elsewhere
    assert resolve_pretrained(cfg) == ckpt
    # repository-relative paths still work
    assert resolve_pretrained({"pretrained": "pretrained/magicpoint_synth.pth"}) == \
        REPO / "pretrained" / "magicpoint_synth.pth"


# ---- --category-file utils/cs4_categories.json on a cs34 export ----------------------------------
CS4_COLOURS = {tuple(c.color) for c in CS4_CLASSES}


def test_cs34_export_scored_and_drawn_with_the_cs4_categories(tmp_path):
    pred = tmp_path / "predictions"
    pred.mkdir()
    # cs34 ids (void 0-3 predicted, 255 = ignored ground truth); in cs4:
    #   gt   [[flat, flat, sky, -], [dyn, dyn, struct, struct]]
    #   pred [[flat, dyn, sky, void], [dyn, void, struct, flat]]
    np.savez(pred / "0.npz", seg=np.array([[7, 26, 23, 0], [26, 1, 11, 22]], np.int32),
             seg_gt=np.array([[7, 8, 23, 255], [26, 24, 11, 21]], np.int32),
             warped_seg=np.array([[23, 7], [5, 7]], np.int32), warped_seg_gt=np.array([[23, 23], [255, 7]], np.int32),
             seg_label_set=np.str_("cs34"))
    r = evaluate_segmentation_folder(pred, output_img=True, category_file=str(REPO / "utils/cs4_categories.json"))
    assert r["mapping"] == "cs34 -> cs4" and r["label_set"] == "cs34"
    # flat: TP 1, gt 2, pred 2 -> 1/3; structure: TP 1, gt 2, pred 1 -> 1/2; sky 1; dynamic: TP 1, gt 2, pred 2 -> 1/3
    assert r["per_class_iou"] == pytest.approx({"flat": 1 / 3, "structure": 0.5, "sky": 1.0, "dynamic": 1 / 3})
    assert r["mIoU"] == pytest.approx(13 / 24) and r["pixel_accuracy"] == pytest.approx(4 / 7)
    assert r["num_pixels"] == 7
    # warped: sky TP 1, gt 2, pred 1 -> 1/2; flat TP 1, gt 1, pred 2 -> 1/2;
    # the dynamic prediction is on an ignored pixel
    w = r["warped"]
    assert w["per_class_iou"] == pytest.approx({"flat": 0.5, "structure": None, "sky": 0.5, "dynamic": None})
    assert w["pixel_accuracy"] == pytest.approx(2 / 3) and w["num_images"] == 1
    img = cv2.imread(str(pred / "segmentation" / "0_pred.png"))[..., ::-1]
    assert img[0, 1].tolist() == [220, 20, 60] and img[1, 3].tolist() == [128, 64, 128]  # dynamic, flat
    assert img[0, 3].tolist() == [0, 0, 0]  # a void prediction has no cs4 class
    gt = cv2.imread(str(pred / "segmentation" / "0_warped_gt.png"))[..., ::-1]
    assert gt[0, 0].tolist() == [70, 130, 180] and gt[1, 0].tolist() == [0, 0, 0]
    table = (pred / "segmentation_results.txt").read_text()
    assert "warped_seg: images: 1" in table

    # an export that does not record its label set: cs34 ids beyond 0-3 give it away
    # (its warped_seg has no ground truth: counted as not scored)
    np.savez(pred / "0.npz", seg=np.array([[7, 26]], np.int32), seg_gt=np.array([[7, 24]], np.int32),
             warped_seg=np.array([[7, 7]], np.int32))
    r = evaluate_segmentation_folder(pred, category_file=str(REPO / "utils/cs4_categories.json"))
    assert r["mapping"] == "cs34 -> cs4" and r["mIoU"] == 1.0
    assert r["warped"] is None and r["warped_unscored"] == 1
    # a cs4 export: its own classes by default; the 34 classes are an error naming the fix
    np.savez(pred / "0.npz", seg=np.array([[0, 3]], np.int32), seg_gt=np.array([[0, 2]], np.int32),
             seg_label_set=np.str_("cs4"))
    r = evaluate_segmentation_folder(pred)
    assert list(r["per_class_iou"]) == ["flat", "structure", "sky", "dynamic"] and r["pixel_accuracy"] == 0.5
    cats = tmp_path / "cs34.json"
    subprocess.run([sys.executable, "utils/create_cs34_categories_json.py", "--dst", str(cats)], check=True, **RUN)
    with pytest.raises(ValueError, match="cs4 predictions; pass --category-file utils/cs4_categories.json"):
        evaluate_segmentation_folder(pred, category_file=str(cats))


def cityscapes_val(shared_data: Path, tmp_path: Path) -> Path:
    src = shared_data / "cityscapes_sample"
    root = tmp_path / "Cityscapes"
    for kind in ("leftImg8bit", "gtFine"):
        d = root / kind / "val" / "frankfurt"
        d.mkdir(parents=True)
        for f in (src / kind / "val" / "frankfurt").iterdir():
            (d / f.name).symlink_to(f)
    return root


def test_cityscapes_commands_of_the_reference_readme(shared_data, tmp_path):
    """export (pretrained: logs/superpoint_cityscapes, in SUPERPOINT_EXPER_DIR) with
    --export-segmentation, then evaluation with the cs4 categories: coloured pictures, both images scored."""
    torch.manual_seed(0)
    cfg = load_config(REPO / "configs/superpoint_cityscapes_export.yaml")
    save_checkpoint(settings.exper_path() / "superpoint_cityscapes" / "checkpoints", 3, build_model(cfg["model"]))
    root = cityscapes_val(shared_data, tmp_path)
    r = subprocess.run([sys.executable, "export.py", "export_descriptor", "configs/superpoint_cityscapes_export.yaml",
                        "cityscapes_export", "--export-segmentation", "--set", f"data.root={root}",
                        "--set", "data.preprocessing.resize=[64, 128]", "--set", "device=cpu"], **RUN)
    assert r.returncode == 0, r.stderr[-2000:]
    pred = settings.exper_path() / "cityscapes_export" / "predictions"
    with np.load(pred / "0.npz") as f:
        assert str(f["seg_label_set"]) == "cs34"
        gt, wgt = f["seg_gt"], f["warped_seg_gt"]
    r = subprocess.run([sys.executable, "evaluation.py", str(pred), "--category-file", "utils/cs4_categories.json",
                        "--outputImg"], **RUN)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "mIoU" in r.stdout and "warped_seg mIoU" in r.stdout
    res = json.loads((pred / "segmentation_results.json").read_text())
    counted = np.isin(gt, list(CS34_TO_CS4))  # the pixels with a cs4 class
    assert res["mapping"] == "cs34 -> cs4" and res["num_pixels"] == int(counted.sum()) > 0
    assert res["warped"]["num_pixels"] == int(np.isin(wgt, list(CS34_TO_CS4)).sum())
    picture = cv2.imread(str(pred / "segmentation" / "0_gt.png"))[..., ::-1]
    colours = {tuple(c) for c in picture.reshape(-1, 3).tolist()}
    assert colours - {(0, 0, 0)} <= CS4_COLOURS and len(colours - {(0, 0, 0)}) >= 2
    assert (picture.reshape(-1, 3).any(axis=1)).sum() == counted.sum()  # every counted pixel is coloured


# ---- export_detector_homoAdapt with a segmentation head -----------------------------------------
def test_homography_adaptation_rejects_export_segmentation_and_runs_seg_models_quietly(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "seg_model.pth"
    torch.save(build_model(load_config(None, ["model.segmentation_head.enable=true"])["model"]).state_dict(),
               weights)
    root = coco_tree(tmp_path / "coco", n_train=1)
    args = [sys.executable, "export.py", "export_detector_homoAdapt", "configs/magicpoint_coco_export.yaml", "ha_seg",
            "--set", f"data.root={root}", "--set", f"pretrained={weights}",
            "--set", "model.segmentation_head.enable=true",
            "--set", "data.preprocessing.resize=[32,48]", "--set", "data.homography_adaptation.num=2",
            "--set", "num_workers=0", "--set", "device=cpu", "--set", "data.export_folder=train"]
    line = error_line(subprocess.run(args + ["--export-segmentation"], **RUN))
    assert "export_detector_homoAdapt writes keypoint labels only" in line
    assert "export.py export_descriptor <config> <folder> --export-segmentation" in line
    r = subprocess.run(args, **RUN)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "TraceError" not in r.stderr and "unfused" not in r.stderr
    assert len(list((settings.exper_path() / "ha_seg" / "predictions" / "train").glob("*.npz"))) == 1


# ---- data.dataset: coco_panoptic with load_panoptic: true needs the segmentation head -------------
def test_coco_panoptic_labels_without_a_segmentation_head_is_a_config_error():
    r = subprocess.run([sys.executable, "train4.py", "train_joint", "configs/superpoint_coco_train_heatmap.yaml",
                        "panoptic_no_head", "--set", "data.dataset=coco_panoptic", "--set", "data.load_panoptic=true"],
                       **RUN)
    line = error_line(r)
    assert "data.load_panoptic: true but model.segmentation_head.enable is false" in line
    assert "set model.segmentation_head.enable: true" in line and "data.load_panoptic: false" in line
    assert not (settings.exper_path() / "panoptic_no_head").exists()  # nothing started


# ---- MagicLeap weights in the batch-norm network --------------------------------------------------
def test_magicleap_weights_in_gauss2_suggest_superpointnet(tmp_path):
    magicleap = tmp_path / "superpoint_v1.pth"
    torch.save(build_network("SuperPointNet").state_dict(), magicleap)  # MagicLeap's layer names
    r = subprocess.run([sys.executable, "export.py", "export_descriptor",
                        "configs/magicpoint_repeatability_embedded.yaml",
                        "ml_in_gauss2", "--set", f"pretrained={magicleap}", "--set", "device=cpu"], **RUN)
    line = error_line(r)
    assert str(magicleap) in line and "MagicLeap SuperPoint weights" in line
    assert line.endswith("set model.name: SuperPointNet")
    # a partial load (allow_partial_load: true) gets the same message, not a partial load of the heads
    with pytest.raises(ValueError, match="set model.name: SuperPointNet$"):
        load_weights(build_network("SuperPointNet_gauss2"), magicleap, strict=False)
    # and the other way round
    gauss2 = tmp_path / "gauss2.pth"
    torch.save(build_network("SuperPointNet_gauss2").state_dict(), gauss2)
    with pytest.raises(ValueError, match="set model.name: SuperPointNet_gauss2$"):
        load_weights(build_network("SuperPointNet"), gauss2)
    load_weights(build_network("SuperPointNet"), magicleap)  # the right network loads it


# ---- train_tutorial.md, which the reference README points to ------------------------------------
def test_train_tutorial_links_configs_and_keys_exist():
    text = (REPO / "train_tutorial.md").read_text()
    for step in ("1)", "2)", "3)", "4)"):
        assert f"## {step}" in text
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert links
    for link in links:
        assert link.startswith("http") or (REPO / link).exists(), link
    configs = set(re.findall(r"configs/[\w.]+\.yaml", text))
    assert len(configs) >= 4
    for c in configs:
        assert (REPO / c).is_file(), c
    # every key of the tables exists (an unknown key would be a config error)
    defaults = load_config(None)
    keys = re.findall(r"^\| `([\w.]+)` \|", text, flags=re.M)
    assert len(keys) >= 10
    for key in keys:
        node = defaults
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, key
            node = node[part]
