"""Name -> implementation tables whose modules are imported only when used (fast CLI start-up)."""
from __future__ import annotations

import importlib
from typing import Any


def lookup(registry: dict[str, str], name: str, what: str) -> Any:
    """The object registered as ``"module:attribute"`` under ``name``.

    Raises ValueError naming ``what`` (e.g. ``data.dataset``) and the known names.
    """
    if name not in registry:
        raise ValueError(f"{what}: unknown {name!r} (expected one of {', '.join(registry)})")
    module, attr = registry[name].split(":")
    return getattr(importlib.import_module(module), attr)
