"""notebooks/visualize_hpatches.ipynb runs headless (nbclient) on a tiny predictions folder."""
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from evaluations.synthetic import write_synthetic_folder

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
