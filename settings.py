"""Where data and experiment outputs live (read from the environment at every call).

``data_path()``  DATA_PATH in the docs: datasets (COCO/, HPatches/, KITTI/, Cityscapes/,
                 synthetic_shapes/, ...); default ``<repo>/datasets``, overridden by ``SUPERPOINT_DATA_DIR``.
``exper_path()`` EXPER_PATH: experiment folders (checkpoints, predictions, copied configs);
                 default ``<repo>/logs``, overridden by ``SUPERPOINT_EXPER_DIR``.
``runs_path()``  RUNS_PATH: TensorBoard event files; default ``<repo>/runs``, overridden by
                 ``SUPERPOINT_RUNS_DIR``.

Each call re-reads the environment, so tests (and long-lived processes) see changes made after
import. To move a folder for good, change its default below.
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
