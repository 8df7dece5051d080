"""``export_model``: write the network as a deployable ONNX or TorchScript file.

    python export.py export_model <config> <name> --format onnx|torchscript
    python export.py export_model <config> <name> --format onnx --precision int8 --calibration DIR

writes ``<EXPER_PATH>/<name>/superpoint.onnx`` (or ``superpoint.pt``) from the config's model and
``pretrained`` weights. The file holds the network only: input ``image`` ``B x 1 x H x W``
float32 gray in [0, 1] with dynamic B, H, W (multiples of 8), outputs ``semi``
(``B x 65 x H/8 x W/8`` cell logits) and ``desc`` (``B x D x H/8 x W/8``, unit L2), plus ``seg`` when
the model has a segmentation head. Keypoint post-processing (softmax, threshold, NMS, border,
top-k, descriptor sampling) stays outside the file: its NMS is a data-dependent loop that
neither format expresses well; docs/DEPLOYMENT.md shows it on ONNX Runtime outputs. Batch norm
runs in eval mode (the ONNX exporter folds it into the convolutions). After writing, the file is
loaded back and checked against PyTorch at two input sizes within fp32 reordering noise
(:data:`utils.numerics.FP32_REORDERED`, a bound relative to each output's scale); a file outside it is
refused with one line naming the output and both figures, and nothing is written (a file already
there stays as it was).

``--precision int8`` writes ``superpoint_int8.onnx`` instead: the same inputs and outputs, statically
quantized by ONNX Runtime (:mod:`models.int8`) with activation ranges calibrated on ``count``
images of ``--calibration DIR`` (settings: ``inference.int8``; the calibration is cached), and
``superpoint_int8.json`` beside it: the calibration images (names, SHA-256), size, method, the
float32 layers, the ONNX Runtime version and the check against PyTorch fp32 (on the first
calibration image at two sizes: shapes must match, descriptors must keep a mean cosine of at
least 0.98 to PyTorch's; a file below that is refused the same way).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from models import load_pretrained
from models.onnx_runtime import OUTPUTS, OnnxRuntimeNetwork, TupleOutputs, onnx_bytes, output_names
from training.checkpoints import resolve_pretrained
from utils.cli import UserError
from utils.io import atomic_path, atomic_write_text
from utils.numerics import FP32_REORDERED, INT8_MIN_DESC_COSINE, Difference

FORMATS = {"onnx": "superpoint.onnx", "torchscript": "superpoint.pt"}
INT8_FILE = "superpoint_int8.onnx"  # and its record superpoint_int8.json
CHECK_SIZES = ((64, 80), (96, 128))  # two different H x W: the dynamic axes really are dynamic


def load_model(config: dict) -> torch.nn.Module:
    """The config's network with its ``pretrained`` weights, on the CPU, in eval mode."""
    path = resolve_pretrained(config, "export_model")
    model = load_pretrained(config["model"], path, strict=True, weights_only=bool(config["weights_only"]))
    return model.eval()


def export_onnx(model: torch.nn.Module, path: Path, names: tuple[str, ...], sample: torch.Tensor) -> None:
    """ONNX (opset 17, dynamic batch / height / width) to ``path`` (the caller makes it atomic)."""
    Path(path).write_bytes(onnx_bytes(model, names, sample))


