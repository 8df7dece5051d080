"""Where data and experiment outputs live.

``DATA_PATH``  datasets (COCO/, HPatches/, KITTI/, Cityscapes/, synthetic_shapes/, ...);
               default ``<repo>/datasets``, overridden by ``SUPERPOINT_DATA_DIR``.
``EXPER_PATH`` experiment folders (checkpoints, predictions, copied configs);
               default ``<repo>/logs``, overridden by ``SUPERPOINT_EXPER_DIR``.
``RUNS_PATH``  TensorBoard event files; default ``<repo>/runs``, overridden by ``SUPERPOINT_RUNS_DIR``.

Values are read when this module is imported; the helpers below re-read the environment so
that tests (and long-lived processes) see changes made after import.
"""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent


def data_path() -> Path:
    return Path(os.environ.get("SUPERPOINT_DATA_DIR", REPO_ROOT / "datasets")).expanduser()


def exper_path() -> Path:
    return Path(os.environ.get("SUPERPOINT_EXPER_DIR", REPO_ROOT / "logs")).expanduser()


def runs_path() -> Path:
    return Path(os.environ.get("SUPERPOINT_RUNS_DIR", REPO_ROOT / "runs")).expanduser()


DATA_PATH = str(data_path())
EXPER_PATH = str(exper_path())
RUNS_PATH = str(runs_path())
