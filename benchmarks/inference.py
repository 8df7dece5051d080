"""Inference speed of the SuperPoint front end: images -> keypoints, scores, descriptors.

    python benchmarks/inference.py                      # prints the markdown table (5-8 min, AVX-512 + VNNI + BF16)
    python benchmarks/inference.py --frames 4 --rounds 2 --sizes 240x320

Every path turns the same real photographs (gray, centre-cropped to 4:3, resized) into
keypoints and descriptors with the same settings (threshold 0.015, NMS radius 4, border 4):

* ``reference``: the MagicLeap-style front end, reimplemented here as the baseline: eager fp32
  forward (NCHW), then numpy post-processing (softmax, heatmap, grid NMS visiting points one by
  one in Python, border removal, descriptor sampling);
* ``eager ...``: ``models.frontend.Frontend`` around the network module, with the layouts and
  precisions named (``autocast bf16`` is ``torch.autocast``);
* ``torchscript``: the file written by ``export_model --format torchscript``, with the front
  end's post-processing on its outputs; ``onnxruntime``: ``inference.engine: onnxruntime`` (the
  ONNX export run by ONNX Runtime, then the same post-processing);
* ``fast ...``: ``models.inference.FastSuperPoint`` (the fast engine of ``inference_frontend``);
* ``onnxruntime int8 ...``: ``inference.precision: int8`` (``models.int8``: the ONNX export
  statically quantized by ONNX Runtime), with the shipped choice of quantized layers
  (``inference.int8.int8_layers``) and any alternatives given with ``--int8-variants``. It is
  calibrated once, at 480x640, on ``--calibration`` images (default: the shared Freiburg frames
  that are not among the timed frames; never the evaluation images).

The report names the path that ``inference_frontend`` runs by default on this machine.

Timing: ``--rounds`` rounds over all paths (their order rotates each round, so slow drifts in
the machine's load hit every path alike), each path running every frame after ``--warmup``
untimed frames; the tables give medians per frame (``best``: the fastest frame, what the path
does when the machine leaves it alone). ``post`` is everything after the network
(heatmap, NMS, border, top-k, descriptor sampling). The fp32 and bf16 matrix-multiply peaks
are measured in the same run (large products at the start and once per round, best kept); the
FLOP bound of a forward is its FLOPs divided by that peak (each layer at the peak of the dtype it
runs in), and ``forward / FLOP bound`` how far a path is from it. The load average is printed:
other jobs on a shared machine make every number slower, so re-run at a quiet time.
``CPU ms`` is the process CPU time per frame summed over threads: on a quiet machine it is about
``threads x end-to-end``; much less means the process was waiting for a core.

Keypoint agreement with the eager fp32 keypoints of the same frame: a point agrees when the other
set has a point within 1 px, counted both ways. The table gives the share over all frames
together, then the worst frame's share (the smaller of its two directions).

OpenMP: by default the benchmark sets ``OMP_WAIT_POLICY=PASSIVE`` before loading torch. With
spinning threads (``--omp-wait-policy active``, libgomp's usual behaviour) every parallel region
waits for a thread that another job has taken the core from; on the shared 2-core machine
(AVX-512 + VNNI + BF16) that made the torch paths 2-3x slower. ONNX Runtime's spinning is turned off likewise.

Weights: seeded stand-in weights (``models.stand_in``) unless ``--weights`` is given; they give
realistic keypoint counts, but agreement on a trained model should be re-checked with
``--weights``. On CUDA the benchmark also reports frames/s at 480x640 for batch 1 and 16.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _omp_wait_policy(argv) -> str:
    """Apply ``--omp-wait-policy`` before torch (and its OpenMP runtime) is loaded."""
    policy = "passive"
    if "--omp-wait-policy" in argv and argv.index("--omp-wait-policy") + 1 < len(argv):
        policy = argv[argv.index("--omp-wait-policy") + 1]
    if policy in ("passive", "active"):
        os.environ.setdefault("OMP_WAIT_POLICY", policy.upper())
    return os.environ.get("OMP_WAIT_POLICY", "runtime default")


# only when run as the benchmark: importing this module (superpoint_quality does) must not read
# another program's command line or change its environment
OMP_POLICY = (_omp_wait_policy(sys.argv[1:]) if __name__ == "__main__"
              else os.environ.get("OMP_WAIT_POLICY", "runtime default"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

from evaluations.hpatches_report import ransac_order_accuracy  # noqa: E402
from models import build_network, load_weights  # noqa: E402
from models.frontend import Frontend  # noqa: E402
from models.inference import PRECISIONS, FastSuperPoint, layer_dtypes  # noqa: E402
from models.stand_in import seeded_stand_in  # noqa: E402
from utils.cli import cpu_supports_bf16  # noqa: E402
from utils.config import load_defaults  # noqa: E402
from utils.io import atomic_write_text, read_image_gray  # noqa: E402
from utils.keypoints import pixels_to_descriptor_grid  # noqa: E402

from machine_info import cpu_name  # noqa: E402

THRESHOLD, NMS_RADIUS, BORDER = 0.015, 4, 4
PHOTO_DIRS = ("freiburg", "phototourism", "scannet")


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def shared_photos_dir() -> Path:
    """``$SUPERPOINT_SHARED_DATA/photos``, else ``shared/data/photos`` beside the repository."""
    env = os.environ.get("SUPERPOINT_SHARED_DATA")
    candidates = [REPO.parent / "shared" / "data", REPO.parent.parent / "shared" / "data"]
    for base in ([Path(env)] if env else []) + candidates:
        if (base / "photos").is_dir():
            return base / "photos"
    raise SystemExit("error: photos not found: set SUPERPOINT_SHARED_DATA to the shared data folder "
                     "or pass --images DIR")


def pick_photos(folder: Path, count: int) -> list[Path]:
    """``count`` photos spread evenly over the sub-folders (or the folder itself)."""
    groups = [sorted((folder / d).glob("*")) for d in PHOTO_DIRS if (folder / d).is_dir()]
    if not groups:
        groups = [sorted(p for p in folder.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".ppm"))]
    picked, i = [], 0
    while len(picked) < count and any(groups):
        g = groups[i % len(groups)]
        if g:
            picked.append(g.pop(len(g) // 2))
        i += 1
    if not picked:
        raise SystemExit(f"error: {folder}: no images found")
    return picked


def load_frame(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Gray float32 [0, 1], centre-cropped to the aspect of ``size`` (H, W), then resized."""
    img = read_image_gray(path)
    h, w = img.shape
    th, tw = size
    if h * tw > w * th:
        ch = round(w * th / tw)
        img = img[(h - ch) // 2:(h - ch) // 2 + ch]
    else:
        cw = round(h * tw / th)
        img = img[:, (w - cw) // 2:(w - cw) // 2 + cw]
    return cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA).astype(np.float32)


# --------------------------------------------------------------------------------------------
# the MagicLeap-style reference front end (baseline)
# --------------------------------------------------------------------------------------------
def grid_nms(xs: np.ndarray, ys: np.ndarray, scores: np.ndarray, size, radius: int) -> np.ndarray:
    """Greedy NMS on an occupancy grid, one point at a time in Python (the reference way).

    Points are visited by decreasing score; a point still marked free keeps itself and clears
    the (2r+1)^2 square around it. Returns the indices of the kept points, best first.
    """
    h, w = size
    grid = np.zeros((h + 2 * radius, w + 2 * radius), np.int8)
    grid[ys + radius, xs + radius] = 1
    kept = []
    for i in np.argsort(-scores, kind="stable"):
        y, x = ys[i] + radius, xs[i] + radius
        if grid[y, x] == 1:
            grid[y - radius:y + radius + 1, x - radius:x + radius + 1] = 0
            grid[y, x] = -1
            kept.append(i)
    return np.asarray(kept, dtype=np.int64)


class ReferenceFrontend:
    """Eager fp32 NCHW forward, numpy post-processing (softmax, grid NMS, border, descriptors)."""

    name = "reference (MagicLeap-style)"
    dtype_key = "fp32"

    def __init__(self, model):
        self.model = model

    def network(self, image: np.ndarray):
        with torch.no_grad():
            out = self.model(torch.from_numpy(image)[None, None])
        return out["semi"][0].numpy(), out["desc"]

    def postprocess(self, raw):
        semi, coarse_desc = raw
        dense = np.exp(semi - semi.max(axis=0, keepdims=True))
        dense = dense / dense.sum(axis=0, keepdims=True)
        hc, wc = semi.shape[1:]
        heat = dense[:-1].reshape(8, 8, hc, wc).transpose(2, 0, 3, 1).reshape(hc * 8, wc * 8)
        ys, xs = np.nonzero(heat >= THRESHOLD)
        scores = heat[ys, xs]
        keep = grid_nms(xs, ys, scores, heat.shape, NMS_RADIUS)
        xs, ys, scores = xs[keep], ys[keep], scores[keep]
        h, w = heat.shape
        inside = (xs >= BORDER) & (xs < w - BORDER) & (ys >= BORDER) & (ys < h - BORDER)
        pts = np.stack([xs[inside], ys[inside]], axis=1).astype(np.float32)
        if len(pts):
            grid = pixels_to_descriptor_grid(torch.from_numpy(pts), (hc, wc)).view(1, 1, -1, 2)
            with torch.no_grad():
                d = F.grid_sample(coarse_desc, grid, mode="bilinear", align_corners=True)[0, :, 0].numpy()
            d = d / np.linalg.norm(d, axis=0, keepdims=True)
        else:
            d = np.zeros((coarse_desc.shape[1], 0), np.float32)
        return pts, scores[inside], d

    @staticmethod
    def points(result) -> np.ndarray:
        return result[0]


# --------------------------------------------------------------------------------------------
# the project's paths
# --------------------------------------------------------------------------------------------
class FrontendPath:
    """A :class:`Frontend` (network + batched post-processing) fed one frame at a time."""

    def __init__(self, name: str, frontend: Frontend, dtype_key: str):
        self.name, self.frontend, self.dtype_key = name, frontend, dtype_key

    def network(self, image: np.ndarray):
        return self.frontend.network(torch.from_numpy(image)[None, None])

    def postprocess(self, raw):
        return self.frontend.postprocess(raw)

    @staticmethod
    def points(result) -> np.ndarray:
        return result.keypoints.to_list()[0][:, :2].cpu().numpy()


def int8_paths(model, threads: int, workdir: Path, calibration: Path, exclude: list[Path],
               variants: list[tuple]) -> list:
    """One ``onnxruntime int8`` path per (label, quantized layers[, calibration method]) of
    ``variants``, calibrated at 480x640 on the same images (cache under ``workdir``)."""
    from models.int8 import int8_settings, quantize_int8
    from models.onnx_runtime import OnnxRuntimeNetwork

    kp = dict(detection_threshold=THRESHOLD, nms_radius=NMS_RADIUS, border=BORDER)
    int8_defaults = load_defaults()["inference"]["int8"]  # size, count: the documented defaults
    paths = []
    for label, layers, *method in variants:
        section = {**int8_defaults, "int8_layers": list(layers), "cache_dir": str(workdir / "int8_cache")}
        if method and method[0]:
            section["method"] = method[0]
        settings = int8_settings(section, calibration)
        settings.exclude_files = tuple(exclude)
        data, record = quantize_int8(model, settings)
        name = f"onnxruntime int8 ({label})"
        path = FrontendPath(name, Frontend(OnnxRuntimeNetwork(model, threads, onnx_model=data), **kp), "int8")
        path.record = record
        paths.append(path)
    return paths


def parse_int8_variant(text: str) -> tuple[str, tuple[str, ...], str | None]:
    """``LABEL=LAYER,LAYER`` (the quantized layers) or ``LABEL=all``, optionally followed by
    ``@METHOD`` (the calibration method; default: the config's)."""
    from models.int8 import LAYERS, METHODS

    label, _, rest = text.partition("=")
    layers, _, method = rest.partition("@")
    names = LAYERS if layers == "all" else tuple(n for n in layers.split(",") if n)
    bad = [n for n in names if n not in LAYERS]
    if not label or not names or bad or (method and method not in METHODS):
        raise argparse.ArgumentTypeError(f"--int8-variants {text!r}: expected LABEL=all or LABEL=LAYER,LAYER with "
                                         f"layers among {', '.join(LAYERS)}, optionally @METHOD "
                                         f"({' | '.join(METHODS)})")
    return label, names, method or None


def build_paths(model, threads: int, workdir: Path, select: set[str] | None) -> list:
    from exporters.model_export import export_torchscript, exported_network
    from models.onnx_runtime import OnnxRuntimeNetwork

    kp = dict(detection_threshold=THRESHOLD, nms_radius=NMS_RADIUS, border=BORDER)
    bf16 = cpu_supports_bf16()
    specs = [
        ("reference (MagicLeap-style)", lambda: ReferenceFrontend(model)),
        ("eager fp32", lambda: FrontendPath("eager fp32", Frontend(model, **kp), "fp32")),
        ("eager fp32 channels-last", lambda: FrontendPath(
            "eager fp32 channels-last", Frontend(model, **kp, channels_last=True), "fp32")),
    ]
    if bf16:
        specs.append(("eager autocast bf16 channels-last", lambda: FrontendPath(
            "eager autocast bf16 channels-last",
            Frontend(model, **kp, autocast_dtype=torch.bfloat16, channels_last=True), "bf16")))

    def exported(fmt, name):
        path = workdir / "superpoint.pt"
        export_torchscript(model, path, ("semi", "desc"), torch.rand(1, 1, 64, 80))
        return FrontendPath(name, Frontend(exported_network(path, fmt, threads), **kp), "fp32")

    specs += [("torchscript fp32 (frozen)", lambda: exported("torchscript", "torchscript fp32 (frozen)")),
              ("onnxruntime fp32", lambda: FrontendPath(
                  "onnxruntime fp32", Frontend(OnnxRuntimeNetwork(model, threads), **kp), "fp32"))]
    for prec in ("fp32", "mixed", "bf16"):
        if prec != "fp32" and not bf16:
            continue
        name = f"fast {prec}"
        specs.append((name, lambda n=name, p=prec: FrontendPath(n, Frontend(FastSuperPoint(model, p), **kp), p)))
    return [make() for name, make in specs if not select or any(s in name for s in select)]


def _copy(model):
    import copy
    return copy.deepcopy(model)


# --------------------------------------------------------------------------------------------
# FLOPs and the machine's peak
# --------------------------------------------------------------------------------------------
def layer_flops(model, size) -> dict[str, int]:
    """Multiply-adds x 2 of each convolution of a SuperPoint network at image ``size`` (H, W)."""
    from models.inference import folded_layers

    h, w = size
    scale = {"conv1": 1, "conv2": 2, "conv3": 4, "conv4": 8}
    out = {}
    for name, (weight, _) in folded_layers(model).items():
        s = scale.get(name[:5], 8)
        out[name] = 2 * weight.numel() * (h // s) * (w // s)
    return out


def counted_flops(model, size) -> int:
    """FLOPs of one forward as counted by torch.utils.flop_counter (a cross-check)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 1, *size))
    return counter.get_total_flops()


def matmul_peak(dtype, sizes=(2048, 4096), repeats: int = 3) -> float:
    """Best GFLOP/s of n x n matrix products (each size warmed up once, then ``repeats`` runs)."""
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        a @ b
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            best = max(best, 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return best


# --------------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------------
def agreement_counts(a: np.ndarray, b: np.ndarray, tol: float = 1.0) -> tuple[int, int, int, int]:
    """(points of ``a`` with a point of ``b`` within ``tol`` px, len(a), the same for ``b``, len(b))."""
    if len(a) == 0 or len(b) == 0:
        return 0, len(a), 0, len(b)
    d = torch.cdist(torch.from_numpy(a).double(), torch.from_numpy(b).double())
    return int((d.min(1).values <= tol).sum()), len(a), int((d.min(0).values <= tol).sum()), len(b)


def agreement(a: np.ndarray, b: np.ndarray, tol: float = 1.0) -> float:
    """Share of ``a``'s points with a point of ``b`` within ``tol`` px, and the reverse: the smaller."""
    ma, na, mb, nb = agreement_counts(a, b, tol)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return min(ma / na, mb / nb)


def pooled_agreement(pairs) -> tuple[float, float]:
    """Over (points, fp32 points) pairs: matched points / all points (both directions), and the
    worst frame's :func:`agreement`."""
    counts = [agreement_counts(a, b) for a, b in pairs]
    total = sum(c[1] + c[3] for c in counts)
    pooled = sum(c[0] + c[2] for c in counts) / total if total else 1.0
    return pooled, min(agreement(a, b) for a, b in pairs)


def time_paths(paths, frames, rounds: int, warmup: int, desc: str, peaks: dict | None = None) -> dict:
    """Per path: lists of per-frame forward and post-processing seconds. With ``peaks``
    (dtype -> FLOP/s), the matrix-multiply peaks are re-measured once per round and the best kept,
    so that the peak sees the same machine load as the paths."""
    times = {p.name: {"fwd": [], "post": [], "cpu": []} for p in paths}
    for p in paths:
        for f in frames[:warmup]:
            p.postprocess(p.network(f))
    bar = tqdm(total=rounds * len(paths) * len(frames), desc=desc, unit="frame", file=sys.stderr)
    for r in range(rounds):
        if peaks is not None:
            for dt in list(peaks):
                peaks[dt] = max(peaks[dt], matmul_peak(dt, sizes=(2048,), repeats=1) * 1e9)
        order = paths[r % len(paths):] + paths[:r % len(paths)]
        for p in order:
            for f in frames:
                c0 = time.process_time()
                t0 = time.perf_counter()
                raw = p.network(f)
                t1 = time.perf_counter()
                p.postprocess(raw)
                t2 = time.perf_counter()
                times[p.name]["cpu"].append(time.process_time() - c0)
                times[p.name]["fwd"].append(t1 - t0)
                times[p.name]["post"].append(t2 - t1)
                bar.update()
    bar.close()
    return times


def cpu_table(paths, frames_by_size, times_by_size, flops_by_size, peaks, baseline_points) -> list[str]:
    lines = ["| path | size | end-to-end ms | best ms | speed-up vs reference | forward ms | post ms | post share "
             "| CPU ms (all threads) | forward GFLOP/s | forward / FLOP bound "
             "| keypoints within 1 px of fp32: all frames / worst frame |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for size, times in times_by_size.items():
        layers = flops_by_size[size]
        total = sum(layers.values())
        ref_ms = None
        for p in paths:
            t = times[p.name]
            e2e = statistics.median([a + b for a, b in zip(t["fwd"], t["post"])]) * 1e3
            best = min(a + b for a, b in zip(t["fwd"], t["post"])) * 1e3
            fwd = statistics.median(t["fwd"]) * 1e3
            post = statistics.median(t["post"]) * 1e3
            cpu = statistics.median(t["cpu"]) * 1e3
            ref_ms = ref_ms or e2e
            # FLOP bound with the peak of the dtype each layer runs in (int8: no matching peak measured)
            bound = None
            if p.dtype_key in PRECISIONS:
                dtypes = layer_dtypes(p.dtype_key)
                bound = sum(v / peaks[dtypes[k]] for k, v in layers.items())
            pooled, worst = pooled_agreement([(p.points(p.postprocess(p.network(f))), ref)
                                              for f, ref in zip(frames_by_size[size], baseline_points[size])])
            lines.append(f"| {p.name} | {size[0]}x{size[1]} | {e2e:.0f} | {best:.0f} | {ref_ms / e2e:.2f}x "
                         f"| {fwd:.0f} | {post:.1f} "
                         f"| {100 * post / e2e:.1f} % | {cpu:.0f} | {total / (fwd / 1e3) / 1e9:.0f} "
                         f"| {'-' if bound is None else f'{fwd / 1e3 / bound:.2f}'} "
                         f"| {100 * pooled:.1f} % / {100 * worst:.1f} % |")
    return lines


def gpu_section(model, photos: list[Path], rounds: int, device=None, precisions=None,
                batches=(1, 16), size=(480, 640)) -> list[str]:
    """Frames/s on CUDA (480x640, batch 1 and 16, fp32 / fp16 / bf16, fast and eager engines)."""
    dev = device or torch.device("cuda")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    frames = [load_frame(p, size) for p in photos]
    big = torch.from_numpy(np.stack([frames[i % len(frames)] for i in range(max(batches))]))[:, None].to(dev)
    model = model.to(dev).eval()
    kp = dict(detection_threshold=THRESHOLD, nms_radius=NMS_RADIUS, border=BORDER)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev)
    lines = [f"GPU: {name}, {size[0]}x{size[1]}", "",
             "| engine | precision | batch | frames/s (end to end) | forward ms / batch | post ms / batch |",
             "|---|---|---|---|---|---|"]
    precs = precisions or ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    for engine in ("fast", "eager"):
        for prec in precs:
            dt = PRECISIONS[prec][0]
            if engine == "fast":
                fe = Frontend(FastSuperPoint(model, prec), **kp)
            else:
                fe = Frontend(model, **kp, channels_last=True,
                              autocast_dtype=None if prec == "fp32" else dt)
            for b in batches:
                x = big[:b]
                for _ in range(3):
                    fe(x)
                fw, po = [], []
                for _ in range(max(rounds, 3) * 5):
                    sync()
                    t0 = time.perf_counter()
                    raw = fe.network(x)
                    sync()
                    t1 = time.perf_counter()
                    fe.postprocess(raw)
                    sync()
                    t2 = time.perf_counter()
                    fw.append(t1 - t0)
                    po.append(t2 - t1)
                e2e = statistics.median([a + c for a, c in zip(fw, po)])
                lines.append(f"| {engine} | {prec} | {b} | {b / e2e:.0f} | {statistics.median(fw) * 1e3:.1f} "
                             f"| {statistics.median(po) * 1e3:.1f} |")
    return lines


METRICS = ("HA eps=1", "eps=3", "eps=5", "repeatability", "MLE", "NN mAP", "matching score")


def hpatches_comparison(paths, workdir: Path, size=(240, 320), top_k: int = 1000, orderings: int = 100,
                        root: str = "embedded", label: str = "embedded HPatches-style set") -> list[str]:
    """The HPatches-style metrics of every project path against eager fp32 on the pairs of
    ``root`` (``embedded``: the 50 pairs built from scikit-image's photos; or an HPatches-layout
    folder such as the 8 real pairs), at ``size``, with the standard evaluation (ours, k = top_k).

    Each path detects on both images of every pair with the benchmark's keypoint settings plus
    top-k; the predictions are written as ``export_descriptor`` writes them and scored by
    ``evaluations.hpatches_report``: homography accuracy (HA) at eps 1 / 3 / 5, repeatability,
    MLE, NN mAP and matching score. The yardsticks of :func:`yardstick_paths` show what a known
    small change does. HA is also given as the mean over ``orderings`` random orders of the
    matches given to RANSAC (``evaluations.hpatches_report.ransac_order_accuracy``), with the
    spread of single runs for eager fp32; the change columns use that mean (the metric's own noise averaged out).
    """
    from datasets.hpatches import HPatches
    from evaluations.hpatches_report import evaluate_folder
    from evaluations.protocols import load_settings
    from exporters.descriptors import detect, pair_record
    from exporters.predictions import save_prediction
    from utils.config import load_config

    config = load_config(Path(__file__).resolve().parent.parent / "configs/magicpoint_repeatability_embedded.yaml",
                         [f"data.preprocessing.resize=[{size[0]}, {size[1]}]", f"data.root={root}"])
    pairs = HPatches(config, "test")
    settings = load_settings(top_k=top_k)
    rows, ordered = {}, {}
    tag = "embedded" if root == "embedded" else Path(root).name
    for path in [p for p in paths if isinstance(p, FrontendPath)]:
        fe = path.frontend
        old_top_k, fe.top_k = fe.top_k, top_k
        folder = workdir / "hpatches" / tag / path.name.replace(" ", "_").replace("/", "_") / "predictions"
        folder.mkdir(parents=True, exist_ok=True)
        try:
            for i in tqdm(range(len(pairs)), desc=f"{label}: {path.name}", leave=False):
                item = pairs[i]
                # one image per forward, as timed; the records are export_descriptor's
                (first,), (second,) = (detect(fe, [item[key]], False) for key in ("image", "warped_image"))
                save_prediction(folder, i, pair_record(item, i, first, second))
        finally:
            fe.top_k = old_top_k
        res = evaluate_folder(folder, settings, progress=False)["metrics"]
        ha = res["homography_accuracy"]
        rows[path.name] = np.array([ha["1"], ha["3"], ha["5"], res["repeatability"], res["mle"], res["nn_map"],
                                    res["matching_score"]], dtype=float)
        ordered[path.name] = ransac_order_accuracy(folder, settings, orderings) if orderings else None
    if "eager fp32" not in rows:
        return ["HPatches-style comparison: needs the 'eager fp32' path (run without --paths)."]
    base = rows["eager fp32"]
    base_mean = ordered["eager fp32"].mean(axis=0) if orderings else base[:3]
    lines = [f"{label[:1].upper() + label[1:]} ({len(pairs)} pairs at {size[0]}x{size[1]}, k = {top_k}): "
             f"the HPatches-style metrics of each path and the largest change from eager fp32. "
             f"'HA, {orderings} RANSAC orders' is the mean over {orderings} random orders of the same matches "
             f"(the metric's own noise averaged out); 'max change' is over those three HA values, repeatability, "
             f"MLE (px), NN mAP and matching score.", "",
             "| path | " + " | ".join(METRICS) + f" | HA, {orderings} RANSAC orders (eps=1 / 3 / 5) "
             "| max change vs fp32 | largest change in |",
             "|---|" + "---:|" * len(METRICS) + "---|---:|---|"]
    names = ("HA eps=1 (averaged)", "HA eps=3 (averaged)", "HA eps=5 (averaged)") + METRICS[3:]
    for name, r in rows.items():
        mean = ordered[name].mean(axis=0) if orderings else r[:3]
        change = np.abs(np.concatenate([mean - base_mean, r[3:] - base[3:]]))
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in r)
                     + f" | {' / '.join(f'{v:.3f}' for v in mean)} | {change.max():.3f} "
                     f"| {names[int(change.argmax())] if change.max() > 0 else '-'} |")
    if orderings:
        spread = ordered["eager fp32"]
        lines += ["", f"The metric's own noise: with the eager fp32 matches unchanged, one evaluation's HA over the "
                  f"{orderings} orders has standard deviation "
                  + ", ".join(f"{spread[:, j].std():.3f} (eps={t})" for j, t in enumerate((1, 3, 5)))
                  + " and ranges "
                  + ", ".join(f"{spread[:, j].min():.2f}-{spread[:, j].max():.2f}" for j in range(3)) + "."]
    return lines


