"""Distributed data parallel on the CPU (2 processes, gloo, under torchrun): 2 ranks x batch B
follow the same run as 1 process x batch 2B, resume from rank 0's checkpoint, and stop together
on a non-finite loss on one rank.

The config makes the two set-ups comparable: no batch norm (SuperPointNet; SyncBatchNorm needs
GPUs), and augmentation / homography / sparse-loss draws that depend on a sample's position in the
global batch (``Randomness.rows``), so they are the same whatever the number of processes.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import datasets
import settings
from models import build_model
from tests.fixtures.recorder import Recorder
from training.checkpoints import list_checkpoints, load_checkpoint
from training.trainer import Trainer
from utils.config import load_config
from utils.numerics import LOSS_REORDERED, adam_steps

pytestmark = pytest.mark.numerics  # run again under lower CPU kernel sets (tests/lower_kernels.py)

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / "tests" / "fixtures" / "ddp_train.py"

OVERRIDES = ["data.dataset=squares", "data.warped_pair.enable=true", "data.augmentation.photometric.enable=true",
             "data.gaussian_label.enable=true", "model.name=SuperPointNet", "num_workers=0", "precision=fp32",
             "device=cpu", "save_interval=2", "tensorboard_interval=1", "model.lambda_loss=1",
             "model.sparse_loss.enable=true", "model.sparse_loss.params.num_matching_attempts=30",
             "model.sparse_loss.params.num_masked_non_matches_per_match=10"]
B = 2




@pytest.fixture
def one_thread():
    """Like the torchrun workers: one intra-op thread (faster on a shared, busy CPU)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def torchrun(tmp_path, name, stage):
    spec = tmp_path / f"{name}_{len(list(tmp_path.glob('*.json')))}.json"
    spec.write_text(json.dumps({"name": name, "overrides": OVERRIDES + [f"model.batch_size={B}"],
                                "stages": [stage]}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(spec)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return [json.loads(Path(f"{spec}.rank{r}.stage0.json").read_text()) for r in (0, 1)]


def test_two_ranks_match_one_process_with_the_double_batch(tmp_path, monkeypatch, one_thread):
    monkeypatch.setitem(datasets.DATASETS, "squares", "tests.fixtures.squares:Squares")
    # one process, batch 2B, 4 steps
    cfg = load_config(None, OVERRIDES + [f"model.batch_size={2 * B}", "train_iter=4"])
    single = Recorder(cfg)
    Trainer(cfg, "single", single).train()

    # two processes, batch B each: 2 steps, then a second launch resumes to 6 but rank 1 gets a
    # NaN loss at its 3rd step (iteration 4): both stop; checkpoint 4, whose weights gave that loss,
    # is set aside and checkpoint 2 is the last good one
    first = torchrun(tmp_path, "ddp", {"train_iter": 2})
    second = torchrun(tmp_path, "ddp", {"train_iter": 6, "nan_at": 3, "nan_rank": 1})

    # the global loss of a step is the mean of the ranks' losses (per-image normalised losses)
    ddp_losses = [(a + b) / 2 for a, b in zip(first[0]["losses"] + second[0]["losses"][:2],
                                              first[1]["losses"] + second[1]["losses"][:2])]
    assert LOSS_REORDERED.check(ddp_losses, single.losses).ok
    assert first[0]["losses"] != first[1]["losses"]  # the ranks did see different samples

    exp = settings.exper_path()
    assert [i for i, _ in list_checkpoints(exp / "ddp" / "checkpoints")] == [2]
    w_ddp = load_checkpoint(exp / "ddp" / "checkpoints" / "superPointNet_4_checkpoint.pth.tar.nonfinite")
    w_ddp = w_ddp["model_state_dict"]
    w_one = load_checkpoint(exp / "single" / "checkpoints" / "superPointNet_4_checkpoint.pth.tar")["model_state_dict"]
    torch.manual_seed(cfg["seed"])  # the trainer's initial weights
    init = build_model(cfg["model"]).state_dict()
    moved = max(float((w_one[k] - init[k]).abs().max()) for k in init)
    assert moved > 1e-3  # training moved the weights (lr 1e-3, Adam) ...
    # ... and both set-ups moved them the same way: no weight further apart than Adam's steps allow,
    # and on average the two differ by under 1 % of how far training moved the weights
    bound = adam_steps(cfg["model"]["learning_rate"], 4)
    floats = [k for k in w_one if w_one[k].is_floating_point()]
    for k in floats:
        assert bound.check(w_ddp[k], w_one[k]).ok, k
    apart = torch.cat([(w_ddp[k] - w_one[k]).abs().flatten() for k in floats]).mean()
    movement = torch.cat([(w_one[k] - init[k]).abs().flatten() for k in floats]).mean()
    assert apart < 0.01 * movement

    # NaN on rank 1: both ranks stop at iteration 4, naming it and the last good checkpoint
    assert "nan on rank 1" in second[1]["error"] and "iteration 4" in second[1]["error"]
    assert "another process" in second[0]["error"] and "superPointNet_2_checkpoint" in second[0]["error"]
    assert len(second[0]["losses"]) == len(second[1]["losses"]) == 3
    # rank 0 alone wrote TensorBoard events (one file per launch)
    assert len(list((settings.runs_path() / "ddp").glob("events.out.tfevents.*"))) == 2
