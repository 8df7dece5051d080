"""Convert public SuperPoint / MagicPoint weights into this project's checkpoint format.

    python utils/convert_weights.py SRC DST [--format FORMAT] [--seed 0] [--input-scale S] [--allow-pickle]

Formats (detected from SRC when ``--format`` is not given):

* ``tf_savedmodel``: a TensorFlow SavedModel of rpautrat/SuperPoint (its folder, its
  ``variables/variables.index`` or the ``.tar.gz`` holding it), read without TensorFlow
  (``utils/tf_bundle.py``) -> ``SuperPointTF``. The 2018 models take images in [0, 255]: the
  layout's ``input_scale`` is 255 (``--input-scale`` changes it). A MagicPoint has no descriptor
  head: the layout's head is freshly initialised from ``--seed`` (and the checkpoint says so).
* ``superpoint_open``: ``superpoint_v6_from_tf.pth``, the PyTorch port of those weights (state
  dict ``backbone.*``, ``detector.*``, ``descriptor.*``; images in [0, 1]) -> ``SuperPointTF``.
* ``eric_yyjau``: ``superPointNet_<iter>_checkpoint.pth.tar`` of eric-yyjau/pytorch-superpoint
  (``model_state_dict`` of ``SuperPointNet_gauss2``, or of the MagicLeap layout), zip or legacy
  serialisation -> ``SuperPointNet_gauss2`` / ``SuperPointNet``.
* ``magicleap``: MagicLeap's ``superpoint_v1.pth`` (state dict ``conv1a`` .. ``convDb``) ->
  ``SuperPointNet``.

DST is a checkpoint dict ``{model_state_dict, n_iter, loss, config, converted_from}`` whose
``config`` is ``{"model": {"name": ..., "params": {...}}}``: the layout travels with the weights,
so ``pretrained: DST`` works whatever ``model.name`` a config sets (``models.load_pretrained``).
Torch files are read with ``weights_only=True``; ``--allow-pickle`` opts out (trusted files only).
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the project, not utils/ siblings
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path.insert(0, str(_HERE.parent))

import argparse  # noqa: E402
import re  # noqa: E402

import torch  # noqa: E402

from utils.cli import UserError, main_guard, one_line  # noqa: E402
from utils.io import atomic_torch_save  # noqa: E402
from utils.tf_bundle import ARCHIVE_SUFFIXES, is_bundle_archive  # noqa: E402

FORMATS = ("tf_savedmodel", "superpoint_open", "eric_yyjau", "magicleap")

# TensorFlow variable -> parameter of the SuperPointTF layout
_TF_VGG = re.compile(r"(?:^|/)vgg/conv([1-4])_([12])/(conv|bn)/(kernel|bias|gamma|beta|moving_mean|moving_variance)$")
_TF_HEAD = re.compile(r"(?:^|/)(detector|descriptor)/conv([12])/(conv|bn)/"
                      r"(kernel|bias|gamma|beta|moving_mean|moving_variance)$")
_TF_PARAM = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
             "moving_mean": "running_mean", "moving_variance": "running_var"}

# a key that identifies each PyTorch layout's state dict
_LAYOUT_KEYS = {"backbone.0.0.conv.weight": "SuperPointTF", "inc.conv.conv.0.weight": "SuperPointNet_gauss2",
                "conv1a.weight": "SuperPointNet"}
_DESCRIPTOR_OUT = {"SuperPointTF": "descriptor.1.conv.weight", "SuperPointNet_gauss2": "convDb.weight",
                   "SuperPointNet": "convDb.weight"}


def tf_variable_to_key(name: str) -> str | None:
    """The SuperPointTF state-dict key of a TensorFlow variable (None for anything else, e.g.
    ``global_step`` or optimizer slots)."""
    m = _TF_VGG.search(name)
    if m:
        stage, block, kind, param = m.groups()
        return f"backbone.{int(stage) - 1}.{int(block) - 1}.{kind}.{_TF_PARAM[param]}"
    m = _TF_HEAD.search(name)
    if m:
        head, layer, kind, param = m.groups()
        return f"{head}.{int(layer) - 1}.{kind}.{_TF_PARAM[param]}"
    return None


def _fresh_model(name: str, params: dict, seed: int) -> torch.nn.Module:
    """The layout with PyTorch's default initialisation drawn from ``seed`` (reproducible)."""
    from models import build_network

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_network(name, params)


