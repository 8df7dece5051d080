"""The training loop: resume reproduces an uninterrupted run; Ctrl-C saves; NaN stops cleanly."""
import os
import signal

import pytest
import torch

import datasets
from training.checkpoints import latest_checkpoint, list_checkpoints, load_checkpoint
from training.magicpoint import MagicPointTask
from training.trainer import NonFiniteLoss, Trainer
from utils.config import load_config

pytestmark = pytest.mark.numerics  # run again under lower CPU kernel sets (tests/lower_kernels.py)


@pytest.fixture(autouse=True)
def squares_dataset(monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, "squares", "tests.fixtures.squares:Squares")


def config(**over):
    base = ["data.dataset=squares", "data.augmentation.photometric.enable=true",
            "data.augmentation.homographic.enable=true", "model.batch_size=4", "model.eval_batch_size=4",
            "num_workers=0", "precision=fp32", "device=cpu", "train_iter=6", "save_interval=3",
            "tensorboard_interval=2", "validation_interval=3", "validation_size=1", "train_show_interval=3"]
    return load_config(None, base + [f"{k}={v}" for k, v in over.items()])


def final_weights(name):
    ck = load_checkpoint(latest_checkpoint(__import__("settings").exper_path() / name / "checkpoints"))
    return ck["n_iter"], ck["model_state_dict"]


def test_resume_continues_the_same_run():
    cfg = config()
    Trainer(cfg, "straight", MagicPointTask(cfg), do_eval=True).train()
    # the same run in two halves: stop at 3, then re-run to 6 (resumes from the checkpoint)
    Trainer(config(train_iter=3), "halves", MagicPointTask(cfg)).train()
    assert [i for i, _ in list_checkpoints(__import__("settings").exper_path() / "halves" / "checkpoints")] == [3]
    Trainer(cfg, "halves", MagicPointTask(cfg)).train()
    n1, w1 = final_weights("straight")
    n2, w2 = final_weights("halves")
    assert n1 == n2 == 6
    for k in w1:  # same machine, same kernels: bit-identical
        assert torch.equal(w1[k], w2[k]), k


def test_resume_uses_the_configs_learning_rate():
    cfg = config(train_iter=3)
    Trainer(cfg, "lr_drop", MagicPointTask(cfg)).train()
    saved = load_checkpoint(latest_checkpoint(__import__("settings").exper_path() / "lr_drop" / "checkpoints"))
    assert saved["optimizer_state_dict"]["param_groups"][0]["lr"] == pytest.approx(1e-3)
    lower = config(**{"model.learning_rate": 1e-4})
    resumed = Trainer(lower, "lr_drop", MagicPointTask(lower))
    resumed._build()  # what train() does first: model, optimizer, resume
    assert resumed.n_iter == 3
    assert [g["lr"] for g in resumed.optimizer.param_groups] == [pytest.approx(1e-4)]
    # the Adam moments themselves come back from the checkpoint
    assert len(resumed.optimizer.state) == len(saved["optimizer_state_dict"]["state"]) > 0


class InterruptAt(MagicPointTask):
    def __init__(self, cfg, at):
        super().__init__(cfg)
        self.at, self.calls = at, 0

    def loss(self, model, prepared):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C during this step
        return super().loss(model, prepared)


def test_ctrl_c_saves_a_checkpoint_and_rerun_resumes():
    cfg = config(save_interval=100)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, "interrupted", InterruptAt(cfg, 2)).train()
    n, _ = final_weights("interrupted")
    assert n == 2  # the step in progress finished, then it saved
    Trainer(cfg, "interrupted", MagicPointTask(cfg)).train()
    assert final_weights("interrupted")[0] == 6


class NaNAt(MagicPointTask):
    def __init__(self, cfg, at):
        super().__init__(cfg)
        self.at, self.calls = at, 0

    def loss(self, model, prepared):
        loss, logs = super().loss(model, prepared)
        self.calls += 1
        return (loss * float("nan") if self.calls == self.at else loss), logs


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint():
    cfg = config(save_interval=1)
    # the loss of step 3 is computed with the weights of checkpoint 3: that one is not good
    with pytest.raises(NonFiniteLoss, match="iteration 3.*superPointNet_2_checkpoint"):
        Trainer(cfg, "nan", NaNAt(cfg, 4)).train()
    n, w = final_weights("nan")
    assert n == 2 and all(torch.isfinite(v.float()).all() for v in w.values())
    ckpts = __import__("settings").exper_path() / "nan" / "checkpoints"
    assert (ckpts / "superPointNet_3_checkpoint.pth.tar.nonfinite").is_file()


def test_frozen_parts_keep_weights_and_batch_norm_statistics_through_validation(tmp_path):
    """model.freeze under the loop's stop path, TensorBoard log and validation: the frozen encoder
    and descriptor head end exactly as loaded (batch-norm running statistics included, which only
    eval mode keeps), the detector head trains, and Adam holds the detector's parameters only."""
    from models import build_network

    start = build_network("SuperPointNet_gauss2")
    torch.save(start.state_dict(), tmp_path / "start.pth")
    cfg = config(pretrained=str(tmp_path / "start.pth"), **{"model.freeze": "[encoder, descriptor]"})
    trainer = Trainer(cfg, "frozen", MagicPointTask(cfg), do_eval=True)
    trainer.train()
    detector = [n for n, _ in start.named_parameters() if n.split(".")[0] in start.PARTS["detector"]]
    assert sum(len(g["params"]) for g in trainer.optimizer.param_groups) == len(detector) == 8
    n_iter, final = final_weights("frozen")
    assert n_iter == 6
    for k, v in start.state_dict().items():
        part = next(p for p, mods in start.PARTS.items() if k.split(".")[0] in mods)
        if part in ("encoder", "descriptor"):
            assert torch.equal(final[k], v), k
    assert not torch.equal(final["convPb.weight"], start.state_dict()["convPb.weight"])
    assert not torch.equal(final["bnPa.running_mean"], start.state_dict()["bnPa.running_mean"])
