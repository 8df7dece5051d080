"""Process-group setup. Single-process for now: DDP arrives with joint training at scale."""
from __future__ import annotations

from training.trainer import Trainer


def launch(config: dict, name: str, task, do_eval: bool = False, debug: bool = False) -> dict:
    return Trainer(config, name, task, do_eval=do_eval, debug=debug).train()
