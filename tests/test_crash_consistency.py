"""Kills and signals (docs/RELIABILITY.md): the fault-injection sweep, kept as tests.

Training, Synthetic Shapes generation and both exports run in a subprocess of their own process
group on tiny settings and are killed (SIGKILL) at a point drawn with a fixed seed, after their
first output exists. The invariants: what is there is complete and loadable, the re-run gives the
same result as an uninterrupted run, no temporary file is left, and TensorBoard holds every step.
SIGTERM sent to the whole group (``timeout``, SLURM, Kubernetes) must leave a stop checkpoint at
the step where it stopped.
"""
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import datasets
import export
import settings
import train4
from datasets.synthetic_shapes import main as generate_main
from evaluations.predictions import check_export
from models import SuperPointNet, build_network
from models.stand_in import seeded_stand_in
from tests.fixtures.image_trees import folder_tree
from training.checkpoints import checkpoint_path, latest_checkpoint, list_checkpoints, load_checkpoint
from training.tensorboard import read_scalars

pytestmark = pytest.mark.numerics  # run again under lower CPU kernel sets (tests/lower_kernels.py)

REPO = Path(__file__).resolve().parent.parent
RNG = random.Random(12)  # the kill points: drawn, but the same on every run of the suite


@pytest.fixture(autouse=True)
def squares_dataset(monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, "squares", "tests.fixtures.squares:Squares")


def tiny_config(tmp_path, **over) -> Path:
    import yaml

    cfg = {"data": {"dataset": "squares"}, "model": {"batch_size": 2, "eval_batch_size": 2},
           "num_workers": 0, "precision": "fp32", "device": "cpu", "train_iter": 6, "save_interval": 2,
           "tensorboard_interval": 1, "validation_interval": 100, "train_show_interval": 100}
    cfg.update(over)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def spawn(args, log: Path) -> subprocess.Popen:
    """``python <args>`` in its own process group (as a batch system starts a job), output to ``log``."""
    out = open(log, "wb")
    return subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for(proc: subprocess.Popen, ready, timeout: float = 180, log: Path | None = None) -> None:
    end = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the process ended (rc {proc.returncode}) before the kill point: "
                        f"{log.read_text()[-2000:] if log else ''}")
        if time.monotonic() > end:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the kill point was never reached")
        time.sleep(0.02)


