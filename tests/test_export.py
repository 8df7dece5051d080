"""export.py export_descriptor and export_classical.py, end to end on small data."""

import cv2
import numpy as np
import pytest
import torch
import yaml

import export
import export_classical
import settings
from exporters.descriptors import detect
from models import SuperPointNet
from models.frontend import Frontend
from models.stand_in import seeded_stand_in
from utils.geometry import warp_points

pytestmark = pytest.mark.numerics  # run again under lower CPU kernel sets (tests/lower_kernels.py)

KEYS = {"image", "warped_image", "homography", "prob", "warped_prob", "desc", "warped_desc", "name", "pair_index"}


@pytest.fixture
def random_weights(tmp_path):
    path = tmp_path / "random_superpoint.pth"
    torch.save(seeded_stand_in(SuperPointNet()).state_dict(), path)  # detector-like seeded weights
    return path


def _load(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_export_descriptor_on_embedded_set(embedded, random_weights, tmp_path):
    rc = export.main(["export_descriptor", "configs/magicpoint_repeatability_embedded.yaml", "sp_test", "--outputImg",
                      "--set", f"pretrained={random_weights}", "--set", "model.name=SuperPointNet",
                      "--set", "eval_iter=3",
                      "--set", "data.preprocessing.resize=[120, 160]", "--set", "model.subpixel.enable=false"])
    assert rc == 0
    out = settings.exper_path() / "sp_test"
    files = sorted(p.name for p in (out / "predictions").iterdir())
    assert files == ["0.npz", "1.npz", "2.npz"]
    assert (out / "images" / "0.png").is_file()
    saved = yaml.safe_load((out / "config.yml").read_text())
    assert saved["pretrained"] == str(random_weights) and saved["eval_iter"] == 3

    model = SuperPointNet()
    model.load_state_dict(torch.load(random_weights, weights_only=True))
    frontend = Frontend(model.eval(), detection_threshold=0.015, nms_radius=4, border=4, top_k=1000)
    for i in range(3):
        rec = _load(out / "predictions" / f"{i}.npz")
        assert set(rec) == KEYS
        assert str(rec["name"]) == "i_astronaut" and int(rec["pair_index"]) == i + 2
        assert rec["image"].shape == rec["warped_image"].shape == (120, 160) and rec["image"].dtype == np.float32
        assert rec["homography"].shape == (3, 3) and rec["homography"].dtype == np.float64
        np.testing.assert_allclose(rec["homography"], np.eye(3), atol=1e-12)  # illumination sequence
        for p, d in (("prob", "desc"), ("warped_prob", "warped_desc")):
            prob, desc = rec[p], rec[d]
            assert prob.dtype == desc.dtype == np.float32
            assert prob.ndim == 2 and prob.shape[1] == 3 and 0 < len(prob) <= 1000
            assert desc.shape == (len(prob), 256)
            np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-4)
            assert (prob[:, 0] >= 4).all() and (prob[:, 0] <= 160 - 5).all()
            assert (prob[:, 1] >= 4).all() and (prob[:, 1] <= 120 - 5).all()
            assert (np.diff(prob[:, 2]) <= 0).all()  # strongest first
        # the stored keypoints are those of the stored image (not of the other one)
        again = frontend(torch.from_numpy(rec["warped_image"])[None, None])
        # (the export's fp32 engine, ONNX Runtime by default, may order near-equal scores differently:
        # compare as sets)
        want = again.keypoints.points[0].numpy()
        got = rec["warped_prob"][:, :2]
        assert len(got) == len(want)
        np.testing.assert_allclose(got[np.lexsort(got.T)], want[np.lexsort(want.T)], atol=1e-5)