def int8_lines(int8_rows) -> list[str]:
    """What the int8 rows were calibrated on (from their records)."""
    if not int8_rows:
        return []
    cal = int8_rows[0].record["calibration"]
    return [f"- int8 (ONNX Runtime {int8_rows[0].record['onnxruntime']}, QDQ, weights int8 per channel, activations "
            f"uint8): {cal['method']} calibration on {len(cal['images'])} images of {cal['folder']} at "
            f"{cal['size'][0]}x{cal['size'][1]} (not the timed frames); one calibration for every int8 row.", ""]


def yardstick_paths(model) -> list:
    """Untimed paths that show how much the HPatches-style metrics move for a known, tiny change:
    the fast fp32 engine with every weight multiplied by ``1 + e * N(0, 1)`` (e = 1e-5, 1e-4;
    bf16 rounds weights by up to 4e-3), and the fast engine in fp16 computed on the CPU (the
    rounding a GPU's fp16 path has; slow here, correct)."""
    kp = dict(detection_threshold=THRESHOLD, nms_radius=NMS_RADIUS, border=BORDER)
    paths = []
    for e in (1e-5, 1e-4):
        noisy = _copy(model)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in noisy.parameters():
                p.mul_(1 + e * torch.randn(p.shape, generator=g))
        name = f"fast fp32, weights x (1 + {e:g} N(0,1))"
        paths.append(FrontendPath(name, Frontend(FastSuperPoint(noisy, "fp32"), **kp), "fp32"))
    paths.append(FrontendPath("fast fp16 (on the CPU: a GPU's fp16 rounding)",
                              Frontend(FastSuperPoint(model, "fp16"), **kp), "fp16"))
    return paths


