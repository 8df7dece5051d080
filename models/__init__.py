"""Networks. Models know nothing of files: weights arrive as state dicts (see ``load_weights``)."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from models.heads import build_segmentation_head
from models.superpoint import SuperPointNet
from models.superpoint_bn import SuperPointNet_gauss2

MODELS = {"SuperPointNet": SuperPointNet, "SuperPointNet_gauss2": SuperPointNet_gauss2}


def build_model(model_config: dict) -> torch.nn.Module:
    """Build the network named by ``model.name`` with ``model.params`` as keyword arguments.

    With ``model.segmentation_head.enable: true`` an ASPP head (``models.heads``) is attached as
    ``seg_head`` (SuperPointNet_gauss2 only); otherwise the state_dict is the plain network's.
    """
    name = model_config.get("name")
    if name not in MODELS:
        raise ValueError(f"model.name: unknown model {name!r} (expected one of {', '.join(MODELS)})")
    params = dict(model_config.get("params") or {})
    head_config = model_config.get("segmentation_head") or {}
    if head_config.get("enable", False):
        if name != "SuperPointNet_gauss2":
            raise ValueError(f"model.segmentation_head.enable: {name} has no segmentation head; "
                             f"use model.name: SuperPointNet_gauss2")
        params["seg_head"] = build_segmentation_head(head_config)
    try:
        return MODELS[name](**params)
    except TypeError as e:
        raise ValueError(f"model.params: {e}") from None


def extract_state_dict(obj) -> dict:
    """A bare state dict, or the ``model_state_dict`` of a checkpoint dict; DDP's ``module.``
    prefixes are removed."""
    if isinstance(obj, dict) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("expected a state dict or a checkpoint dict with 'model_state_dict'")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


WEIGHTS_ONLY_HINT = ("if you trust this file, set the top-level config key weights_only: false "
                     "(--set weights_only=false)")


def torch_load(path: str | Path, weights_only: bool = True, what: str = "cannot load weights"):
    """``torch.load`` on the CPU with a one-line error naming ``path``; a refusal of
    ``weights_only=True`` names the config key that lifts it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as e:  # noqa: BLE001 - turn any unpickling failure into one line
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # torch colours its message
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        at = next((i for i, ln in enumerate(lines) if "WeightsUnpickler error" in ln), None)
        detail = None if at is None else (lines[at].split("WeightsUnpickler error:", 1)[-1].strip()
                                          or (lines[at + 1] if at + 1 < len(lines) else ""))
        unpickler = [detail] if detail else []
        if weights_only and unpickler and "Unsupported global" in unpickler[0]:
            # a pickled Python object: name it, and the key that allows it
            why = unpickler[0].split(" was not ", 1)[0].replace("GLOBAL ", "")
            raise ValueError(f"{path}: torch.load(weights_only=True) refused it ({why}); {WEIGHTS_ONLY_HINT}") from None
        first = unpickler[0] if unpickler else (lines[0] if lines else type(e).__name__)
        raise ValueError(f"{path}: {what} ({first.rstrip('.')})") from None


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(d) for d in t.shape) or "scalar"


def load_state(model: torch.nn.Module, state: dict, source: str | Path, partial: bool = False,
               fix: str = "") -> dict:
    """Load ``state`` into ``model``, with a one-line error when it does not fit.

    Strict (``partial=False``): every tensor of the model must be in ``state`` with its shape, and
    nothing else. Otherwise the error names ``source``, how many tensors differ in shape, are
    missing or unexpected, the first of each, and ``fix`` (the likely remedy).
    ``partial=True`` loads the tensors that fit and leaves the others at their initial values
    (an error if none fits). Returns ``{"loaded", "missing", "mismatched", "unexpected"}`` (key lists).
    """
    own = model.state_dict()
    mismatched = [k for k in state if k in own and own[k].shape != state[k].shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    name = type(model).__name__
    if (mismatched or missing or unexpected) and not partial:
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} of another shape (" + ", ".join(
                f"{k}: file {_shape(state[k])} vs model {_shape(own[k])}" for k in mismatched[:2])
                + (", ..." if len(mismatched) > 2 else "") + ")")
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise ValueError(f"{source}: weights do not fit {name}: {len(fitting)} of {len(own)} tensors fit, "
                         + ", ".join(parts) + (f"; {fix}" if fix else ""))
    if not fitting:
        raise ValueError(f"{source}: no tensor fits {name}" + (f"; {fix}" if fix else ""))
    model.load_state_dict(fitting, strict=False)
    return {"loaded": list(fitting), "missing": missing, "mismatched": mismatched, "unexpected": unexpected}


def load_weights(model: torch.nn.Module, path: str | Path, strict: bool = True,
                 weights_only: bool = True, fix: str = "") -> dict:
    """Load weights from ``path`` into ``model`` (on the model's device).

    Accepts a bare state dict or a checkpoint dict. ``weights_only=False`` allows pickled
    Python objects (only for files you trust). ``strict=False`` loads the tensors that fit and
    keeps the others (see :func:`load_state`; ``fix`` ends its error). Returns the file's object.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained weights not found")
    obj = torch_load(path, weights_only=weights_only)
    try:
        state = extract_state_dict(obj)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    load_state(model, state, path, partial=not strict,
               fix=fix or "check model.name and model.params against the network that wrote the file")
    return obj
