"""The fast inference network, its precision choice and the deployment front end."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from models.frontend import Frontend, _onnxruntime_available, inference_frontend, is_channels_last
from models.inference import FastSuperPoint, folded_layers, resolve_inference_precision
from models.stand_in import seeded_stand_in
from models.superpoint import SuperPointNet
from models.superpoint_bn import SuperPointNet_gauss2
from utils.config import ConfigError, load_defaults
from utils.io import read_image_gray
from utils.numerics import FP32_REORDERED

pytestmark = pytest.mark.numerics  # run again under lower CPU kernel sets (tests/lower_kernels.py)

KP = dict(detection_threshold=0.015, nms_radius=4, border=4)
MODEL_DEFAULTS = load_defaults()["model"]  # threshold 0.015, NMS 4, border 4, like KP; every key a config holds


def frontend_with_defaults(model, config: dict, device=None):
    """``inference_frontend`` on ``config`` merged over the documented defaults, as every loaded
    config is (the front end reads the keys the defaults declare, with no fallbacks)."""
    from utils.config import load_defaults, merge_strict

    return inference_frontend(model, merge_strict(load_defaults(), config, "test"), device)


def _gauss2_with_running_stats(seed=0):
    """SuperPointNet_gauss2 whose batch norms are far from identity (folding must matter)."""
    torch.manual_seed(seed)
    m = SuperPointNet_gauss2()
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)
    return m.eval()


@pytest.mark.parametrize("make", [lambda: seeded_stand_in(SuperPointNet()), _gauss2_with_running_stats])
@pytest.mark.parametrize("shape,strip_rows", [((2, 1, 48, 64), 16), ((1, 1, 136, 80), 16), ((1, 1, 40, 56), 0)])
def test_fast_network_equals_eager_fp32(make, shape, strip_rows):
    # strips of 16 rows over 136 rows: a short last strip; 0 = whole image
    model = make()
    x = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(x)
        got = FastSuperPoint(model, strip_rows=strip_rows)(x)
    assert got["semi"].shape == want["semi"].shape and got["desc"].shape == want["desc"].shape
    assert FP32_REORDERED.check(got["semi"], want["semi"]).ok
    assert FP32_REORDERED.check(got["desc"], want["desc"]).ok


def test_fold_batchnorm_names_every_layer():
    layers = folded_layers(_gauss2_with_running_stats())
    assert list(layers) == ["conv1a", "conv1b", "conv2a", "conv2b", "conv3a", "conv3b", "conv4a", "conv4b",
                            "convPa", "convPb", "convDa", "convDb"]
    assert layers["conv1a"][0].shape == (64, 1, 3, 3) and layers["convPb"][0].shape == (65, 256, 1, 1)
    with pytest.raises(TypeError, match="unsupported network"):
        folded_layers(nn.Conv2d(1, 1, 1))


def test_fast_network_rejects_bad_shapes():
    net = FastSuperPoint(SuperPointNet())
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.rand(1, 1, 30, 64))
    with pytest.raises(ValueError, match="strip_rows"):
        FastSuperPoint(SuperPointNet(), strip_rows=7)


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of a's points with one of b's within 1 px, and the reverse: the smaller."""
    d = torch.cdist(a.double(), b.double())
    return min(float((d.min(1).values <= 1).double().mean()), float((d.min(0).values <= 1).double().mean()))


def _photo(shared_data, size):
    import cv2
    img = read_image_gray(shared_data / "photos" / "freiburg" / "1341847980.722988.png")
    img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(img)[None, None]


@pytest.mark.parametrize("precision", ["fp32", "mixed"])
def test_fast_engine_keeps_fp32_keypoints_on_a_real_photo(shared_data, precision):
    """The fast engine in fp32 (exact) and in the opt-in `mixed` keeps >= 98 % of the fp32 keypoints
    within 1 px. Weights are the seeded stand-in (detector-like, no file needed): this checks the
    mechanism; the benchmark re-checks with trained weights (--weights)."""
    model = seeded_stand_in(SuperPointNet(), seed=0)
    image = _photo(shared_data, (240, 320))
    want = Frontend(model, **KP)(image).keypoints.to_list()[0][:, :2]
    fe = frontend_with_defaults(model, {"model": {**MODEL_DEFAULTS},
                                    "inference": {"engine": "fast", "precision": precision}}, torch.device("cpu"))
    assert isinstance(fe.model, FastSuperPoint)
    got = fe(image).keypoints.to_list()[0][:, :2]
    assert len(want) > 100  # the stand-in weights give a detector-like number of points
    if precision == "fp32":  # the same points (near-equal scores may swap places in the order)
        assert len(got) == len(want) and _agreement(got, want) == 1.0
    else:
        assert _agreement(got, want) >= 0.98


