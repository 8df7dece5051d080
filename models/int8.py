"""int8 SuperPoint for the CPU: static quantization with ONNX Runtime, calibrated on the user's images.

    settings = int8_settings(config["inference"]["int8"])        # folder, count, size, method, ...
    model_bytes, record = quantize_int8(model, settings)          # QDQ ONNX model + what was done

The network is exported to ONNX (``models.onnx_runtime.onnx_bytes``), then ONNX Runtime's
``quantize_static`` inserts QuantizeLinear / DequantizeLinear pairs (QDQ format) around the
convolutions: weights int8 per output channel (symmetric), activations uint8 (asymmetric, ranges
from calibration). ONNX Runtime's CPU provider fuses each pair into an integer convolution
(VNNI on x86 CPUs that have it). Only the layers named in ``int8_layers`` are quantized, the
others stay float32: the shipped choice (conv1b, conv2a, conv2b: 65 % of the FLOPs; conv1a, whose
quantization alone moves about 2 % of the keypoints, and everything from 1/4 resolution on stay
float32) was made by measurement (docs/DEPLOYMENT.md, "int8 on the CPU").

Calibration runs the fp32 network on ``count`` images of the user's folder, centre-cropped to the
aspect of ``size`` and resized to it, and records each activation's range. The ranges are cached
as JSON under ``cache_dir``, keyed by the weights' hash, the calibration images' contents, the
size and the method, so calibration is computed once; later calls (another layer choice, another
export of the same weights) only re-run the cheap quantization step.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from utils.config import ConfigError

METHODS = ("minmax", "entropy", "percentile")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")
# the logical names of the 12 convolutions (models.inference's names), for `int8_layers`
LAYERS = ("conv1a", "conv1b", "conv2a", "conv2b", "conv3a", "conv3b", "conv4a", "conv4b",
          "convPa", "convPb", "convDa", "convDb")


@dataclass
class Int8Settings:
    """What an int8 model is built from (``inference.int8`` in configs/defaults/inference.yaml,
    the only source of its defaults: see :func:`int8_settings`)."""

    calibration: Path | None           # folder of calibration images (the user's own, not evaluation images)
    count: int                         # images used, spread evenly over the sorted folder
    size: tuple[int, int]              # H, W the images are centre-cropped and resized to
    method: str                        # minmax | entropy | percentile
    int8_layers: tuple[str, ...]       # layers of LAYERS quantized; others fp32
    cache_dir: Path | None             # calibration cache (None: <EXPER_PATH>/int8_calibration)
    exclude_files: tuple[Path, ...] = field(default=())  # files never used (e.g. evaluation frames)


def int8_settings(section: dict, calibration: str | Path | None = None) -> Int8Settings:
    """:class:`Int8Settings` from the ``inference.int8`` section of a merged config (every key
    present; ``calibration`` overrides its folder, e.g. from ``--calibration``); bad values are
    one-line :class:`ConfigError` s."""
    folder = calibration if calibration is not None else section["calibration"]
    method = str(section["method"]).lower()
    if method not in METHODS:
        raise ConfigError(f"inference.int8.method: unknown value {method!r} (expected {', '.join(METHODS)})")
    size = section["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(s, int) and s > 0 and s % 8 == 0 for s in size)):
        raise ConfigError(f"inference.int8.size: expected [H, W], positive multiples of 8, got {size!r}")
    count = section["count"]
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"inference.int8.count: expected a positive integer, got {count!r}")
    layers = tuple(section["int8_layers"])
    unknown = [n for n in layers if n not in LAYERS]
    if unknown or not layers:
        given = ", ".join(map(str, unknown)) or "(none given)"
        raise ConfigError(f"inference.int8.int8_layers: unknown layer(s) {given} "
                          f"(expected names among {', '.join(LAYERS)})")
    cache = section["cache_dir"]
    return Int8Settings(Path(folder) if folder else None, count, (int(size[0]), int(size[1])), method,
                        layers, Path(cache) if cache else None)


# --------------------------------------------------------------------------------------------
# calibration images and the cache key
# --------------------------------------------------------------------------------------------
def calibration_files(settings: Int8Settings) -> list[Path]:
    """``settings.count`` image files of the calibration folder, evenly spread over its sorted
    listing (sub-folders included); a missing or empty folder is a one-line error."""
    folder = settings.calibration
    if folder is None:
        raise ConfigError("int8 needs calibration images: set inference.int8.calibration (export_model: "
                          "--calibration DIR) to a folder of your own images, not evaluation images")
    if not folder.is_dir():
        raise ConfigError(f"inference.int8.calibration: {folder}: folder not found")
    skip = {p.resolve() for p in settings.exclude_files}
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith(".") and p.is_file() and p.resolve() not in skip)
    if not files:
        raise ConfigError(f"inference.int8.calibration: {folder}: no images found "
                          f"(expected files ending in {', '.join(IMAGE_SUFFIXES)})")
    if len(files) <= settings.count:
        return files
    picks = np.linspace(0, len(files) - 1, settings.count).round().astype(int)
    return [files[i] for i in picks]


def load_calibration_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """``1 x 1 x H x W`` float32 gray in [0, 1]: the central crop of the image with the aspect of
    ``size``, resized to it (area interpolation when shrinking), as the network sees frames."""
    from datasets.embedded_hpatches import center_crop_to_aspect
    from datasets.image_list import resize_gray
    from utils.io import read_image_gray

    img = resize_gray(np.ascontiguousarray(center_crop_to_aspect(read_image_gray(path), size)), size)
    return img.astype(np.float32)[None, None]


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of the network's class and state dict (names, dtypes, shapes, values)."""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def calibration_key(weights: str, images: list[str], size: tuple[int, int], method: str) -> str:
    """The cache key: weights hash, calibration image hashes (in order), size and method."""
    text = json.dumps({"weights": weights, "images": images, "size": list(size), "method": method})
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def default_cache_dir() -> Path:
    import settings as project_settings

    return project_settings.exper_path() / "int8_calibration"


