"""Process-group setup: one process, or several started by ``torchrun``.

    torchrun --nproc_per_node 4 train4.py train_joint configs/superpoint_coco_train_heatmap.yaml superpoint_coco --eval
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --master_port 29500 --nproc_per_node 8 train4.py ...

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them (or with
``WORLD_SIZE=1``) training runs in this process. With several processes each one uses the GPU
``cuda:LOCAL_RANK`` (CUDA) or the CPU, the process group uses NCCL on CUDA and gloo on the CPU
(``distributed.backend``), and :class:`training.trainer.Trainer` does the rest (DDP, SyncBatchNorm,
sharded batches, rank 0 writing). ``model.batch_size`` is the batch of *one* process: the global
batch is ``batch_size x WORLD_SIZE``. The experiment folder must be on a filesystem rank 0 can
write; other ranks need not see it (they receive the resumed state from rank 0).
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from training.trainer import Trainer
from utils.cli import UserError, resolve_device


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


def process_device(config: dict, local_rank: int, world_size: int) -> torch.device:
    """The device of this process: the config's device, with CUDA pinned to ``cuda:LOCAL_RANK``
    when there are several processes."""
    device = resolve_device(config["device"])
    if device.type == "cuda" and world_size > 1:
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def backend_for(config: dict, device: torch.device) -> str:
    name = str(config["distributed"]["backend"])
    if name == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if name not in ("nccl", "gloo"):
        raise UserError(f"distributed.backend: expected auto, nccl or gloo, got {name!r}")
    if name == "nccl" and device.type != "cuda":
        raise UserError("distributed.backend: nccl needs CUDA devices (use gloo on the CPU)")
    return name


def launch(config: dict, name: str, task, do_eval: bool = False, debug: bool = False) -> dict:
    """Train ``task`` in this process, as one rank of a ``torchrun`` job when launched by it.

    Returns the last validation metrics (rank 0; {} elsewhere)."""
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return Trainer(config, name, task, do_eval=do_eval, debug=debug).train()
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    device = process_device(config, local_rank, world_size)
    minutes = float(config["distributed"]["timeout_minutes"])
    dist.init_process_group(backend=backend_for(config, device), rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(minutes=minutes),
                            device_id=device if device.type == "cuda" else None)
    try:
        return Trainer(config, name, task, do_eval=do_eval, debug=debug, rank=rank, world_size=world_size,
                       device=device).train()
    finally:
        dist.destroy_process_group()
