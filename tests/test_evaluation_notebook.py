"""notebooks/visualize_hpatches.ipynb runs headless (nbclient) on a tiny predictions folder."""
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.fixtures.synthetic_predictions import write_synthetic_folder

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "visualize_hpatches.ipynb"


def test_visualize_hpatches_notebook_executes(tmp_path, monkeypatch):
    pred = write_synthetic_folder(tmp_path / "logs" / "tiny" / "predictions", 2, n_points=80, dim=32)
    monkeypatch.setenv("SUPERPOINT_PREDICTIONS", str(pred))
    monkeypatch.setenv("SUPERPOINT_MAX_PAIRS", "2")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # kernel "python3": jupyter_client starts it with this interpreter (sys.executable), the venv's
    client = NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert str(pred) in text and "2 pairs; showing 2" in text
    assert "synthetic_0" in text and "synthetic_1" in text  # the per-pair table
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) == 2
    assert f"python: {sys.executable}" in text  # the kernel ran with the test's interpreter


def test_notebook_follows_the_experiment_dir_with_the_documented_command(tmp_path):
    """Without SUPERPOINT_PREDICTIONS the notebook reads <SUPERPOINT_EXPER_DIR>/superpoint_hpatches_test,
    executed headless with the command README.md gives (nbconvert, from requirements_dev.txt)."""
    import os
    import subprocess

    import settings

    exper = settings.exper_path()  # conftest: a temporary folder, not <repo>/logs
    assert exper != REPO / "logs"
    pred = write_synthetic_folder(exper / "superpoint_hpatches_test" / "predictions", 3, n_points=60, dim=32)
    env = {k: v for k, v in os.environ.items() if k not in ("SUPERPOINT_PREDICTIONS", "SUPERPOINT_EXPERIMENT")}
    env["SUPERPOINT_MAX_PAIRS"] = "1"
    out = tmp_path / "html"
    r = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--execute",
                        "notebooks/visualize_hpatches.ipynb", "--output-dir", str(out)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    html = (out / "visualize_hpatches.html").read_text()
    assert f"predictions: {pred}" in html and "3 pairs; showing 1" in html
    assert html.count('<div class="jp-RenderedImage') == 1  # the one pair's figure
    # the reference's `jupyter notebook` comes with the dev requirements too
    r = subprocess.run([sys.executable, "-m", "jupyter", "notebook", "--version"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip().startswith("7."), r.stderr[-2000:]