def kill_group(proc: subprocess.Popen, sig=signal.SIGKILL, timeout: float = 180) -> int:
    os.killpg(proc.pid, sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the process did not end {timeout} s after {signal.Signals(sig).name}")


def temp_files(*folders: Path) -> list[str]:
    return [str(p) for f in folders if f.exists() for p in f.rglob("*") if p.name.endswith(".tmp")
            or p.name == ".staging"]


def arrays(folder: Path) -> dict:
    """``relative path -> {key: array}`` of every .npz under ``folder`` (zip timestamps aside)."""
    out = {}
    for p in sorted(folder.rglob("*.npz")):
        with np.load(p) as f:
            out[p.relative_to(folder).as_posix()] = {k: f[k] for k in f.files}
    return out


def assert_same_arrays(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert sorted(a[name]) == sorted(b[name]), name
        for k in a[name]:
            assert np.array_equal(a[name][k], b[name][k]), (name, k)


# ---------------------------------------------------------------- signals
def test_sigterm_to_the_process_group_leaves_a_stop_checkpoint(tmp_path):
    """``timeout -s TERM``: the DataLoader worker gets the signal too, and must not take the run down."""
    cfg = tiny_config(tmp_path, num_workers=1, train_iter=100000, save_interval=3)
    log = tmp_path / "term.log"
    proc = spawn(["tests/fixtures/train_squares.py", "train_base", str(cfg), "term"], log)
    ckpts = settings.exper_path() / "term" / "checkpoints"
    wait_for(proc, lambda: checkpoint_path(ckpts, 3).is_file(), log=log)
    time.sleep(RNG.uniform(0.0, 1.0))
    rc = kill_group(proc, signal.SIGTERM)
    text = log.read_text()
    assert rc == 130 and "Traceback" not in text, text[-3000:]
    stopped = int(text.split("stopped at iteration ")[1].split(";")[0])
    assert stopped >= 3
    assert latest_checkpoint(ckpts) == checkpoint_path(ckpts, stopped)
    assert load_checkpoint(checkpoint_path(ckpts, stopped))["n_iter"] == stopped
    # every step up to the stop is in TensorBoard (flushed with the checkpoint)
    assert sorted(read_scalars(settings.runs_path() / "term", "train/loss")) == list(range(1, stopped + 1))
    assert temp_files(settings.exper_path() / "term") == []


# ---------------------------------------------------------------- kill -9 at a drawn point
def test_training_killed_then_resumed_equals_an_uninterrupted_run(tmp_path):
    cfg = tiny_config(tmp_path, train_iter=4)
    log = tmp_path / "kill.log"
    proc = spawn(["tests/fixtures/train_squares.py", "train_base", str(cfg), "killed"], log)
    ckpts = settings.exper_path() / "killed" / "checkpoints"
    wait_for(proc, lambda: checkpoint_path(ckpts, 2).is_file(), log=log)
    time.sleep(RNG.uniform(0.0, 0.5))  # somewhere in steps 3 and 4, or the final save
    kill_group(proc)
    done = list_checkpoints(ckpts)
    assert [i for i, _ in done][:1] == [2]
    for i, p in done:  # what is there loads, and is what its name says
        assert load_checkpoint(p)["n_iter"] == i
    assert train4.main(["train_base", str(cfg), "killed"]) == 0  # the re-run resumes
    assert train4.main(["train_base", str(cfg), "straight"]) == 0
    a = load_checkpoint(latest_checkpoint(ckpts))
    b = load_checkpoint(latest_checkpoint(settings.exper_path() / "straight" / "checkpoints"))
    assert a["n_iter"] == b["n_iter"] == 4
    for k in b["model_state_dict"]:  # same machine, same kernels: a resumed run is bit-identical
        assert torch.equal(a["model_state_dict"][k], b["model_state_dict"][k]), k
    killed = read_scalars(settings.runs_path() / "killed", "train/loss")
    straight = read_scalars(settings.runs_path() / "straight", "train/loss")
    assert sorted(killed) == sorted(straight) == [1, 2, 3, 4]  # no hole, no duplicate
    assert [killed[s] for s in straight] == list(straight.values())
    assert temp_files(settings.exper_path() / "killed") == []


def test_generation_killed_then_rerun_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    args = ["--set", "data.primitives=[draw_lines, draw_polygon]", "--set", "data.generation.num_workers=1",
            "--set", "data.generation.split_sizes={training: 4, validation: 1, test: 1}",
            "--set", "data.generation.image_size=[240, 320]", "--set", "data.suffix=crash"]
    log = tmp_path / "gen.log"
    proc = spawn(["-m", "datasets.synthetic_shapes", *args], log)
    base = settings.data_path() / "synthetic_shapes"
    wait_for(proc, lambda: any(base.rglob("*.png")) if base.exists() else False, log=log)
    time.sleep(RNG.uniform(0.0, 0.3))
    kill_group(proc)
    assert generate_main(args) == 0
    monkeypatch.setenv("SUPERPOINT_DATA_DIR", str(tmp_path / "straight"))
    assert generate_main(args) == 0
    got = {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}
    ref_base = tmp_path / "straight" / "synthetic_shapes"
    want = {p.relative_to(ref_base).as_posix(): p.read_bytes() for p in sorted(ref_base.rglob("*")) if p.is_file()}
    assert sorted(got) == sorted(want) and all(got[k] == want[k] for k in want)
    assert not [p for p in base.rglob("*") if ".tmp" in p.name]


def test_descriptor_export_killed_keeps_the_previous_set_and_reruns_identically(tmp_path, embedded_master):
    shutil.copytree(embedded_master, settings.data_path() / "hpatches_embedded")
    weights = tmp_path / "w.pth"
    torch.save(seeded_stand_in(SuperPointNet()).state_dict(), weights)
    argv = ["export_descriptor", "configs/magicpoint_repeatability_embedded.yaml", "desc",
            "--set", f"pretrained={weights}", "--set", "model.name=SuperPointNet", "--set", "eval_iter=4",
            "--set", "data.preprocessing.resize=[64, 80]", "--set", "num_workers=0", "--outputImg"]
    assert export.main(argv) == 0
    out = settings.exper_path() / "desc"
    before = arrays(out / "predictions")
    manifest = (out / "manifest.json").read_bytes()
    log = tmp_path / "export.log"
    # the killed run exports all 50 pairs (several seconds): 4 would end before the kill on a fast CPU
    proc = spawn(["export.py", *argv, "--set", "eval_iter=50"], log)
    wait_for(proc, lambda: (out / ".staging" / "predictions" / "0.npz").is_file(), log=log)
    time.sleep(RNG.uniform(0.0, 0.3))
    assert proc.poll() is None, "the export ended before it could be killed"
    kill_group(proc)
    # the complete earlier export is untouched, and evaluation accepts it
    assert_same_arrays(arrays(out / "predictions"), before)
    assert (out / "manifest.json").read_bytes() == manifest
    assert check_export(out / "predictions") is None
    assert export.main(argv) == 0  # the re-run: the same files, nothing left behind
    assert_same_arrays(arrays(out / "predictions"), before)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["0.png", "1.png", "2.png", "3.png"]
    assert check_export(out / "predictions") is None
    assert temp_files(out) == []


def test_homography_adaptation_export_killed_then_rerun_equals_an_uninterrupted_one(tmp_path):
    root = folder_tree(tmp_path / "imgs")
    torch.manual_seed(0)
    weights = tmp_path / "mp.pth"
    torch.save(build_network("SuperPointNet_gauss2").state_dict(), weights)
    common = ["--set", f"pretrained={weights}", "--set", "data.preprocessing.resize=[32,48]",
              "--set", "data.homography_adaptation.num=2", "--set", "data.homography_adaptation.batch_size=2",
              "--set", "num_workers=0", "--set", "precision=fp32", "--set", "device=cpu",
              "--set", "model.top_k=20", "--set", f"data.root={root}", "--outputImg"]
    cfg = "configs/magicpoint_folder_export.yaml"
    log = tmp_path / "ha.log"
    proc = spawn(["export.py", "export_detector_homoAdapt", cfg, "ha", *common], log)
    labels = settings.exper_path() / "ha" / "predictions"
    wait_for(proc, lambda: any(labels.rglob("*.npz")) if labels.exists() else False, log=log)
    time.sleep(RNG.uniform(0.0, 0.3))
    kill_group(proc)
    for name, rec in arrays(labels).items():  # what is there loads
        assert rec["pts"].ndim == 2, name
    assert export.main(["export_detector_homoAdapt", cfg, "ha", *common]) == 0
    assert export.main(["export_detector_homoAdapt", cfg, "straight", *common]) == 0
    assert_same_arrays(arrays(labels), arrays(settings.exper_path() / "straight" / "predictions"))
    pictures = sorted(p.relative_to(labels.parent / "images").as_posix()
                      for p in (labels.parent / "images").rglob("*.png"))
    assert len(pictures) == 6
    assert temp_files(settings.exper_path() / "ha") == []
