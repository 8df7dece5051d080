"""Networks. Models know nothing of files: weights arrive as state dicts (see ``load_weights``)."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from models.heads import build_segmentation_head
from models.superpoint import SuperPointNet
from models.superpoint_bn import SuperPointNet_gauss2
from models.superpoint_tf import SuperPointTF

MODELS = {"SuperPointNet": SuperPointNet, "SuperPointNet_gauss2": SuperPointNet_gauss2, "SuperPointTF": SuperPointTF}


def build_model(model_config: dict) -> torch.nn.Module:
    """Build the network named by ``model.name`` with ``model.params`` as keyword arguments.

    ``model_config`` is the ``model`` section of a merged config (every key present). With
    ``model.segmentation_head.enable: true`` an ASPP head (``models.heads``) is attached as
    ``seg_head`` (SuperPointNet_gauss2 only); otherwise the state_dict is the plain network's.
    """
    head_config = model_config["segmentation_head"]
    return build_network(model_config["name"], model_config["params"],
                         head_config if head_config["enable"] else None)


def build_network(name: str, params: dict | None = None, segmentation_head: dict | None = None) -> torch.nn.Module:
    """The network ``name`` with keyword arguments ``params``, without a config (weight
    conversion, benchmarks); ``segmentation_head``: a merged ``model.segmentation_head`` section
    to attach that head (SuperPointNet_gauss2 only), None for the plain network."""
    if name not in MODELS:
        raise ValueError(f"model.name: unknown model {name!r} (expected one of {', '.join(MODELS)})")
    params = dict(params or {})
    head_config = segmentation_head
    if head_config is not None:
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
DEFAULT_FIX = "check model.name and model.params against the network that wrote the file"

# The layer names of MagicLeap's SuperPoint (superpoint_v1.pth), kept by SuperPointNet
MAGICLEAP_LAYERS = ("conv1a", "conv1b", "conv2a", "conv2b", "conv3a", "conv3b", "conv4a", "conv4b",
                    "convPa", "convPb", "convDa", "convDb")


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


def read_weights(path: str | Path, weights_only: bool = True):
    """The object of a weights file (state dict or checkpoint dict), on the CPU; one-line errors
    (:func:`torch_load`). ``weights_only=False`` allows pickled Python objects (only for files you trust).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained weights not found")
    return torch_load(path, weights_only=weights_only)


def recorded_layout(obj) -> dict | None:
    """The ``{"name", "params"}`` a checkpoint dict records under ``config.model`` (converted
    weights and our training checkpoints do), or None (a bare state dict, an unknown name)."""
    config = obj.get("config") if isinstance(obj, dict) else None
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict) or model.get("name") not in MODELS:
        return None
    return {"name": model["name"], "params": dict(model.get("params") or {})}


def model_config_for(model_config: dict, obj) -> dict:
    """``model_config`` (a merged ``model`` section) with the layout a weights file records: its
    ``name`` and ``params`` replace the config's (the weights only fit their own layout); everything
    else (segmentation head, keypoint settings) is the config's. Returned unchanged when they
    already agree."""
    layout = recorded_layout(obj)
    if layout is None or (layout["name"] == model_config["name"] and layout["params"] == dict(model_config["params"])):
        return model_config
    return {**model_config, **layout}


def _layout_mismatch(state: dict, model: torch.nn.Module) -> str | None:
    """Why ``state`` cannot fit at all when it is the other network's layout (MagicLeap's
    SuperPointNet vs the batch-norm SuperPointNet_gauss2), with the fix; else None."""
    own = model.state_dict()
    magicleap = {f"{n}.weight" for n in MAGICLEAP_LAYERS}
    if magicleap <= state.keys() and "conv1a.weight" not in own:
        return "they are MagicLeap SuperPoint weights (layers conv1a ... convDb); set model.name: SuperPointNet"
    if any(k.startswith("inc.") for k in state) and not any(k.startswith("inc.") for k in own):
        return ("they are SuperPointNet_gauss2 weights (layers inc, down1-3 with batch norm); "
                "set model.name: SuperPointNet_gauss2")
    return None


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(d) for d in t.shape) or "scalar"


def load_state(model: torch.nn.Module, obj, source: str | Path, partial: bool = False, fix: str = "") -> dict:
    """Load ``obj`` (a state dict or a checkpoint dict) into ``model``, with a one-line error when
    it does not fit.

    Strict (``partial=False``): every tensor of the model must be in the file with its shape, and
    nothing else. Otherwise the error names ``source``, how many tensors differ in shape, are
    missing or unexpected, the first of each, and the likely remedy: the other network's name
    when the file is MagicLeap's layout in SuperPointNet_gauss2 or the other way round, else ``fix``.
    ``partial=True`` loads the tensors that fit and leaves the others at their initial values (an
    error if none fits, and for the other network's layout even so: the heads share names, a
    partial load of them would be nonsense). Returns ``{"loaded", "missing", "mismatched",
    "unexpected"}`` (key lists).
    """
    try:
        state = extract_state_dict(obj)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    own = model.state_dict()
    mismatched = [k for k in state if k in own and own[k].shape != state[k].shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    name = type(model).__name__
    hint = _layout_mismatch(state, model)
    remedy = hint or fix
    if (mismatched or missing or unexpected) and (not partial or hint):
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
                         + ", ".join(parts) + (f"; {remedy}" if remedy else ""))
    if not fitting:
        raise ValueError(f"{source}: no tensor fits {name}" + (f"; {remedy}" if remedy else ""))
    model.load_state_dict(fitting, strict=False)
    return {"loaded": list(fitting), "missing": missing, "mismatched": mismatched, "unexpected": unexpected}


def load_weights(model: torch.nn.Module, path: str | Path, strict: bool = True,
                 weights_only: bool = True, fix: str = "") -> dict:
    """Load weights from ``path`` into ``model`` (on the model's device).

    Accepts a bare state dict or a checkpoint dict. ``weights_only=False`` allows pickled
    Python objects (only for files you trust). ``strict=False`` loads the tensors that fit and
    keeps the others (see :func:`load_state`; ``fix`` ends its error). Returns the file's object.
    """
    obj = read_weights(path, weights_only)
    load_state(model, obj, path, partial=not strict, fix=fix or DEFAULT_FIX)
    return obj


def load_pretrained(model_config: dict, path: str | Path, strict: bool = True,
                    weights_only: bool = True) -> torch.nn.Module:
    """The network of the weights file ``path`` with its weights: the layout the file records
    (``model_config_for``), else ``model_config``'s. So ``pretrained: <converted file>`` works
    whatever ``model.name`` the config sets."""
    obj = read_weights(path, weights_only)
    model = build_model(model_config_for(model_config, obj))
    load_state(model, obj, path, partial=not strict, fix=DEFAULT_FIX)
    return model


def frozen_modules(model: torch.nn.Module, parts) -> list[torch.nn.Module]:
    """Freeze the named parts of a network (``encoder``, ``detector``, ``descriptor``,
    ``segmentation``; see each class's ``PARTS``): their parameters stop requiring gradients.
    Returns the frozen modules, which the caller keeps in eval mode (see :func:`train_mode`) so
    that their batch-norm statistics stay those of the loaded weights."""
    table = getattr(model, "PARTS", {})
    frozen = []
    for part in parts or ():
        if part not in table:
            raise ValueError(f"model.freeze: unknown part {part!r} for {type(model).__name__} "
                             f"(expected some of {sorted(table)})")
        for name in table[part]:
            module = getattr(model, name, None)
            if module is None:
                continue  # e.g. segmentation on a network built without its head
            module.requires_grad_(False)
            frozen.append(module)
    return frozen


def train_mode(model: torch.nn.Module, frozen: list[torch.nn.Module]) -> None:
    """``model.train()`` except for the frozen modules, which stay in eval mode."""
    model.train()
    for module in frozen:
        module.eval()