def _fill(src: str, name: str, params: dict, tensors: dict[str, torch.Tensor], seed: int,
          optional_prefix: str | None = None) -> tuple[dict, list[str]]:
    """A complete state dict of layout ``name``: ``tensors`` over a seeded fresh initialisation.

    Every parameter must come from ``tensors``, except those under ``optional_prefix`` when none
    of them does (that part stays freshly initialised and is returned as untrained).
    Shapes are checked against the layout.
    """
    model = _fresh_model(name, params, seed)
    state = model.state_dict()
    unknown = sorted(set(tensors) - set(state))
    if unknown:
        raise ValueError(f"{src}: {len(unknown)} tensors do not belong to {name} (e.g. {unknown[0]!r})")
    for key, value in tensors.items():
        if tuple(value.shape) != tuple(state[key].shape):
            raise ValueError(f"{src}: {key} has shape {list(value.shape)}, {name} expects {list(state[key].shape)}")
    untrained = []
    if optional_prefix and not any(k.startswith(optional_prefix) for k in tensors):
        untrained = [optional_prefix.rstrip(".")]
    needed = [k for k in state if not k.endswith("num_batches_tracked")
              and not (untrained and k.startswith(optional_prefix)) and k not in tensors
              and k != "input_scale"]
    if needed:
        raise ValueError(f"{src}: {len(needed)} {name} tensors are missing (e.g. {needed[0]!r})")
    for key, value in tensors.items():
        state[key] = value.to(state[key].dtype).clone()
    return state, untrained


def _descriptor_dim(name: str, tensors: dict) -> int:
    key = _DESCRIPTOR_OUT[name]
    return int(tensors[key].shape[0]) if key in tensors else 256


def convert_tf(src: Path, seed: int, input_scale: float | None) -> dict:
    """A TF SavedModel of rpautrat/SuperPoint -> SuperPointTF (see the module docstring)."""
    from utils.tf_bundle import open_bundle

    bundle = open_bundle(src)
    tensors = {}
    for var in sorted(bundle.entries):
        key = tf_variable_to_key(var)
        if key is None:
            continue
        if key in tensors:
            raise ValueError(f"{src}: two TensorFlow variables map onto {key} (the second is {var!r})")
        value = torch.from_numpy(bundle.tensor(var))
        if key.endswith("conv.weight"):
            value = value.permute(3, 2, 0, 1).contiguous()  # kh x kw x in x out -> out x in x kh x kw
        tensors[key] = value
    if not tensors:
        raise ValueError(f"{src}: no SuperPoint variables (vgg/conv*_*, detector/conv*) in the checkpoint")
    params = {"descriptor_dim": _descriptor_dim("SuperPointTF", tensors)}
    scale = 255.0 if input_scale is None else float(input_scale)
    state, untrained = _fill(str(src), "SuperPointTF", params, tensors, seed, optional_prefix="descriptor.")
    state["input_scale"] = torch.tensor(scale)
    return {"name": "SuperPointTF", "params": params, "state": state, "untrained": untrained,
            "input_scale": scale}


def _torch_load(src: Path, allow_pickle: bool):
    try:
        return torch.load(src, map_location="cpu", weights_only=not allow_pickle)
    except Exception as e:  # noqa: BLE001 - one line whatever went wrong
        hint = "" if allow_pickle else "; if you trust this file, add --allow-pickle"
        raise ValueError(f"{src}: not a readable PyTorch weights file ({one_line(e)}){hint}") from None


def _state_dict_of(src: Path, obj) -> dict[str, torch.Tensor]:
    from models import extract_state_dict

    try:
        return extract_state_dict(obj)
    except ValueError as e:
        raise ValueError(f"{src}: {e}") from None


def layout_of(state: dict) -> str | None:
    """The layout a PyTorch state dict belongs to, from its key names (None if unknown)."""
    return next((name for key, name in _LAYOUT_KEYS.items() if key in state), None)


def detect_format(src: Path, allow_pickle: bool = False) -> str:
    """The format of ``src`` (see the module docstring); ValueError naming the file otherwise."""
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src}: weights not found")
    if src.is_dir() or src.name.endswith((".index",) + ARCHIVE_SUFFIXES) or is_bundle_archive(src):
        return "tf_savedmodel"
    obj = _torch_load(src, allow_pickle)
    is_checkpoint = isinstance(obj, dict) and "model_state_dict" in obj
    layout = layout_of(_state_dict_of(src, obj))
    if layout == "SuperPointTF" and not is_checkpoint:
        return "superpoint_open"
    if layout == "SuperPointNet" and not is_checkpoint:
        return "magicleap"
    if layout in ("SuperPointNet_gauss2", "SuperPointNet"):
        return "eric_yyjau"
    raise ValueError(f"{src}: unrecognised weights (expected a TF SavedModel, or a state dict with "
                     f"{', '.join(_LAYOUT_KEYS)}; use --format to force one)")