def test_auto_precision_per_device():
    # inference's auto never depends on the CPU's bf16 support (it does not ask)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_inference_precision("auto", cpu) == "fp32"  # mixed / bf16 change HPatches results
    assert resolve_inference_precision("auto", cuda) == "fp32"  # so does fp16
    assert resolve_inference_precision("bf16", cpu) == "bf16"  # opt-in
    with pytest.raises(ConfigError, match="fp16 needs a CUDA"):
        resolve_inference_precision("fp16", cpu)
    with pytest.raises(ConfigError, match="inference.precision: unknown value 'half'"):
        resolve_inference_precision("half", cpu)


def test_training_auto_precision_follows_the_cpu(monkeypatch):
    # training's auto, unlike inference's, is bf16 exactly on CPUs with native bf16
    import utils.cli

    cpu = torch.device("cpu")
    monkeypatch.setattr(utils.cli, "cpu_supports_bf16", lambda: True)
    assert utils.cli.autocast_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(utils.cli, "cpu_supports_bf16", lambda: False)
    assert utils.cli.autocast_dtype("auto", cpu) is None
    assert utils.cli.autocast_dtype("fp32", cpu) is None


def test_inference_frontend_engines():
    cfg = {"model": {**MODEL_DEFAULTS, "top_k": 30},
           "inference": {"engine": "eager", "precision": "fp32", "channels_last": True}}
    model = seeded_stand_in(SuperPointNet())
    image = torch.rand(2, 1, 64, 96, generator=torch.Generator().manual_seed(0))
    eager = frontend_with_defaults(model, cfg, torch.device("cpu"))
    assert not isinstance(eager.model, FastSuperPoint) and eager.channels_last
    cfg["inference"]["engine"] = "fast"
    fast = frontend_with_defaults(model, cfg, torch.device("cpu"))
    assert isinstance(fast.model, FastSuperPoint)
    a, b = eager(image), fast(image)
    assert a.keypoints.points.shape[1] == 30
    assert torch.equal(a.keypoints.mask, b.keypoints.mask)
    assert torch.equal(a.keypoints.points, b.keypoints.points)
    assert FP32_REORDERED.check(a.descriptors, b.descriptors).ok

    class Other(nn.Module):  # not a SuperPoint layout: the fast and auto engines fall back to eager
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            return self.net(x)
    assert not isinstance(frontend_with_defaults(Other(), cfg, torch.device("cpu")).model, FastSuperPoint)
    cfg["inference"]["engine"] = "auto"
    other = frontend_with_defaults(Other(), cfg, torch.device("cpu"))
    assert isinstance(other.model, Other) and torch.equal(other(image).keypoints.points, a.keypoints.points)
    cfg["inference"]["engine"] = "turbo"
    with pytest.raises(ConfigError, match="inference.engine"):
        frontend_with_defaults(model, cfg, torch.device("cpu"))


def test_auto_engine_is_the_exact_fastest_per_precision(monkeypatch):
    """`engine: auto` (the default): ONNX Runtime for fp32 on the CPU, the fast engine for the
    other precisions or without onnxruntime; all give the plain module's keypoints in fp32."""
    import models.frontend as frontend
    from models.onnx_runtime import OnnxRuntimeNetwork

    cfg = {"model": {**MODEL_DEFAULTS, "top_k": 40}}
    model = seeded_stand_in(SuperPointNet_gauss2(), seed=2)
    image = torch.rand(2, 1, 64, 96, generator=torch.Generator().manual_seed(3))
    want = Frontend(model, **KP, top_k=40)(image)
    fe = frontend_with_defaults(model, cfg, torch.device("cpu"))  # no inference section: every default
    assert isinstance(fe.model, OnnxRuntimeNetwork)
    got = fe(image)
    assert torch.equal(got.keypoints.mask, want.keypoints.mask)
    assert torch.allclose(got.keypoints.points, want.keypoints.points)
    assert FP32_REORDERED.check(got.descriptors, want.descriptors).ok

    mixed = frontend_with_defaults(model, {**cfg, "inference": {"precision": "mixed"}}, torch.device("cpu"))
    assert isinstance(mixed.model, FastSuperPoint) and mixed.model.dtypes[0] == torch.bfloat16
    monkeypatch.setattr(frontend, "_onnxruntime_available", lambda: False)
    fast = frontend_with_defaults(model, cfg, torch.device("cpu"))
    assert isinstance(fast.model, FastSuperPoint) and set(fast.model.dtypes) == {torch.float32}
    assert torch.allclose(fast(image).keypoints.points, want.keypoints.points)
    assert frontend.resolve_engine("auto", "fp16", torch.device("cuda"), model) == "fast"
    with pytest.raises(ConfigError, match="onnxruntime runs on the CPU only"):
        frontend.resolve_engine("onnxruntime", "fp16", torch.device("cuda"), model)


