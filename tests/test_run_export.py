"""./run_export.sh: export on the embedded HPatches-style set, then evaluation, end to end."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import settings
from evaluations.hpatches_report import evaluate_folder
from evaluations.protocols import load_settings
from models import SuperPointNet
from models.stand_in import seeded_stand_in
from utils.io import atomic_save_npz

REPO = Path(__file__).resolve().parent.parent


def test_run_export_script_exports_then_evaluates(tmp_path):
    weights = tmp_path / "sp.pth"
    torch.save(seeded_stand_in(SuperPointNet()).state_dict(), weights)
    env = dict(os.environ, PYTHON=sys.executable)
    r = subprocess.run(["bash", str(REPO / "run_export.sh"), "configs/magicpoint_repeatability_embedded.yaml",
                        "embedded_run", "--set", f"pretrained={weights}", "--set", "model.name=SuperPointNet",
                        "--set", "eval_iter=4",
                        "--set", "data.preprocessing.resize=[120, 160]"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = settings.exper_path() / "embedded_run"
    assert sorted(p.name for p in (out / "predictions").glob("*.npz")) == ["0.npz", "1.npz", "2.npz", "3.npz"]
    res = json.loads((out / "results.json").read_text())
    assert res["num_pairs"] == 4
    m = res["metrics"]
    assert set(m["homography_accuracy"]) == {"1", "3", "5"}
    assert "Repeatability" in r.stdout
    # the script's numbers are those of the exported files
    again = evaluate_folder(out / "predictions", load_settings(), progress=False)["metrics"]
    assert again["repeatability"] == pytest.approx(m["repeatability"])
    assert again["homography_accuracy"] == pytest.approx(m["homography_accuracy"])
    # baseline in the same test: as many points per image, placed at random, repeat far less often
    # (measured: 0.84 against 0.36)
    rng = np.random.default_rng(0)
    baseline = tmp_path / "random_points"
    baseline.mkdir()
    for f in sorted((out / "predictions").glob("*.npz")):
        with np.load(f) as z:
            rec = dict(z)
        for points, image in (("prob", "image"), ("warped_prob", "warped_image")):
            h, w = rec[image].shape[-2:]
            n = len(rec[points])
            rec[points] = np.c_[rng.uniform(0, w - 1, n), rng.uniform(0, h - 1, n),
                                rec[points][:, 2]].astype(rec[points].dtype)
        atomic_save_npz(baseline / f.name, **rec)
    chance = evaluate_folder(baseline, load_settings(), homography=False, progress=False)["metrics"]
    assert m["repeatability"] > chance["repeatability"] + 0.2, (m["repeatability"], chance["repeatability"])
