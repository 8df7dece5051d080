"""``export_model``: write the network as a deployable ONNX or TorchScript file.

    python export.py export_model <config> <name> --format onnx|torchscript

writes ``<EXPER_PATH>/<name>/superpoint.onnx`` (or ``superpoint.pt``) from the config's model and
``pretrained`` weights. The file holds the network only: input ``image`` ``B x 1 x H x W``
float32 gray in [0, 1] with dynamic B, H, W (multiples of 8), outputs ``semi``
(``B x 65 x H/8 x W/8`` cell logits) and ``desc`` (``B x D x H/8 x W/8``, unit L2), plus ``seg`` when
the model has a segmentation head. Keypoint post-processing (softmax, threshold, NMS, border,
top-k, descriptor sampling) stays outside the file: its NMS is a data-dependent loop that
neither format expresses well; docs/DEPLOYMENT.md shows it on ONNX Runtime outputs. Batch norm
runs in eval mode (the ONNX exporter folds it into the convolutions). After writing, the file is
loaded back and checked against PyTorch at two input sizes; a difference above 1e-4 is an error.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from models import load_pretrained
from models.onnx_runtime import TupleOutputs, cpu_session, onnx_bytes, output_names
from training.checkpoints import resolve_pretrained
from utils.cli import UserError
from utils.io import atomic_path, atomic_write_bytes

FORMATS = {"onnx": "superpoint.onnx", "torchscript": "superpoint.pt"}
TOLERANCE = 1e-4
CHECK_SIZES = ((64, 80), (96, 128))  # two different H x W: the dynamic axes really are dynamic


def load_model(config: dict) -> torch.nn.Module:
    """The config's network with its ``pretrained`` weights, on the CPU, in eval mode."""
    path = resolve_pretrained(config, "export_model")
    model = load_pretrained(config["model"], path, strict=True, weights_only=bool(config.get("weights_only", True)))
    return model.eval()


def export_onnx(model: torch.nn.Module, path: Path, names: tuple[str, ...], sample: torch.Tensor) -> None:
    """ONNX (opset 17, dynamic batch / height / width), written atomically."""
    atomic_write_bytes(path, onnx_bytes(model, names, sample))


def export_torchscript(model: torch.nn.Module, path: Path, names: tuple[str, ...], sample: torch.Tensor) -> None:
    """A traced, frozen TorchScript module (weights inlined as constants); any H, W multiple of 8."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(TupleOutputs(model, names).eval(), (sample,), check_trace=False)
        # optimize_numerics=False: no conv-BN folding, so the file computes exactly what PyTorch does
        frozen = torch.jit.freeze(traced.eval(), optimize_numerics=False)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(frozen, str(tmp))


def exported_runner(path: Path, fmt: str, threads: int | None = None):
    """A function ``image (numpy B x 1 x H x W float32) -> list of numpy outputs`` for the file."""
    if fmt == "onnx":
        session = cpu_session(str(path), threads)
        return lambda image: session.run(None, {"image": image})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notices
        module = torch.jit.load(str(path), map_location="cpu")

    def run_ts(image):
        with torch.no_grad():
            return [t.numpy() for t in module(torch.from_numpy(image))]
    return run_ts


def check_parity(model: torch.nn.Module, path: Path, fmt: str, names: tuple[str, ...],
                 sizes=CHECK_SIZES, seed: int = 0) -> dict:
    """Largest absolute difference per output between the file and PyTorch over ``sizes``."""
    runner = exported_runner(path, fmt)
    g = torch.Generator().manual_seed(seed)
    worst = {n: 0.0 for n in names}
    for h, w in sizes:
        image = torch.rand(2, 1, h, w, generator=g)
        with torch.no_grad():
            ref = model(image)
        got = runner(image.numpy())
        for n, arr in zip(names, got):
            if arr.shape != tuple(ref[n].shape):
                raise RuntimeError(f"{path}: output {n} has shape {arr.shape} at {h}x{w}, "
                                   f"expected {tuple(ref[n].shape)}")
            worst[n] = max(worst[n], float(np.abs(arr - ref[n].numpy()).max()))
    return worst


def run(config: dict, export_dir: Path, args) -> int:
    """Export the configured model; ``args.format`` is ``onnx`` (default) or ``torchscript``."""
    fmt = getattr(args, "format", None) or "onnx"
    if fmt not in FORMATS:
        raise UserError(f"--format: unknown format {fmt!r} (expected {' or '.join(FORMATS)})")
    model = load_model(config)
    names = output_names(model)
    path = Path(export_dir) / FORMATS[fmt]
    sample = torch.rand(1, 1, *CHECK_SIZES[0], generator=torch.Generator().manual_seed(1))
    (export_onnx if fmt == "onnx" else export_torchscript)(model, path, names, sample)
    worst = check_parity(model, path, fmt, names)
    report = ", ".join(f"{n} {d:.1e}" for n, d in worst.items())
    if any(d > TOLERANCE for d in worst.values()):
        raise RuntimeError(f"{path}: exported outputs differ from PyTorch by more than {TOLERANCE} ({report})")
    print(f"wrote {path} (max |difference| to PyTorch at {' and '.join(f'{h}x{w}' for h, w in CHECK_SIZES)}: "
          f"{report})")
    return 0
