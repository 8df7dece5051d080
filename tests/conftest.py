"""Shared test fixtures: repo on sys.path, isolated data/experiment folders, the shared sample data."""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def shared_data_dir() -> Path | None:
    """The real-data sample folder: $SUPERPOINT_SHARED_DATA, else ../shared/data beside the repo."""
    env = os.environ.get("SUPERPOINT_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates += [REPO.parent / "shared" / "data", REPO.parent.parent / "shared" / "data"]
    for c in candidates:
        if (c / "README.md").is_file():
            return c
    return None


@pytest.fixture
def shared_data() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip("the shared sample data folder (../shared/data) is not present")
    return d


@pytest.fixture(autouse=True)
def isolated_paths(tmp_path, monkeypatch):
    """Every test writes datasets, logs and TensorBoard runs under its own temporary folder."""
    monkeypatch.setenv("SUPERPOINT_DATA_DIR", str(tmp_path / "datasets"))
    monkeypatch.setenv("SUPERPOINT_EXPER_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("SUPERPOINT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(REPO)
    yield


@pytest.fixture(scope="session")
def embedded_master(tmp_path_factory):
    """The embedded HPatches-style set, built once per test session."""
    from datasets.embedded_hpatches import ensure_embedded_hpatches

    return ensure_embedded_hpatches(tmp_path_factory.mktemp("embedded_data"))


@pytest.fixture
def embedded(embedded_master):
    """The embedded HPatches-style set under this test's DATA_PATH (copied: building it again is slower)."""
    import shutil

    import settings

    target = settings.data_path() / "hpatches_embedded"
    shutil.copytree(embedded_master, target)
    return target


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "numerics: compares computations across kernels, engines, precisions or processes; "
                   "tests/lower_kernels.py runs these again under the CPU's lower kernel sets")


def pytest_report_header(config):
    from utils.cpu import cpu_name, features_text, torch_kernel_set

    return f"CPU: {cpu_name()} ({features_text()}); PyTorch kernels: {torch_kernel_set()}"
