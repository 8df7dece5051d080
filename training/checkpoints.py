"""Checkpoints: ``<exp>/checkpoints/superPointNet_<iter>_checkpoint.pth.tar``, written atomically.

A checkpoint is a dict ``{model_state_dict, optimizer_state_dict, n_iter, loss, config}`` (plus
``scaler_state_dict`` under fp16), the layout of the reference implementation, so its tools and
ours read each other's files.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from utils.io import atomic_torch_save

_NAME = re.compile(r"^superPointNet_(\d+)_checkpoint\.pth\.tar$")


def checkpoint_path(folder: str | Path, n_iter: int) -> Path:
    return Path(folder) / f"superPointNet_{n_iter}_checkpoint.pth.tar"


def list_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(iteration, path) of every checkpoint in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(folder: str | Path) -> Path | None:
    ckpts = list_checkpoints(folder)
    return ckpts[-1][1] if ckpts else None


def save_checkpoint(folder: str | Path, n_iter: int, model: torch.nn.Module, optimizer=None,
                    loss: float | None = None, config: dict | None = None, keep: int = 0,
                    extra: dict | None = None) -> Path:
    """Write a checkpoint atomically; with ``keep > 0`` delete all but the newest ``keep``."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {"model_state_dict": state, "n_iter": int(n_iter),
           "loss": None if loss is None else float(loss), "config": config}
    if optimizer is not None:
        obj["optimizer_state_dict"] = optimizer.state_dict()
    if extra:
        obj.update(extra)
    path = checkpoint_path(folder, n_iter)
    atomic_torch_save(obj, path)
    if keep > 0:
        for _, old in list_checkpoints(folder)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, weights_only: bool = True) -> dict:
    """Read a checkpoint dict (on the CPU); one-line error if the file is unusable."""
    from models import torch_load

    path = Path(path)
    obj = torch_load(path, weights_only=weights_only, what="unreadable checkpoint")
    if not isinstance(obj, dict) or "model_state_dict" not in obj:
        raise ValueError(f"{path}: not a training checkpoint (no 'model_state_dict')")
    return obj


def resolve_pretrained(config: dict, task: str = "export_descriptor") -> Path:
    """The weights file named by the config's ``pretrained`` key.

    A relative path is looked up in the working directory, then EXPER_PATH, then the repository
    root; ``logs/<rest>`` (the default experiment folder's name, as the shipped configs write it)
    is first looked up as ``EXPER_PATH/<rest>``, so that it follows ``SUPERPOINT_EXPER_DIR``.
    A folder (an experiment folder or its ``checkpoints/``) means its latest checkpoint.
    """
    import settings
    from utils.cli import UserError

    value = config["pretrained"]
    if not value:
        raise UserError(f"pretrained: {task} needs trained weights; set pretrained: <file> in the config "
                        f"or --set pretrained=<file> (e.g. pretrained/superpoint_v1.pth)")
    path = Path(str(value)).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, settings.exper_path() / path,
                                                     settings.REPO_ROOT / path]
    if not path.is_absolute() and len(path.parts) > 1 and path.parts[0] == "logs":
        candidates.insert(0, settings.exper_path().joinpath(*path.parts[1:]))
    for c in candidates:
        if c.is_file():
            return c
        if c.is_dir():
            latest = latest_checkpoint(c / "checkpoints") or latest_checkpoint(c)
            if latest is None:
                raise UserError(f"pretrained: folder '{c}' holds no superPointNet_<iter>_checkpoint.pth.tar")
            return latest
    raise UserError(f"pretrained: weights file '{value}' not found (looked in "
                    f"{', '.join(str(c) for c in dict.fromkeys(candidates))})")
