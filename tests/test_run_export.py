"""./run_export.sh: export on the embedded HPatches-style set, then evaluation, end to end."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

import settings
from models import SuperPointNet
from models.stand_in import seeded_stand_in

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
    # i_* pairs have identity homographies: the stand-in detector repeats itself well
    assert 0.0 <= m["repeatability"] <= 1.0 and set(m["homography_accuracy"]) == {"1", "3", "5"}
    assert "Repeatability" in r.stdout
