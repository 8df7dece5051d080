import json

import cv2
import numpy as np
import pytest

from evaluations.segmentation import confusion_matrix, evaluate_segmentation_folder, scores_from_confusion

CS34 = list(range(34))


def scores(pred, gt, ids=CS34, ignore_index=255):
    return scores_from_confusion(confusion_matrix(np.array(pred), np.array(gt), ids, ignore_index))


def test_perfect_prediction():
    gt = [[7, 7, 11], [23, 24, 26]]
    s = scores(gt, gt)
    assert s["mIoU"] == 1.0 and s["pixel_accuracy"] == 1.0 and s["mean_accuracy"] == 1.0


def test_one_pixel_wrong_by_hand():
    gt = [[0, 0, 1, 1], [0, 0, 1, 1]]
    pred = [[0, 1, 1, 1], [0, 0, 1, 1]]
    s = scores(pred, gt)
    # class 0: TP 3, FN 1 -> 3/4 ; class 1: TP 4, FP 1 -> 4/5 ; the 32 absent classes do not count
    assert s["iou"][0] == pytest.approx(0.75) and s["iou"][1] == pytest.approx(0.8)
    assert np.isnan(s["iou"][2:]).all()
    assert s["mIoU"] == pytest.approx(0.775)
    assert s["pixel_accuracy"] == pytest.approx(7 / 8)
    assert s["mean_accuracy"] == pytest.approx((3 / 4 + 1) / 2)


def test_two_classes_swapped():
    gt = [[7, 7, 23, 23], [7, 7, 26, 26]]
    pred = [[7, 7, 26, 26], [7, 7, 23, 23]]
    s = scores(pred, gt)
    assert s["iou"][7] == 1.0 and s["iou"][23] == 0.0 and s["iou"][26] == 0.0
    assert s["mIoU"] == pytest.approx(1 / 3) and s["pixel_accuracy"] == 0.5


def test_class_only_predicted_counts_as_zero():
    s = scores([[0, 0, 0, 5]], [[0, 0, 0, 0]])
    assert s["iou"][0] == pytest.approx(0.75) and s["iou"][5] == 0.0
    assert s["mIoU"] == pytest.approx(0.375)


def test_ignore_label_and_unknown_predictions():
    gt = [[0, 0, 255, 255]]
    pred = [[0, 99, 7, 7]]  # 99: not a class (counts as wrong); 7 only on ignored pixels
    cm = confusion_matrix(np.array(pred), np.array(gt), CS34, 255)
    assert cm.shape == (34, 35) and cm.sum() == 2 and cm[0, 0] == 1 and cm[0, 34] == 1
    s = scores_from_confusion(cm)
    assert s["iou"][0] == 0.5 and np.isnan(s["iou"][7])
    assert s["mIoU"] == 0.5 and s["pixel_accuracy"] == 0.5
    # gt ids that are not classes are skipped too
    s = scores([[1, 1]], [[1, 40]], ids=[0, 1])
    assert s["mIoU"] == 1.0


def test_folder_with_logits_ids_custom_categories_and_images(tmp_path):
    cats = [{"id": 0, "name": "flat", "color": [10, 20, 30]}, {"id": 2, "name": "sky", "color": [200, 100, 0]},
            {"id": 3, "name": "dynamic", "color": [1, 2, 3]}]
    (tmp_path / "cats.json").write_text(json.dumps(cats))
    pred_dir = tmp_path / "predictions"
    pred_dir.mkdir()
    gt0 = np.array([[0, 0, 2, 2], [0, 0, 2, 255]])
    pred0 = np.array([[0, 0, 2, 0], [0, 0, 2, 3]])
    logits = np.zeros((4, 2, 4), np.float32)
    np.put_along_axis(logits, pred0[None], 5.0, axis=0)  # argmax = pred0
    np.savez(pred_dir / "0.npz", seg=logits, seg_gt=gt0)
    gt1 = np.array([[3, 3], [3, 3]])
    np.savez(pred_dir / "1.npz", seg=gt1.astype(np.int32), seg_gt=gt1)
    r = evaluate_segmentation_folder(pred_dir, output_img=True, category_file=str(tmp_path / "cats.json"))
    # flat: TP 4, FP 1 -> 0.8 ; sky: TP 2, FN 1 -> 2/3 ; dynamic: TP 4 (pred on ignore not counted) -> 1
    assert r["per_class_iou"] == pytest.approx({"flat": 0.8, "sky": 2 / 3, "dynamic": 1.0})
    assert r["mIoU"] == pytest.approx((0.8 + 2 / 3 + 1) / 3)
    assert r["pixel_accuracy"] == pytest.approx(10 / 11) and r["num_images"] == 2 and r["num_pixels"] == 11
    saved = json.loads((pred_dir / "segmentation_results.json").read_text())
    assert saved["mIoU"] == pytest.approx(r["mIoU"])
    assert "dynamic" in (pred_dir / "segmentation_results.txt").read_text()
    img = cv2.imread(str(pred_dir / "segmentation" / "0_pred.png"))[..., ::-1]
    assert img[0, 2].tolist() == [200, 100, 0] and img[1, 3].tolist() == [1, 2, 3]
    gt_img = cv2.imread(str(pred_dir / "segmentation" / "0_gt.png"))[..., ::-1]
    assert gt_img[0, 0].tolist() == [10, 20, 30] and gt_img[1, 3].tolist() == [0, 0, 0]


def test_folder_defaults_to_cs34_and_reports_absent_classes_as_none(tmp_path):
    gt = np.array([[7, 7], [26, 0]])
    np.savez(tmp_path / "a.npz", seg=np.array([[7, 26], [26, 0]]), seg_gt=gt)
    r = evaluate_segmentation_folder(tmp_path, output_img=False, category_file=None)
    assert r["per_class_iou"]["road"] == 0.5 and r["per_class_iou"]["car"] == 0.5
    assert r["per_class_iou"]["unlabeled"] == 1.0 and r["per_class_iou"]["sky"] is None
    assert r["mIoU"] == pytest.approx(2 / 3)
    assert not (tmp_path / "segmentation").exists()


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .npz"):
        evaluate_segmentation_folder(tmp_path, False, None)
    np.savez(tmp_path / "0.npz", seg=np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="0.npz: no 'seg_gt'"):
        evaluate_segmentation_folder(tmp_path, False, None)
    np.savez(tmp_path / "0.npz", seg=np.zeros((2, 2), np.int64), seg_gt=np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="differ in size"):
        evaluate_segmentation_folder(tmp_path, False, None)