def test_fp32_convolutions_are_ieee_inside_the_block_and_restored_after():
    from models.inference import ieee_fp32_convolutions
    conv = torch.backends.cudnn.conv
    before = conv.fp32_precision
    with ieee_fp32_convolutions():
        assert conv.fp32_precision == "ieee"
    assert conv.fp32_precision == before
    with pytest.raises(RuntimeError), ieee_fp32_convolutions():
        raise RuntimeError("restored even on errors")
    assert conv.fp32_precision == before
    with ieee_fp32_convolutions(active=False):
        assert conv.fp32_precision == before


def test_stand_in_weights_are_seeded_and_detector_like():
    a = seeded_stand_in(SuperPointNet(), seed=5)
    b = seeded_stand_in(SuperPointNet(), seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    # a flat image gives no keypoint at all (zero-mean first layer), a textured one gives some
    fe = Frontend(a, **KP)
    assert int(fe(torch.full((1, 1, 64, 64), 0.5)).keypoints.mask.sum()) == 0
    yy, xx = np.mgrid[0:64, 0:64]
    checker = torch.from_numpy(((yy // 8 + xx // 8) % 2).astype(np.float32))[None, None]
    assert int(fe(checker).keypoints.mask.sum()) > 0


def test_onnxruntime_engine_gives_the_fp32_keypoints():
    cfg = {"model": {**MODEL_DEFAULTS},
           "inference": {"engine": "onnxruntime", "precision": "auto"}}
    model = seeded_stand_in(SuperPointNet_gauss2(), seed=3)
    image = torch.rand(2, 1, 64, 96, generator=torch.Generator().manual_seed(1))
    ort = frontend_with_defaults(model, cfg, torch.device("cpu"))
    want = Frontend(model, **KP)(image)
    got = ort(image)
    assert got.raw["semi"].shape == (2, 65, 8, 12)
    assert FP32_REORDERED.check(got.raw["semi"], want.raw["semi"]).ok
    for a, b in zip(got.keypoints.to_list(), want.keypoints.to_list()):
        assert len(a) == len(b) and _agreement(a[:, :2], b[:, :2]) == 1.0
    assert not model.training  # the export must not leave the model in training mode


def _model_state(model: nn.Module) -> dict:
    """What a front end must leave alone: training flags, and every tensor's values, dtype,
    device and layout (strides: a channels-last conversion changes them)."""
    return {"training": [m.training for m in model.modules()],
            "tensors": {k: (v.detach().clone(), v.dtype, v.device, v.stride())
                        for k, v in model.state_dict(keep_vars=True).items()},
            "parameters": [id(p) for p in model.parameters()]}


def _assert_same_state(before: dict, after: dict) -> None:
    assert after["training"] == before["training"]
    assert after["parameters"] == before["parameters"]
    assert after["tensors"].keys() == before["tensors"].keys()
    for k, (value, dtype, device, stride) in before["tensors"].items():
        v2, dt2, dev2, st2 = after["tensors"][k]
        assert (dt2, dev2, st2) == (dtype, device, stride), k
        assert torch.equal(v2, value), k


ENGINES_HERE = ["eager", "fast"] + (["onnxruntime"] if _onnxruntime_available() else [])


@pytest.mark.parametrize("engine", ["Frontend channels_last"] + ENGINES_HERE)
def test_front_ends_never_change_the_callers_model(engine):
    """Frontend (channels-last) and inference_frontend (every engine) work on copies: the caller's
    model keeps its training flags, parameters, memory format, device and state dict, even after
    the front end has run (a training-mode forward would move batch-norm statistics)."""
    device = torch.device("cuda" if torch.cuda.is_available() and engine != "onnxruntime" else "cpu")
    model = _gauss2_with_running_stats(seed=4).train()  # training mode: an .eval() would show
    model.bnPa.eval()  # mixed flags: a blanket .train() / .eval() would show too
    before = _model_state(model)
    image = torch.rand(1, 1, 32, 48, generator=torch.Generator().manual_seed(0))
    if engine == "Frontend channels_last":
        fe = Frontend(model, **KP, channels_last=True)
        assert fe.model is not model and is_channels_last(fe.model)
    else:
        cfg = {"model": {**MODEL_DEFAULTS}, "device": str(device),
               "inference": {"engine": engine, "precision": "fp32", "channels_last": True}}
        fe = frontend_with_defaults(model, cfg, device)
    fe(image)
    _assert_same_state(before, _model_state(model))
