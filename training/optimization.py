"""The optimiser and the learning-rate schedule of a training run (``model.optimizer``, ``model.scheduler``).

``model.learning_rate`` and ``model.weight_decay`` apply to every optimiser. The schedule is a
function of the iteration: the learning rate of step ``i`` is ``schedule(model.learning_rate, i)``,
set after every step (one scheduler step per iteration). A resumed run therefore takes the config's
learning rate and schedule, at the checkpoint's iteration.

Schedules (``model.scheduler.name``):

* ``none``: constant;
* ``step``: times ``gamma`` every ``step_size`` iterations (``lr * gamma ** (i // step_size)``);
* ``exponential``: times ``gamma`` every iteration (``lr * gamma ** i``);
* ``cosine``: half a cosine from ``lr`` down to ``eta_min`` over ``t_max`` iterations (0 means
  ``train_iter``), then ``eta_min``.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from utils.config import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "step", "cosine", "exponential")


def _one_of(key: str, value, allowed: tuple) -> str:
    if value not in allowed:
        raise ConfigError(f"{key}: expected {', '.join(allowed[:-1])} or {allowed[-1]}, got {value!r}")
    return value


def optimizer_settings(model_cfg: dict) -> tuple[type, dict]:
    """(optimiser class, its keyword arguments) for ``model.optimizer``; :class:`ConfigError` on a
    bad value. ``model_cfg`` is the ``model`` section of a merged config (every key present)."""
    ocfg = model_cfg["optimizer"]
    name = _one_of("model.optimizer.name", ocfg["name"], OPTIMIZERS)
    kwargs = {"lr": float(model_cfg["learning_rate"]), "weight_decay": float(model_cfg["weight_decay"])}
    if name == "sgd":
        momentum = float(ocfg["momentum"])
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"model.optimizer.momentum: expected a number in [0, 1), got {momentum!r}")
        return torch.optim.SGD, {**kwargs, "momentum": momentum}
    betas = ocfg["betas"]
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2
            and all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas)):
        raise ConfigError(f"model.optimizer.betas: expected two numbers in [0, 1), got {betas!r}")
    kind = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return kind, {**kwargs, "betas": (float(betas[0]), float(betas[1]))}


def check_optimization_config(model_cfg: dict, train_iter: int) -> None:
    """:class:`ConfigError` naming the first bad key of ``model.optimizer`` / ``model.scheduler``."""
    optimizer_settings(model_cfg)
    lr_factor(model_cfg, train_iter)


def build_optimizer(params: Iterable[torch.nn.Parameter], model_cfg: dict) -> torch.optim.Optimizer:
    """The optimiser of ``model.optimizer`` over ``params`` (the trainable parameters)."""
    kind, kwargs = optimizer_settings(model_cfg)
    return kind(params, **kwargs)


def lr_factor(model_cfg: dict, train_iter: int) -> Callable[[int], float] | None:
    """Iteration -> multiplier of ``model.learning_rate`` for ``model.scheduler`` (None: constant).

    ``model_cfg`` is the ``model`` section of a merged config (every key present)."""
    scfg = model_cfg["scheduler"]
    name = _one_of("model.scheduler.name", scfg["name"], SCHEDULERS)
    if name == "none":
        return None
    gamma = float(scfg["gamma"])
    if name == "step":
        step_size = int(scfg["step_size"])
        if step_size < 1:
            raise ConfigError(f"model.scheduler.step_size: expected an integer >= 1, got {step_size!r}")
        return lambda i: gamma ** (i // step_size)
    if name == "exponential":
        return lambda i: gamma ** i
    t_max = int(scfg["t_max"]) or int(train_iter)
    if t_max < 1:
        raise ConfigError(f"model.scheduler.t_max: expected an integer >= 1 (or 0 for train_iter), got {t_max!r}")
    lr = float(model_cfg["learning_rate"])
    floor = float(scfg["eta_min"]) / lr if lr > 0 else 0.0

    def cosine(i: int) -> float:
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(i, t_max) / t_max))
    return cosine


def build_scheduler(optimizer: torch.optim.Optimizer, model_cfg: dict,
                    train_iter: int) -> torch.optim.lr_scheduler.LambdaLR | None:
    """The per-iteration schedule of ``model.scheduler`` (None for ``none``: the rate stays as set)."""
    factor = lr_factor(model_cfg, train_iter)
    if factor is None:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def restart_schedule(optimizer: torch.optim.Optimizer, scheduler, model_cfg: dict, n_iter: int) -> None:
    """Set every group's learning rate to the config's, as scheduled at iteration ``n_iter``
    (a resumed run takes the config's learning rate, whatever the checkpoint's was)."""
    lr = float(model_cfg["learning_rate"])
    if scheduler is None:
        for group in optimizer.param_groups:
            group["lr"] = lr
        return
    scheduler.base_lrs = [lr for _ in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["initial_lr"] = lr
    scheduler.last_epoch = int(n_iter)
    values = [base * f(scheduler.last_epoch) for base, f in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, value in zip(optimizer.param_groups, values):
        group["lr"] = value
    scheduler._last_lr = values
