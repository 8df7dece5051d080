"""Networks. Models know nothing of files: weights arrive as state dicts (see ``load_weights``)."""
from __future__ import annotations

from pathlib import Path

import torch

from models.heads import build_segmentation_head
from models.superpoint import SuperPointNet
from models.superpoint_bn import SuperPointNet_gauss2
from models.superpoint_tf import SuperPointTF

MODELS = {"SuperPointNet": SuperPointNet, "SuperPointNet_gauss2": SuperPointNet_gauss2, "SuperPointTF": SuperPointTF}


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


def read_weights(path: str | Path, weights_only: bool = True):
    """The object of a weights file (state dict or checkpoint dict), on the CPU; one-line errors.

    ``weights_only=False`` allows pickled Python objects (only for files you trust).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained weights not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as e:  # noqa: BLE001 - turn any unpickling failure into one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: cannot load weights ({first}); if you trust this file, "
                         f"set weights_only: false") from None


def recorded_layout(obj) -> dict | None:
    """The ``{"name", "params"}`` a checkpoint dict records under ``config.model`` (converted
    weights and our training checkpoints do), or None (a bare state dict, an unknown name)."""
    config = obj.get("config") if isinstance(obj, dict) else None
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict) or model.get("name") not in MODELS:
        return None
    return {"name": model["name"], "params": dict(model.get("params") or {})}


def model_config_for(model_config: dict, obj) -> dict:
    """``model_config`` with the layout a weights file records: its ``name`` and ``params``
    replace the config's (the weights only fit their own layout); everything else (segmentation
    head, keypoint settings) is the config's. Returned unchanged when they already agree."""
    layout = recorded_layout(obj)
    if layout is None or (layout["name"] == model_config.get("name")
                          and layout["params"] == dict(model_config.get("params") or {})):
        return model_config
    return {**model_config, **layout}


def load_state(model: torch.nn.Module, obj, path: str | Path, strict: bool = True) -> None:
    """Copy the weights of ``obj`` (state dict or checkpoint dict read from ``path``) into ``model``."""
    try:
        state = extract_state_dict(obj)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if strict and (missing or unexpected):
        raise ValueError(f"{path}: weights do not fit {type(model).__name__}: "
                         f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
                         f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}")


def load_weights(model: torch.nn.Module, path: str | Path, strict: bool = True,
                 weights_only: bool = True) -> dict:
    """Load weights from ``path`` into ``model`` (on the model's device).

    Accepts a bare state dict or a checkpoint dict. ``weights_only=False`` allows pickled
    Python objects (only for files you trust). Returns the loaded file's object.
    """
    obj = read_weights(path, weights_only)
    load_state(model, obj, path, strict)
    return obj


def load_pretrained(model_config: dict, path: str | Path, strict: bool = True,
                    weights_only: bool = True) -> torch.nn.Module:
    """The network of the weights file ``path`` with its weights: the layout the file records
    (``model_config_for``), else ``model_config``'s. So ``pretrained: <converted file>`` works
    whatever ``model.name`` the config sets."""
    obj = read_weights(path, weights_only)
    model = build_model(model_config_for(model_config, obj))
    load_state(model, obj, path, strict)
    return model