def default_path_name(model) -> str:
    """The benchmark path that ``inference_frontend`` with the default ``inference:`` settings runs
    on this machine's CPU."""
    from models.frontend import resolve_engine
    from models.inference import resolve_inference_precision

    cpu = torch.device("cpu")
    precision = resolve_inference_precision("auto", cpu)
    engine = resolve_engine("auto", precision, cpu, model)
    return {"onnxruntime": "onnxruntime fp32", "fast": f"fast {precision}", "eager": "eager fp32"}[engine]


# --------------------------------------------------------------------------------------------
def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected HxW, e.g. 480x640") from None
    if h % 8 or w % 8 or h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"size {text!r}: H and W must be positive multiples of 8")
    return h, w


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(240, 320), (480, 640)], metavar="HxW")
    parser.add_argument("--frames", type=int, default=6, help="photos per size")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the frames per path")
    parser.add_argument("--warmup", type=int, default=2, help="untimed frames per path first")
    parser.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime intra-op threads")
    parser.add_argument("--images", type=Path, help="folder of photos (default: the shared data photos)")
    parser.add_argument("--model", default="SuperPointNet", choices=["SuperPointNet", "SuperPointNet_gauss2"])
    parser.add_argument("--weights", type=Path, help="trained weights (default: seeded stand-in weights)")
    parser.add_argument("--paths", nargs="+", help="only the paths whose names contain one of these words")
    parser.add_argument("--output", type=Path, help="also write the markdown to this file")
    parser.add_argument("--no-hpatches", action="store_true",
                        help="skip the HPatches-style comparisons (embedded set and real pairs)")
    parser.add_argument("--ransac-orders", type=int, default=100,
                        help="random orders of the matches per pair for the averaged homography accuracy "
                             "(0: skip)")
    parser.add_argument("--calibration", type=Path,
                        help="int8: folder of calibration images (default: the shared photos/freiburg frames; "
                             "the timed frames are left out)")
    parser.add_argument("--int8-variants", nargs="*", type=parse_int8_variant, default=[], metavar="LABEL=LAYERS",
                        help="extra int8 rows with other quantized layers, e.g. all=all block1-2=conv1a,conv1b,"
                             "conv2a,conv2b, and optionally a calibration method: pct=conv1b,conv2a@percentile "
                             "(the shipped choice, inference.int8.int8_layers, always runs)")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 paths")
    parser.add_argument("--real-pairs", type=Path,
                        help="HPatches-layout folder of real pairs for the second HPatches-style table "
                             "(default: the shared hpatches_real; skipped when missing)")
    parser.add_argument("--omp-wait-policy", choices=["passive", "active", "default"], default="passive",
                        help="OpenMP threads sleep (passive) or spin (active) at barriers; passive is much "
                             "faster when other jobs share the cores (an OMP_WAIT_POLICY already set wins)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    model = build_network(args.model)
    if args.weights:
        load_weights(model, args.weights)
    else:
        seeded_stand_in(model, seed=0)
    model.eval()
    photos = pick_photos(args.images or shared_photos_dir(), args.frames)

    peaks = {torch.float32: matmul_peak(torch.float32) * 1e9}
    if cpu_supports_bf16():
        peaks[torch.bfloat16] = matmul_peak(torch.bfloat16) * 1e9

    with tempfile.TemporaryDirectory() as tmp:
        paths = build_paths(model, args.threads, Path(tmp), set(args.paths) if args.paths else None)
        int8_rows = []
        if not args.no_int8:
            from utils.config import load_defaults

            shipped = tuple(load_defaults()["inference"]["int8"]["int8_layers"])
            variants = [("default: " + ",".join(shipped), shipped, None)] + list(args.int8_variants)
            calibration = args.calibration or shared_photos_dir() / "freiburg"
            int8_rows = int8_paths(model, args.threads, Path(tmp), calibration, photos, variants)
            paths += int8_rows
        frames_by_size, times_by_size, flops_by_size, baseline = {}, {}, {}, {}
        eager = Frontend(model, detection_threshold=THRESHOLD, nms_radius=NMS_RADIUS, border=BORDER)
        for size in args.sizes:
            frames = [load_frame(p, size) for p in photos]
            frames_by_size[size] = frames
            flops_by_size[size] = layer_flops(model, size)
            baseline[size] = [eager(torch.from_numpy(f)[None, None]).keypoints.to_list()[0][:, :2].numpy()
                              for f in frames]
            times_by_size[size] = time_paths(paths, frames, args.rounds, args.warmup, f"{size[0]}x{size[1]}", peaks)
        peaks.setdefault(torch.bfloat16, peaks[torch.float32])  # no native bf16: emulated, no faster
        peaks[torch.float16] = peaks[torch.float32]
        table = cpu_table(paths, frames_by_size, times_by_size, flops_by_size, peaks, baseline)
        hpatches = []
        if not args.no_hpatches:
            compared = paths + yardstick_paths(model)
            hpatches = hpatches_comparison(compared, Path(tmp), orderings=args.ransac_orders)
            real = args.real_pairs or shared_photos_dir().parent / "hpatches_real"
            if real.is_dir():
                hpatches += [""] + hpatches_comparison(compared, Path(tmp), orderings=args.ransac_orders,
                                                       root=str(real), label=f"real HPatches pairs ({real.name})")
    load_end = os.getloadavg()

    counts = {s: [len(b) for b in baseline[s]] for s in args.sizes}
    flop_lines = ", ".join(f"{h}x{w}: {sum(flops_by_size[(h, w)].values()) / 1e9:.1f} GFLOP "
                           f"(flop_counter: {counted_flops(model, (h, w)) / 1e9:.1f})" for h, w in args.sizes)
    out = [f"#### Inference, CPU ({args.threads} threads), {datetime.date.today().isoformat()}", "",
           f"- Machine: {cpu_name()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}; "
           f"OMP_WAIT_POLICY {OMP_POLICY}; "
           f"load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at the end.",
           f"- Matrix-multiply peak (best of 2048^2 and 4096^2 products at the start and one 2048^2 product per "
           f"timing round): fp32 {peaks[torch.float32] / 1e9:.0f} GFLOP/s, "
           f"bf16 {peaks[torch.bfloat16] / 1e9:.0f} GFLOP/s.",
           f"- Forward FLOPs ({args.model}): {flop_lines}.",
           f"- Frames: {len(photos)} photos ({', '.join(p.parent.name for p in photos)}), "
           f"{args.rounds} rounds, medians per frame; weights: "
           f"{args.weights or 'seeded stand-in (models/stand_in.py)'}; keypoints per frame (eager fp32): "
           + "; ".join(f"{h}x{w}: {min(c)}-{max(c)}" for (h, w), c in counts.items()) + ".",
           ""] + int8_lines(int8_rows) + table + [
        "", "Default on this machine (`inference_frontend`, `engine: auto`, `precision: auto`): "
                          f"**{default_path_name(model)}**.", ""] + hpatches
    if torch.cuda.is_available():
        out += ["", "#### Inference, CUDA", ""] + gpu_section(model, photos, args.rounds)
    else:
        out += ["", "CUDA: no GPU on this machine, not measured (the benchmark reports frames/s at 480x640, "
                "batch 1 and 16, fp32 / fp16 / bf16, when run on one)."]
    text = "\n".join(out) + "\n"
    print(text)
    if args.output:
        atomic_write_text(args.output, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
