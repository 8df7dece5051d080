"""benchmarks/magicpoint_synthetic.py: mAP / precision / recall at 2 px and 4 px on hand-made cases."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fixtures.benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    return load_benchmark("magicpoint_synthetic")


class _PlacedDetections(torch.nn.Module):
    """A "network" whose heatmap has one peak per given (x, y, logit, dustbin logit) on a 16x16 image."""

    def __init__(self, peaks):
        super().__init__()
        semi = torch.zeros(1, 65, 2, 2)
        semi[:, 64] = 10.0  # empty cells: everything in the dustbin (pixel scores ~5e-5 < 1e-4)
        for x, y, logit, dustbin in peaks:
            semi[0, 64, y // 8, x // 8] = dustbin
            semi[0, (y % 8) * 8 + x % 8, y // 8, x // 8] = logit
        self.register_buffer("semi", semi)

    def forward(self, x):
        return {"semi": self.semi.expand(x.shape[0], -1, -1, -1)}


CONFIG = {"model": {"nms": 4, "remove_borders": 0, "detection_threshold": 0.5}}


def _item(points, name="draw_polygon/test/0"):
    return {"image": torch.zeros(1, 16, 16), "keypoints": torch.tensor(points, dtype=torch.float32).reshape(-1, 2),
            "name": name}


def test_2px_and_4px_on_a_hand_made_case():
    # ground truth (3, 3) and (12, 12); detection A exactly on the first (score ~0.997),
    # detection B at (15, 12), 3 px from the second (score ~0.73: logit 10 against a dustbin of 9)
    bench = _bench()
    model = _PlacedDetections([(3, 3, 10.0, 0.0), (15, 12, 10.0, 9.0)])
    res = bench.evaluate(model, CONFIG, distances=(2.0, 4.0), dataset=[_item([[3, 3], [12, 12]])])
    r2, r4 = res[2.0]["all"], res[4.0]["all"]
    assert r2["num_detections"] == r4["num_detections"] == 2
    # 2 px: ranking A (TP), B (FP) -> AP = 1 * 0.5; precision 1/2, recall 1/2 at threshold 0.5
    assert r2["mAP"] == pytest.approx(0.5)
    assert (r2["precision"], r2["recall"]) == (pytest.approx(0.5), pytest.approx(0.5))
    # 4 px: both correct -> AP = 1 * 0.5 + 1 * 0.5
    assert r4["mAP"] == pytest.approx(1.0)
    assert (r4["precision"], r4["recall"]) == (pytest.approx(1.0), pytest.approx(1.0))
    assert set(res[2.0]) == {"all", "draw_polygon"}


def test_per_primitive_max_images_and_false_positives():
    # image 0 (lines): one exact hit; image 1 (ellipses, no ground truth): one false positive
    # that outscores it; image 2 would add a miss but --max-images 2 leaves it out
    bench = _bench()

    class _PerImage(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.nets = [_PlacedDetections([(4, 4, 10.0, 3.0)]), _PlacedDetections([(9, 9, 10.0, 0.0)]),
                         _PlacedDetections([])]

        def forward(self, x):
            return {"semi": torch.cat([self.nets[i](x[i:i + 1])["semi"] for i in range(x.shape[0])])}

    data = [_item([[4, 4]], "draw_lines/test/0"), _item([], "draw_ellipses/test/0"),
            _item([[8, 8]], "draw_star/test/0")]
    res = bench.evaluate(_PerImage(), CONFIG, distances=(2.0,), max_images=2, dataset=data)[2.0]
    assert res["all"]["num_images"] == 2 and res["all"]["num_ground_truth"] == 1
    # scores: the hit e^10 / (e^10 + e^3 + 63) = 0.9963, the false positive e^10 / (e^10 + 64) = 0.9971;
    # ranking FP (P = 0), hit (P = 1/2, R = 1) -> AP = 1/2 * 1
    assert res["all"]["mAP"] == pytest.approx(0.5)
    assert (res["all"]["precision"], res["all"]["recall"]) == (pytest.approx(0.5), pytest.approx(1.0))
    assert res["draw_lines"]["mAP"] == pytest.approx(1.0)
    assert res["draw_ellipses"]["num_detections"] == 1 and res["draw_ellipses"]["mAP"] == 0.0
    assert "draw_star" not in res


def test_report_has_both_distances_and_every_model():
    bench = _bench()
    model = _PlacedDetections([(3, 3, 10.0, 0.0)])
    res = bench.evaluate(model, CONFIG, distances=(2.0, 4.0), dataset=[_item([[3, 3]])])
    text = bench.compare_report({"a.pth": res, "b.pth": res}, "t")
    assert "| mAP 2 px | P 2 px | R 2 px | mAP 4 px | P 4 px | R 4 px |" in text
    assert "| a.pth | 1 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 |" in text
    assert "Per primitive, b.pth:" in text
    assert "| a.pth | 1.00 | 1.00 | 0.00 | 0.00 |" in text  # one detection, on its ground-truth point


def test_test_split_config_keeps_the_test_images():
    from datasets.synthetic_shapes import generation_settings
    from utils.config import load_config

    config = load_config(str(ROOT / "configs" / "magicpoint_shapes_cpu.yaml"))
    bench = _bench()
    only = bench.test_split_config(config)
    assert generation_settings(only)["split_sizes"] == {"training": 0, "validation": 0, "test": 500}
    assert config["data"]["generation"]["split_sizes"]["training"] == 10000  # input untouched


def test_reference_box_nms_keeps_what_iou_0_1_allows():
    # 4 x 4 boxes: 2 px apart overlap by IoU 8/24, 3 px by 4/28 (> 0.1, suppressed); 4 px apart not at all
    bench = _bench()
    heat = torch.zeros(1, 1, 16, 16)
    for x, y, s in [(5, 5, 0.9), (7, 5, 0.8), (9, 5, 0.7), (5, 8, 0.6), (5, 9, 0.5), (12, 12, 0.0005)]:
        heat[0, 0, y, x] = s
    (kept,) = bench.reference_detections(heat)
    np.testing.assert_allclose(kept, [[5, 5, 0.9], [9, 5, 0.7], [5, 9, 0.5]], rtol=1e-6)


def test_reference_accumulator_first_match_and_interpolated_precision():
    bench = _bench()
    # first match: both detections lie within 2 px of ground truth (0, 0), the first in row-major
    # order; the second is false although (2, 0) is free (ours: both correct)
    ref, ours = bench.ReferenceAccumulator(2.0), bench.DetectionAccumulator(2.0)
    for acc in (ref, ours):
        acc.add([[1, 0], [2, 0]], [0.9, 0.8], [[2, 0], [0, 0]])
    # P = 1, 1/2 at R = 1/2, 1/2 -> AP 1/2; ours 1
    assert ref.result()["mAP"] == pytest.approx(0.5) and ours.result()["mAP"] == pytest.approx(1.0)
    # interpolation: TP, FP, FP, TP, TP on 3 points -> raw P 1, 1/2, 1/3, 1/2, 3/5 at R 1/3 .. 1;
    # the envelope lifts P at R = 2/3 to 3/5: AP = (1 + 3/5 + 3/5) / 3 = 11/15 (ours: (1 + 1/2 + 3/5) / 3)
    ref, ours = bench.ReferenceAccumulator(2.0), bench.DetectionAccumulator(2.0)
    for acc in (ref, ours):
        acc.add([[0, 0], [12, 12], [14, 14], [8, 0], [0, 8]], [0.9, 0.8, 0.7, 0.6, 0.5], [[0, 0], [8, 0], [0, 8]])
    assert ref.result()["mAP"] == pytest.approx(11 / 15) and ours.result()["mAP"] == pytest.approx(0.7)
    r = ref.result(0.65)  # three detections above 0.65, one correct
    assert (r["precision"], r["recall"], r["num_detections"]) == (pytest.approx(1 / 3), pytest.approx(1 / 3), 3)


def test_evaluate_with_the_reference_protocol():
    # the placed detections of the first test, scored the reference's way: same answers there
    bench = _bench()
    model = _PlacedDetections([(3, 3, 10.0, 0.0), (15, 12, 10.0, 9.0)])
    res = bench.evaluate(model, CONFIG, distances=(2.0, 4.0), dataset=[_item([[3, 3], [12, 12]])],
                         protocol="reference")
    assert res[2.0]["all"]["mAP"] == pytest.approx(0.5) and res[4.0]["all"]["mAP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="protocol"):
        bench.evaluate(model, CONFIG, dataset=[_item([[3, 3]])], protocol="theirs")