def test_export_errors_are_one_line(embedded, random_weights, tmp_path, capsys):
    cfg = tmp_path / "no_weights.yaml"
    cfg.write_text("data: {dataset: hpatches, root: embedded}\nmodel: {name: SuperPointNet}\n")
    assert export.main(["export_descriptor", str(cfg), "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: pretrained:") and "\n" not in err

    assert export.main(["export_descriptor", str(cfg), "x", "--set", "pretrained=missing/file.pth"]) == 2
    assert "missing/file.pth" in capsys.readouterr().err

    for argv in (["export_model", str(cfg), "x", "--format", "tflite"], ["export_unknown", str(cfg), "x"]):
        with pytest.raises(SystemExit) as e:  # argparse rejects the choice
            export.main(argv)
        assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err

    assert export.main(["export_descriptor", str(cfg), "x", "--export-segmentation",
                        "--set", f"pretrained={random_weights}",
                        "--set", "data.preprocessing.resize=[64, 64]", "--set", "eval_iter=1"]) == 2
    assert "no segmentation head" in capsys.readouterr().err
    assert not list((settings.exper_path() / "x" / "predictions").glob("*.npz"))


class _SegModel(torch.nn.Module):
    """A SuperPoint network plus a fake 3-class segmentation: class = column third."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = SuperPointNet()

    def forward(self, x):
        out = self.net(x)
        w = x.shape[-1]
        cols = torch.arange(w, dtype=torch.float32) * 3 // w  # 0, 1, 2
        out["seg"] = torch.nn.functional.one_hot(cols.long(), 3).T[None, :, None, :].float().expand(
            x.shape[0], 3, x.shape[-2], w)
        return out


def test_detect_returns_segmentation_ids():
    frontend = Frontend(_SegModel().eval(), top_k=50)
    images = [torch.rand(1, 48, 96), torch.rand(1, 40, 64)]  # different sizes: one forward each
    first, second = detect(frontend, images, with_seg=True)
    assert first["seg"].shape == (48, 96) and second["seg"].shape == (40, 64) and first["seg"].dtype == np.int32
    np.testing.assert_array_equal(first["seg"][7], np.arange(96) * 3 // 96)
    assert first["points"].shape[1] == 2 and len(first["points"]) == len(first["desc"]) <= 50


def _mutual_nn(d0, d1):
    dist = (d0 ** 2).sum(1)[:, None] + (d1 ** 2).sum(1)[None, :] - 2 * d0 @ d1.T
    fwd, bwd = dist.argmin(1), dist.argmin(0)
    i = np.flatnonzero(bwd[fwd] == np.arange(len(d0)))
    return i, fwd[i]


def test_sift_recovers_boat_homography(shared_data):
    root = shared_data / "hpatches_real"
    rc = export_classical.main(["export_descriptor", "configs/classical_descriptors.yaml", "sift_test",
                                "--correspondence",
                                "--set", f"data.root={root}"])
    assert rc == 0
    pred = settings.exper_path() / "sift_test" / "predictions"
    assert sorted(p.name for p in pred.iterdir()) == [f"{i}.npz" for i in range(8)]
    rec = _load(pred / "7.npz")
    assert str(rec["name"]) == "v_boat_pair" and int(rec["pair_index"]) == 2
    assert set(rec) == KEYS | {"matches", "match_indices", "match_distance"}
    assert rec["desc"].dtype == np.float32 and rec["desc"].shape == (len(rec["prob"]), 128)
    assert 100 < len(rec["prob"]) <= 1000
    np.testing.assert_allclose(np.linalg.norm(rec["desc"], axis=1), 1.0, atol=1e-5)
    # stored matches point at the stored keypoints
    idx = rec["match_indices"]
    np.testing.assert_array_equal(rec["matches"], np.concatenate([rec["prob"][idx[:, 0], :2],
                                                                   rec["warped_prob"][idx[:, 1], :2]], 1))

    # an independent brute-force mutual NN finds the same pairs the exporter stored
    i, j = _mutual_nn(rec["desc"], rec["warped_desc"])
    assert {tuple(p) for p in idx.tolist()} == set(zip(i.tolist(), j.tolist()))
    assert np.all(np.diff(rec["match_distance"]) >= 0)
    H_est, _ = cv2.findHomography(rec["prob"][i, :2], rec["warped_prob"][j, :2], cv2.RANSAC, 3.0)
    h, w = rec["image"].shape
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    err = np.linalg.norm(warp_points(corners, H_est) - warp_points(corners, rec["homography"]), axis=1).mean()
    assert err < 3.0, err

    # a shorter export into the same folder leaves no stale pairs behind
    assert export_classical.main(["export_descriptor", "configs/classical_descriptors.yaml", "sift_test",
                                  "--set", f"data.root={root}", "--set", "eval_iter=2"]) == 0
    assert sorted(p.name for p in pred.iterdir()) == ["0.npz", "1.npz"]
    assert "matches" not in _load(pred / "0.npz")


def test_orb_descriptors_are_bits(shared_data):
    root = shared_data / "hpatches_real"
    rc = export_classical.main(["export_descriptor", "configs/classical_descriptors.yaml", "orb_test",
                                "--correspondence", "--set", f"data.root={root}", "--set", "data.alteration=v",
                                "--set", "classical.method=orb",
                                "--set", "classical.top_k=300"])
    assert rc == 0
    rec = _load(settings.exper_path() / "orb_test" / "predictions" / "0.npz")
    assert rec["desc"].shape == (len(rec["prob"]), 256) and 0 < len(rec["prob"]) <= 300
    assert set(np.unique(rec["desc"])) <= {0.0, 1.0}
    i, j = rec["match_indices"][:5].T
    hamming = ((rec["desc"][i] - rec["warped_desc"][j]) ** 2).sum(1)
    np.testing.assert_allclose(hamming, rec["match_distance"][:5])


def test_no_download_path_runs_with_the_shipped_demo_superpoint(embedded):
    """The embedded config as shipped (no --set pretrained): the demo SuperPoint recovers the
    identity homography of the illumination pairs and matches its own keypoints across them."""
    from evaluations.hpatches_report import evaluate_folder
    from evaluations.protocols import load_settings

    assert export.main(["export_descriptor", "configs/magicpoint_repeatability_embedded.yaml", "demo",
                        "--set", "eval_iter=5"]) == 0
    res = evaluate_folder(settings.exper_path() / "demo" / "predictions", load_settings(top_k=1000), progress=False)
    assert res["num_pairs"] == 5
    m = res["metrics"]
    assert m["homography_accuracy"]["3"] == 1.0, m  # i_* pairs: the true homography is the identity
    assert m["repeatability"] > 0.6 and m["nn_map"] > 0.6, m