def export_torchscript(model: torch.nn.Module, path: Path, names: tuple[str, ...], sample: torch.Tensor) -> None:
    """A traced, frozen TorchScript module (weights inlined as constants); any H, W multiple of 8;
    to ``path`` (the caller makes it atomic)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(TupleOutputs(model, names).eval(), (sample,), check_trace=False)
        # optimize_numerics=False: no conv-BN folding, so the file computes exactly what PyTorch does
        frozen = torch.jit.freeze(traced.eval(), optimize_numerics=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(frozen, str(path))


class TorchScriptNetwork(torch.nn.Module):
    """An ``export_model`` TorchScript file called like the network: ``B x 1 x H x W`` float
    images -> ``{"semi", "desc"[, "seg"]}`` float32 CPU tensors."""

    def __init__(self, path: Path):
        super().__init__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notices
            self.module = torch.jit.load(str(path), map_location="cpu")

    def forward(self, images: torch.Tensor) -> dict:
        with torch.no_grad():
            outs = self.module(images.detach().to("cpu", torch.float32))
        return dict(zip(OUTPUTS, outs))


def exported_network(path: Path, fmt: str, threads: int | None = None) -> torch.nn.Module:
    """The exported file as an inference engine: called like the network (images -> dict of
    ``semi``, ``desc``[, ``seg``]), so that :class:`models.frontend.Frontend` post-processes its
    outputs like any other engine's. ONNX files run on ONNX Runtime's CPU provider."""
    if fmt == "onnx":
        return OnnxRuntimeNetwork(onnx_model=str(path), threads=threads)
    return TorchScriptNetwork(path)


def check_parity(model: torch.nn.Module, path: Path, fmt: str, names: tuple[str, ...],
                 sizes=CHECK_SIZES, seed: int = 0) -> dict[str, Difference]:
    """Per output, the worst comparison of the file against PyTorch over ``sizes`` under
    :data:`~utils.numerics.FP32_REORDERED` (the one with the largest difference-to-limit ratio)."""
    network = exported_network(path, fmt)
    g = torch.Generator().manual_seed(seed)
    worst: dict[str, Difference] = {}
    for h, w in sizes:
        image = torch.rand(2, 1, h, w, generator=g)
        with torch.no_grad():
            ref = model(image)
        got = network(image)
        if tuple(got) != tuple(names):
            raise RuntimeError(f"{path}: outputs {', '.join(got)}, expected {', '.join(names)}")
        for n in names:
            if got[n].shape != ref[n].shape:
                raise RuntimeError(f"{path}: output {n} has shape {tuple(got[n].shape)} at {h}x{w}, "
                                   f"expected {tuple(ref[n].shape)}")
            d = FP32_REORDERED.check(got[n], ref[n])
            if n not in worst or d.diff / d.limit > worst[n].diff / worst[n].limit:
                worst[n] = d
    return worst


def check_int8(model: torch.nn.Module, path: Path, names: tuple[str, ...], image_file: Path,
               sizes=CHECK_SIZES) -> dict:
    """The int8 file against PyTorch fp32 on a real image at ``sizes``: output shapes must match
    (the axes stay dynamic); returns the largest |semi| difference and the smallest per-size mean
    cosine between the descriptors."""
    from models.int8 import load_calibration_image

    network = exported_network(path, "onnx")
    semi_diff, cosine = 0.0, 1.0
    for h, w in sizes:
        image = torch.from_numpy(load_calibration_image(image_file, (h, w)))
        with torch.no_grad():
            ref = model(image)
        got = network(image)
        for n in names:
            if got[n].shape != ref[n].shape:
                raise RuntimeError(f"{path}: output {n} has shape {tuple(got[n].shape)} at {h}x{w}, "
                                   f"expected {tuple(ref[n].shape)}")
        semi_diff = max(semi_diff, float(np.abs(got["semi"].numpy() - ref["semi"].numpy()).max()))
        cosine = min(cosine, float((got["desc"].numpy() * ref["desc"].numpy()).sum(axis=1).mean()))
    return {"image": str(image_file), "sizes": [list(s) for s in sizes],
            "semi_max_abs_difference": semi_diff, "desc_mean_cosine": cosine}


def export_int8(model: torch.nn.Module, export_dir: Path, config: dict, calibration: str | None) -> Path:
    """``superpoint_int8.onnx`` and its record ``superpoint_int8.json`` (see the module docstring)."""
    from models.int8 import int8_settings, quantize_int8

    settings = int8_settings(config["inference"]["int8"], calibration)
    if settings.calibration is None:
        raise UserError("--precision int8 needs --calibration DIR: a folder of your own images "
                        "(not evaluation images), or inference.int8.calibration in the config")
    data, record = quantize_int8(model, settings)
    path = Path(export_dir) / INT8_FILE
    first = settings.calibration / record["calibration"]["images"][0]
    with atomic_path(path) as tmp:  # a refused file is never left where a config would find it
        tmp.write_bytes(data)
        record["check"] = check_int8(model, tmp, output_names(model), first, CHECK_SIZES + (settings.size,))
        cosine = record["check"]["desc_mean_cosine"]
        if cosine < INT8_MIN_DESC_COSINE:
            raise UserError(f"{path}: refused: int8 descriptors differ from PyTorch fp32 (mean cosine "
                            f"{cosine:.3f}, at least {INT8_MIN_DESC_COSINE} expected); nothing written")
    atomic_write_text(path.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    return path


def run(config: dict, export_dir: Path, args) -> int:
    """Export the configured model; ``args.format`` is ``onnx`` (default) or ``torchscript``;
    ``args.precision`` ``int8`` (ONNX only) quantizes it with ``args.calibration`` images."""
    fmt = getattr(args, "format", None) or "onnx"
    if fmt not in FORMATS:
        raise UserError(f"--format: unknown format {fmt!r} (expected {' or '.join(FORMATS)})")
    precision = getattr(args, "precision", None) or "fp32"
    if precision not in ("fp32", "int8"):
        raise UserError(f"--precision: unknown value {precision!r} (expected fp32 or int8)")
    if precision == "int8" and fmt != "onnx":
        raise UserError(f"--precision int8 exists for --format onnx only (got --format {fmt})")
    model = load_model(config)
    if precision == "int8":
        path = export_int8(model, Path(export_dir), config, getattr(args, "calibration", None))
        record = json.loads(path.with_suffix(".json").read_text())
        cal, check = record["calibration"], record["check"]
        print(f"wrote {path} and {path.with_suffix('.json').name} (int8, {cal['method']} calibration on "
              f"{len(cal['images'])} images at {cal['size'][0]}x{cal['size'][1]}, "
              f"{'cached' if cal['cache_hit'] else 'computed'}; against PyTorch fp32: descriptor cosine "
              f"{check['desc_mean_cosine']:.4f}, max |semi difference| {check['semi_max_abs_difference']:.2f})")
        return 0
    names = output_names(model)
    path = Path(export_dir) / FORMATS[fmt]
    sample = torch.rand(1, 1, *CHECK_SIZES[0], generator=torch.Generator().manual_seed(1))
    with atomic_path(path) as tmp:  # renamed to ``path`` only once the check passed
        (export_onnx if fmt == "onnx" else export_torchscript)(model, tmp, names, sample)
        worst = check_parity(model, tmp, fmt, names)
        refused = [f"output {n} differs from PyTorch by {d}" for n, d in worst.items() if not d.ok]
        if refused:
            raise UserError(f"{path}: refused: {'; '.join(refused)} (fp32 bound {FP32_REORDERED.atol:g} + "
                            f"{FP32_REORDERED.rtol:g} x max|ref|); nothing written")
    report = ", ".join(f"{n} {d}" for n, d in worst.items())
    print(f"wrote {path} (max |difference| to PyTorch at {' and '.join(f'{h}x{w}' for h, w in CHECK_SIZES)}: "
          f"{report})")
    return 0