# --------------------------------------------------------------------------------------------
# the ONNX graph's convolutions by logical name
# --------------------------------------------------------------------------------------------
def conv_node_names(graph) -> dict[str, str]:
    """Logical layer name (:data:`LAYERS`) -> ONNX node name of that convolution.

    The heads are found from the outputs (``semi`` is convPb's output; the descriptor's
    normalisation reads convDb's output; convPa / convDa feed them), the encoder is the first
    8 other convolutions in graph (topological) order. Works for both SuperPoint layouts.
    """
    producer = {o: n for n in graph.node for o in n.output}

    def upstream_conv(tensor: str):
        node = producer.get(tensor)
        while node is not None and node.op_type != "Conv":
            node = producer.get(node.input[0]) if node.input else None
        return node

    heads = {}
    for out, (last, first) in (("semi", ("convPb", "convPa")), ("desc", ("convDb", "convDa"))):
        node = upstream_conv(out)
        heads[last] = node
        heads[first] = upstream_conv(node.input[0]) if node is not None else None
    if any(n is None for n in heads.values()):
        raise ValueError("int8: the ONNX graph does not have SuperPoint's semi / desc heads")
    head_names = {n.name for n in heads.values()}
    encoder = [n for n in graph.node if n.op_type == "Conv" and n.name not in head_names][:8]
    names = {logical: n.name for logical, n in zip(LAYERS[:8], encoder)}
    names.update({k: v.name for k, v in heads.items()})
    return names


# --------------------------------------------------------------------------------------------
# quantization
# --------------------------------------------------------------------------------------------
class _Reader:
    """ONNX Runtime calibration reader: one image at a time, loaded when asked for."""

    def __init__(self, files: list[Path], size: tuple[int, int]):
        self.files, self.size, self.i = files, size, 0

    def get_next(self):
        if self.i >= len(self.files):
            return None
        self.i += 1
        return {"image": load_calibration_image(self.files[self.i - 1], self.size)}

    def __len__(self):
        return len(self.files)


def quantize_int8(model: torch.nn.Module, settings: Int8Settings) -> tuple[bytes, dict]:
    """``model`` (eval mode) as a QDQ int8 ONNX model and the record of how it was made.

    The record (``JSON``-ready) names the calibration images (with SHA-256), size, method, the
    int8 and float32 layers, the cache file and whether calibration was computed or reused, and the ONNX
    Runtime version. Raises :class:`ConfigError` for a missing / empty calibration folder.
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from models.onnx_runtime import onnx_bytes, output_names

    files = calibration_files(settings)
    cpu_model = _cpu_copy(model)  # eval mode on the CPU; ``model`` itself is left as it is
    weights = weights_digest(cpu_model)
    image_hashes = [file_digest(f) for f in files]
    key = calibration_key(weights, image_hashes, settings.size, settings.method)
    cache = (settings.cache_dir or default_cache_dir()) / f"calibration_{key}.json"
    reused = cache.is_file()

    names = output_names(cpu_model)
    proto = onnx.load_from_string(onnx_bytes(cpu_model, names, torch.rand(1, 1, 64, 80)))
    layer_nodes = conv_node_names(proto.graph)
    exclude = [layer_nodes[n] for n in LAYERS if n not in settings.int8_layers]
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings.method]
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="superpoint_int8_") as tmp:
        out = Path(tmp) / "int8.onnx"
        with _quiet_root_logger():  # the "consider pre-processing" notices (shape inference is done)
            quantize_static(proto, out, None if reused else _Reader(files, settings.size),
                            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=False,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=exclude, calibrate_method=method,
                            calibration_cache_path=cache, extra_options={"TensorQuantOverrides": {
                                # the input is gray in [0, 1] by contract: scale 1/255, zero point 0,
                                # so 8-bit images pass exactly and none is clipped to the range
                                # the calibration images happened to span
                                "image": [{"rmin": np.float32(0.0), "rmax": np.float32(1.0)}]}})
        data = out.read_bytes()
    record = {
        "precision": "int8",
        "format": "ONNX QDQ (QuantizeLinear / DequantizeLinear), static",
        "weights": "int8, symmetric, per output channel",
        "activations": "uint8, asymmetric, per tensor, ranges from calibration (the input image: [0, 1])",
        "int8_layers": list(settings.int8_layers),
        "fp32_layers": [n for n in LAYERS if n not in settings.int8_layers],
        "calibration": {
            "folder": str(settings.calibration),
            "images": [str(f.relative_to(settings.calibration)) for f in files],
            "sha256": image_hashes,
            "size": list(settings.size),
            "resize": "central crop to the aspect of size, then area resize; gray in [0, 1]",
            "method": settings.method,
            "cache": str(cache),
            "cache_hit": reused,
        },
        "weights_sha256": weights,
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "torch": torch.__version__,
    }
    return data, record


def _cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).cpu().eval()


class _quiet_root_logger:
    """ONNX Runtime's quantizer logs advice through the root logger at WARNING; hide it meanwhile."""

    def __enter__(self):
        import logging

        self.logger = logging.getLogger()
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


def quantized_op_counts(model_bytes: bytes) -> dict[str, int]:
    """How many nodes of each op type the ONNX model has (e.g. to check QDQ pairs were inserted)."""
    import onnx

    counts: dict[str, int] = {}
    for n in onnx.load_from_string(model_bytes).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts
