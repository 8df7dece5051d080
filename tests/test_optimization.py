"""model.optimizer and model.scheduler: the optimiser picked, learning rates computed by hand, the
schedule across a resume, and one-line errors naming the bad key."""
import math

import pytest
import torch

import datasets
import settings
from training.checkpoints import latest_checkpoint, load_checkpoint
from training.magicpoint import MagicPointTask
from training.optimization import build_optimizer, build_scheduler, check_optimization_config
from training.trainer import Trainer
from utils.config import ConfigError, load_config

pytestmark = pytest.mark.numerics  # run again under lower CPU kernel sets (tests/lower_kernels.py)


@pytest.fixture(autouse=True)
def squares_dataset(monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, "squares", "tests.fixtures.squares:Squares")


def config(**over):
    base = ["data.dataset=squares", "model.batch_size=2", "model.eval_batch_size=2", "num_workers=0",
            "precision=fp32", "device=cpu", "train_iter=5", "save_interval=100", "tensorboard_interval=100",
            "validation_interval=100", "train_show_interval=100"]
    return load_config(None, base + [f"{k}={v}" for k, v in over.items()])


STEP = {"model.scheduler.name": "step", "model.scheduler.step_size": 2, "model.scheduler.gamma": 0.5}


def rates(model_cfg, n, train_iter=100):
    """The learning rate of steps 0 .. n (one scheduler step per iteration)."""
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], model_cfg)
    sched = build_scheduler(opt, model_cfg, train_iter)
    out = [opt.param_groups[0]["lr"]]
    for _ in range(n):
        opt.step()
        sched.step()
        out.append(opt.param_groups[0]["lr"])
    return out


def test_step_schedule_halves_every_two_iterations():
    assert rates(config(**STEP)["model"], 5) == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4], rel=1e-12)


def test_exponential_and_cosine_schedules():
    exp = config(**{"model.scheduler.name": "exponential", "model.scheduler.gamma": 0.9})["model"]
    assert rates(exp, 3) == pytest.approx([1e-3, 9e-4, 8.1e-4, 7.29e-4], rel=1e-12)
    cos = config(**{"model.scheduler.name": "cosine", "model.scheduler.t_max": 4, "model.scheduler.eta_min": 1e-4})
    # 1e-4 + 9e-4 * (1 + cos(pi * i / 4)) / 2, then eta_min after t_max
    half = 1e-4 + 9e-4 * (1 + math.cos(math.pi / 4)) / 2
    assert rates(cos["model"], 6) == pytest.approx([1e-3, half, 5.5e-4, 1.1e-3 - half, 1e-4, 1e-4, 1e-4], rel=1e-9)
    # t_max 0: over train_iter
    assert rates(config(**{"model.scheduler.name": "cosine"})["model"], 2, train_iter=2)[1:] == \
        pytest.approx([5e-4, 0.0], abs=1e-15)


def test_the_default_is_adam_without_a_schedule():
    cfg = config()
    trainer = Trainer(cfg, "default", MagicPointTask(cfg))
    trainer._build()
    assert type(trainer.optimizer) is torch.optim.Adam and trainer.scheduler is None
    group = trainer.optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (1e-3, (0.9, 0.999), 0.0)


def test_sgd_is_picked_over_the_trainable_parameters_only():
    cfg = config(**{"model.optimizer.name": "sgd", "model.optimizer.momentum": 0.5, "model.learning_rate": 0.01,
                    "model.freeze": "[encoder, descriptor]"})
    trainer = Trainer(cfg, "sgd", MagicPointTask(cfg))
    trainer._build()
    assert type(trainer.optimizer) is torch.optim.SGD
    group = trainer.optimizer.param_groups[0]
    assert (group["lr"], group["momentum"]) == (0.01, 0.5)
    trainable = [p for p in trainer.net.parameters() if p.requires_grad]
    assert len(group["params"]) == len(trainable) < len(list(trainer.net.parameters()))


def test_adamw_takes_betas_and_weight_decay():
    cfg = config(**{"model.optimizer.name": "adamw", "model.optimizer.betas": "[0.8, 0.99]",
                    "model.weight_decay": 0.01})
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg["model"])
    assert type(opt) is torch.optim.AdamW
    assert (opt.param_groups[0]["betas"], opt.param_groups[0]["weight_decay"]) == ((0.8, 0.99), 0.01)


@pytest.mark.parametrize("over, key", [
    ({"model.optimizer.name": "rmsprop"}, "model.optimizer.name"),
    ({"model.scheduler.name": "linear"}, "model.scheduler.name"),
    ({"model.optimizer.betas": "[0.9, 1.0]"}, "model.optimizer.betas"),
    ({"model.optimizer.betas": "[0.9]"}, "model.optimizer.betas"),
    ({"model.optimizer.name": "sgd", "model.optimizer.momentum": 1.0}, "model.optimizer.momentum"),
])
def test_a_bad_value_is_a_one_line_error_naming_the_key(over, key):
    cfg = config(**over)
    with pytest.raises(ConfigError, match=rf"^{key}: expected ") as e:
        check_optimization_config(cfg["model"], 5)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=key):  # before the trainer does anything
        Trainer(cfg, "bad", MagicPointTask(cfg))


def test_out_of_range_values_fail_when_the_config_loads():
    for over in ("model.scheduler.step_size=0", "model.scheduler.gamma=-1", "model.optimizer.momentum=2"):
        with pytest.raises(ConfigError, match=over.split("=")[0]):
            config(**dict([over.split("=")]))


def final(name):
    return load_checkpoint(latest_checkpoint(settings.exper_path() / name / "checkpoints"))


def test_a_step_schedule_survives_a_resume():
    cfg = config(**STEP)
    straight = Trainer(cfg, "straight", MagicPointTask(cfg))
    straight.train()
    assert straight.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5 ** (5 // 2), rel=1e-12)
    Trainer(config(train_iter=3, **STEP), "halves", MagicPointTask(cfg)).train()
    assert final("halves")["scheduler_state_dict"]["last_epoch"] == 3
    resumed = Trainer(cfg, "halves", MagicPointTask(cfg))
    resumed.train()
    a, b = final("straight"), final("halves")
    assert a["n_iter"] == b["n_iter"] == 5 and b["scheduler_state_dict"]["last_epoch"] == 5
    assert resumed.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    assert a["optimizer_state_dict"]["param_groups"][0]["lr"] == b["optimizer_state_dict"]["param_groups"][0]["lr"]
    for k, v in a["model_state_dict"].items():  # same machine, same kernels: bit-identical
        assert torch.equal(v, b["model_state_dict"][k]), k


def test_a_resumed_run_takes_the_configs_learning_rate_on_its_schedule():
    Trainer(config(train_iter=3, **STEP), "lower", MagicPointTask(config())).train()
    lower = config(**STEP, **{"model.learning_rate": 1e-4})
    resumed = Trainer(lower, "lower", MagicPointTask(lower))
    resumed._build()
    assert resumed.n_iter == 3
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.5, rel=1e-12)
    assert resumed.scheduler.base_lrs == [1e-4]
