"""Export tasks run by ``export.py`` / ``export_classical.py``.

Each task is a module with ``run(config, export_dir, args) -> int``; the command lines map task
names to ``"module:function"`` strings and import them only when asked for.
"""
from __future__ import annotations

import importlib
from typing import Callable

from utils.cli import UserError


def load_task(registry: dict, task: str) -> Callable:
    """The function registered for ``task``; a one-line :class:`UserError` if it is missing."""
    if task not in registry:
        raise UserError(f"unknown export task {task!r} (expected one of {', '.join(registry)})")
    module, func = registry[task].split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            raise UserError(f"export task '{task}' is not available yet ({module.replace('.', '/')}.py "
                            f"is missing)") from None
        raise
    return getattr(mod, func)
