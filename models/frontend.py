"""One call from images to keypoints, scores and descriptors (used by every export and demo).

    frontend = Frontend(model, **keypoint_settings(config["model"]))
    out = frontend(images)          # images: B x 1 x H x W gray in [0, 1]
    out.keypoints.points            # B x K x 2 (x, y), sorted by score, padded (see .mask)
    out.descriptors                 # B x K x D, unit L2

Post-processing (threshold, NMS, border removal, top-k, subpixel) is ``utils.keypoints``'s,
batched, on the model's device.

For deployment, ``inference_frontend(model, config)`` picks the fastest safe network arrangement
and precision for the device from the config's ``inference:`` section (see
``configs/defaults/inference.yaml`` and docs/DEPLOYMENT.md).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from utils.cli import resolve_device
from utils.keypoints import Keypoints, extract_keypoints, sample_descriptors, semi_to_heatmap


def keypoint_settings(model_config: dict) -> dict:
    """The post-processing keyword arguments of :class:`Frontend` from a ``model:`` config section
    (merged over ``configs/defaults/model.yaml``, which holds every default)."""
    top_k = int(model_config["top_k"])
    return {
        "detection_threshold": float(model_config["detection_threshold"]),
        "nms_radius": int(model_config["nms"]),
        "border": int(model_config["remove_borders"]),
        "top_k": top_k if top_k > 0 else None,
        "subpixel": bool(model_config["subpixel"]["enable"]),
        "patch_size": int(model_config["subpixel"]["patch_size"]),
    }


def is_channels_last(model) -> bool:
    """Whether every 4-D parameter of an ``nn.Module`` is channels-last contiguous (False for
    anything else, or a module without one)."""
    weights = [p for p in model.parameters() if p.dim() == 4] if isinstance(model, torch.nn.Module) else []
    return bool(weights) and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)


def keep_mask(raw: dict, drop_classes: list[int], size) -> torch.Tensor:
    """``B x 1 x H x W`` float, 0 where the segmentation head predicts one of ``drop_classes``."""
    if "seg" not in raw:
        raise ValueError("keypoints on segmentation classes can only be dropped by a model with a "
                         "segmentation head (model.segmentation_head.enable: true)")
    seg = raw["seg"]
    if tuple(seg.shape[-2:]) != tuple(size):
        seg = torch.nn.functional.interpolate(seg.float(), size=tuple(size), mode="bilinear", align_corners=False)
    ids = seg.argmax(dim=1, keepdim=True)
    drop = torch.isin(ids, torch.tensor(drop_classes, device=ids.device))
    return (~drop).float()


@dataclass
class FrontendOutput:
    keypoints: Keypoints          # points B x K x 2, scores B x K, mask B x K
    descriptors: torch.Tensor     # B x K x D
    heatmap: torch.Tensor         # B x 1 x H x W
    raw: dict                     # the network's outputs (semi, desc[, seg])


class Frontend:
    """Wraps a SuperPoint network with the keypoint post-processing.

    ``model`` is any module returning ``{"semi", "desc"[, "seg"]}`` (an ``nn.Module`` as is, or an
    engine: :class:`models.inference.FastSuperPoint`, :class:`models.onnx_runtime.OnnxRuntimeNetwork`,
    an exported file's network). ``autocast_dtype`` runs it under autocast; ``channels_last`` runs
    a channels-last copy of the model (the caller's module is never converted) on channels-last
    images. The steps can be called on their own: :meth:`network`, :meth:`heatmap`,
    :meth:`keypoints` (the one heatmap -> keypoints step of the project), :meth:`postprocess`.
    """

    def __init__(self, model: torch.nn.Module, detection_threshold: float = 0.015, nms_radius: int = 4,
                 border: int = 4, top_k: int | None = None, subpixel: bool = False, patch_size: int = 5,
                 autocast_dtype: torch.dtype | None = None, channels_last: bool = False,
                 drop_classes: list[int] | None = None):
        self.channels_last = channels_last
        if channels_last and not is_channels_last(model):
            model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        self.model = model
        self.detection_threshold = detection_threshold
        self.nms_radius = nms_radius
        self.border = border
        self.top_k = top_k
        self.subpixel = subpixel
        self.patch_size = patch_size
        self.autocast_dtype = autocast_dtype
        # segmentation classes on which keypoints are not wanted (sky, moving objects, ...)
        self.drop_classes = sorted(set(int(c) for c in drop_classes)) if drop_classes else []

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> FrontendOutput:
        """``images``: ``B x 1 x H x W`` float gray in [0, 1]."""
        return self.postprocess(self.network(images))

    @torch.no_grad()
    def network(self, images: torch.Tensor) -> dict:
        """The network's raw outputs (``semi``, ``desc``[, ``seg``]) for ``B x 1 x H x W`` images."""
        images = images.to(self.device)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.autocast_dtype is not None:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                return self.model(images)
        return self.model(images)

    @torch.no_grad()
    def heatmap(self, raw: dict) -> torch.Tensor:
        """``B x 1 x H x W`` float32 keypoint probabilities from the network's raw outputs (zero on
        the ``drop_classes`` of its segmentation)."""
        heat = semi_to_heatmap(raw["semi"])
        if self.drop_classes:
            heat = heat * keep_mask(raw, self.drop_classes, heat.shape[-2:])
        return heat

    @torch.no_grad()
    def keypoints(self, heat: torch.Tensor) -> Keypoints:
        """Keypoints of a ``B x 1 x H x W`` heatmap (the network's, or an aggregated one such as
        homographic adaptation's): threshold, NMS, border, top-k, subpixel as configured."""
        return extract_keypoints(heat, self.detection_threshold, self.nms_radius, self.border,
                                 self.top_k, self.subpixel, self.patch_size)

    @torch.no_grad()
    def postprocess(self, raw: dict) -> FrontendOutput:
        """Heatmap, keypoints and their descriptors from the network's raw outputs."""
        heat = self.heatmap(raw)
        kp = self.keypoints(heat)
        desc = sample_descriptors(raw["desc"].float(), kp.points)
        return FrontendOutput(kp, desc, heat, raw)


ENGINES = ("auto", "fast", "eager", "onnxruntime")


def _onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_engine(engine: str, precision: str, device: torch.device, model: torch.nn.Module) -> str:
    """The engine (``fast``, ``eager`` or ``onnxruntime``) that runs ``model`` for ``inference.engine``.

    ``auto`` is the fastest engine that gives the fp32 results on ``device`` (docs/DEPLOYMENT.md):
    ONNX Runtime for fp32 on the CPU (about 10 % faster than the fast engine's fp32 there, measured on
    an AVX-512 + VNNI + BF16 CPU) and
    for int8 (its only engine), the fast engine otherwise. A network that is not a SuperPoint
    layout runs eager under ``auto`` and ``fast``.
    """
    from models.inference import folded_layers
    from utils.config import ConfigError

    if engine not in ENGINES:
        raise ConfigError(f"inference.engine: unknown value {engine!r} (expected {' or '.join(ENGINES)})")
    if precision == "int8":  # int8 exists only as a quantized ONNX model
        if engine not in ("auto", "onnxruntime"):
            raise ConfigError(f"inference.engine: {engine} has no int8 path; int8 runs on ONNX Runtime "
                              f"(engine: auto or onnxruntime)")
        if not _onnxruntime_available():
            raise ConfigError("inference.precision: int8 needs the onnxruntime package (pip install onnxruntime)")
        engine = "onnxruntime"
    if engine == "onnxruntime":
        if device.type != "cpu":
            raise ConfigError(f"inference.engine: onnxruntime runs on the CPU only (device is {device}); "
                              f"use auto, fast or eager")
        return engine
    if engine in ("auto", "fast"):
        try:
            folded_layers(model)
        except TypeError:
            return "eager"  # not a SuperPoint layout the fast engine (or the auto choice) knows
    if engine == "auto":
        exact_on_cpu = device.type == "cpu" and precision == "fp32"
        return "onnxruntime" if exact_on_cpu and _onnxruntime_available() else "fast"
    return engine


def inference_frontend(model: torch.nn.Module, config: dict, device: torch.device | None = None) -> Frontend:
    """The deployment front end for ``model`` on ``device`` (default: the config's ``device``).

    Reads ``inference.engine`` / ``precision`` / ``channels_last`` / ``strip_rows`` and the
    keypoint settings of ``model:``. The fast engine copies the weights into a
    :class:`models.inference.FastSuperPoint` (the same function, computed faster); the eager
    engine runs the module under autocast; the onnxruntime engine exports ``model`` to
    ONNX in memory and runs it on ONNX Runtime's CPU provider, in fp32 whatever the precision,
    except ``int8``: the export quantized with the calibration of ``inference.int8``
    (:func:`models.int8.quantize_int8`, calibration cached); ``auto`` picks one
    (:func:`resolve_engine`). Post-processing is float32 in every case.
    ``model`` itself is never changed: the engines run an eval-mode copy on ``device``.
    """
    from models.inference import PRECISIONS, FastSuperPoint, resolve_inference_precision

    inf = config["inference"]
    device = device or resolve_device(config["device"])
    precision = resolve_inference_precision(inf["precision"], device)
    model = copy.deepcopy(model).to(device).eval()
    engine = resolve_engine(inf["engine"], precision, device, model)
    settings = keypoint_settings(config["model"])
    if engine == "onnxruntime":
        from models.onnx_runtime import OnnxRuntimeNetwork
        onnx_model = None
        if precision == "int8":
            from models.int8 import int8_settings, quantize_int8
            onnx_model, _ = quantize_int8(model, int8_settings(inf["int8"]))
        return Frontend(OnnxRuntimeNetwork(model, onnx_model=onnx_model), **settings)
    if engine == "fast":
        net = FastSuperPoint(model, precision, strip_rows=int(inf["strip_rows"]))
        return Frontend(net, **settings)
    amp = None if precision in ("fp32", "mixed") else PRECISIONS[precision][0]
    if bool(inf["channels_last"]):
        model = model.to(memory_format=torch.channels_last)  # the copy: Frontend need not copy it again
        return Frontend(model, **settings, autocast_dtype=amp, channels_last=True)
    return Frontend(model, **settings, autocast_dtype=amp)