def convert_torch(src: Path, fmt: str, seed: int, input_scale: float | None, allow_pickle: bool) -> dict:
    """superpoint_open / eric_yyjau / magicleap -> our layout of the same names."""
    obj = _torch_load(src, allow_pickle)
    state = {k: v for k, v in _state_dict_of(src, obj).items() if not k.endswith("num_batches_tracked")}
    expected = {"superpoint_open": ("SuperPointTF",), "magicleap": ("SuperPointNet",),
                "eric_yyjau": ("SuperPointNet_gauss2", "SuperPointNet")}[fmt]
    layout = layout_of(state)
    if layout not in expected:
        raise ValueError(f"{src}: not a {fmt} state dict (expected the {' or '.join(expected)} key names, "
                         f"found {'the ' + layout + ' names' if layout else 'unknown names'})")
    params = {"descriptor_dim": _descriptor_dim(layout, state)}
    if layout == "SuperPointTF":
        state.pop("input_scale", None)
    full, untrained = _fill(str(src), layout, params, state, seed)
    out = {"name": layout, "params": params, "state": full, "untrained": untrained}
    if layout == "SuperPointTF":
        out["input_scale"] = 1.0 if input_scale is None else float(input_scale)
        full["input_scale"] = torch.tensor(out["input_scale"])
    elif input_scale not in (None, 1.0):
        raise ValueError(f"--input-scale: {layout} has no input scale (it takes images in [0, 1])")
    if isinstance(obj, dict) and "n_iter" in obj:
        out["n_iter"] = int(obj["n_iter"])
    return out


def convert(src: str | Path, dst: str | Path, fmt: str | None = None, seed: int = 0,
            input_scale: float | None = None, allow_pickle: bool = False) -> dict:
    """Convert ``src`` into the checkpoint ``dst`` (written atomically); returns its summary."""
    src, dst = Path(src), Path(dst)
    if fmt is None:
        fmt = detect_format(src, allow_pickle)
    elif fmt not in FORMATS:
        raise ValueError(f"--format: unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if not src.exists():
        raise FileNotFoundError(f"{src}: weights not found")
    if input_scale is not None and not input_scale > 0:
        raise ValueError(f"--input-scale: must be > 0, got {input_scale}")
    if fmt == "tf_savedmodel":
        result = convert_tf(src, seed, input_scale)
    else:
        result = convert_torch(src, fmt, seed, input_scale, allow_pickle)
    source = {"format": fmt, "file": src.name, "untrained": result["untrained"], "seed": seed}
    if "input_scale" in result:
        source["input_scale"] = result["input_scale"]
    checkpoint = {"model_state_dict": result["state"], "n_iter": result.get("n_iter", 0), "loss": None,
                  "config": {"model": {"name": result["name"], "params": result["params"]}},
                  "converted_from": source}
    atomic_torch_save(checkpoint, dst)
    return {"format": fmt, "model": result["name"], "params": result["params"], "dst": str(dst),
            "tensors": len(result["state"]), "untrained": result["untrained"],
            "input_scale": result.get("input_scale")}


@main_guard
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="the public weights (file, SavedModel folder or .tar.gz)")
    p.add_argument("dst", type=Path, help="the checkpoint to write (e.g. pretrained/magicpoint_rpautrat.pth)")
    p.add_argument("--format", choices=FORMATS, default=None, help="the source format (default: detected)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initialisation of parts the source lacks (a MagicPoint's descriptor head)")
    p.add_argument("--input-scale", type=float, default=None,
                   help="SuperPointTF only: factor applied to [0, 1] images inside the network "
                        "(default 255 for tf_savedmodel, 1 for superpoint_open)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="read torch files with weights_only=False (arbitrary pickles: trusted files only)")
    args = p.parse_args(argv)
    try:
        info = convert(args.src, args.dst, args.format, args.seed, args.input_scale, args.allow_pickle)
    except (ValueError, OSError) as e:
        raise UserError(one_line(e)) from None
    extra = f", input x {info['input_scale']:g}" if info["input_scale"] is not None else ""
    print(f"{args.src} ({info['format']}) -> {info['dst']}: {info['model']} {info['params']}{extra}, "
          f"{info['tensors']} tensors")
    if info["untrained"]:
        print(f"  not in the source, freshly initialised (seed {args.seed}): {', '.join(info['untrained'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
