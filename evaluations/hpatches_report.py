"""Evaluate a predictions folder pair by pair, aggregate, and write results.txt / results.json.

Used by ``evaluation.py``; the notebook and the benchmark call :func:`evaluate_folder` directly.
Outputs go to ``output_dir`` (the CLI uses the predictions folder's parent, e.g. ``logs/<name>/``):
``<stem>.json``, ``<stem>.txt`` and, on request, pictures under ``<stem>_images/``, where the stem
is ``results`` for our protocol and ``results_reference`` for the reference one.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evaluations.auc import error_auc
from evaluations.descriptor import corner_error, estimate_homography, homography_accuracy
from evaluations.pair_metrics import PairResult, evaluate_pair
from evaluations.predictions import PairPredictions, check_keys, list_prediction_files, load_pair
from evaluations.protocols import EvaluationSettings
from utils.io import atomic_write_text

SCHEMA_VERSION = 1
MAX_DRAWN_MATCHES = 150  # a random (seeded) subset keeps the match pictures readable


@contextlib.contextmanager
def single_torch_thread():
    """Run torch on one intra-op thread inside the block (restored after).

    The point warps go through torch on ~1000 x 3 arrays, where thread start-up and contention
    cost far more than the work (30x slower on a busy 2-core AVX-512 + VNNI + BF16 machine).
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def ransac_order_accuracy(pred_dir: str | Path, settings: EvaluationSettings, orders: int,
                          thresholds=(1, 3, 5)) -> np.ndarray:
    """Homography accuracy of a predictions folder under ``orders`` random orders of each pair's
    matches: ``orders x len(thresholds)``.

    The matches are the standard evaluation's; only the order in which OpenCV's RANSAC sees them
    changes (order ``r`` is ``default_rng(r).permutation``). RANSAC draws its samples by index with
    a fixed seed, so the order decides which samples it tries: the spread of the rows is the
    metric's own noise and their mean the accuracy with that noise averaged out (on 8 pairs one
    order moves eps = 3 by about 0.1).
    """
    errors = []
    with single_torch_thread():
        for f in list_prediction_files(pred_dir):
            pair = load_pair(f)
            drawing = evaluate_pair(pair, settings, repeatability=False).drawing
            q1, q2 = drawing["match_points1"], drawing["match_points2"]
            row = []
            for r in range(orders):
                order = np.random.default_rng(r).permutation(len(q1))
                est = estimate_homography(q1[order], q2[order], settings.ransac_threshold,
                                          settings.ransac_max_iters, settings.ransac_confidence)
                row.append(corner_error(pair.homography, est.H, pair.size))
            errors.append(row)
    errors = np.asarray(errors, dtype=np.float64).reshape(-1, orders)  # pairs x orders
    return np.stack([(errors <= t).mean(axis=0) for t in thresholds], axis=1)


def results_stem(settings: EvaluationSettings) -> str:
    return "results" if settings.protocol == "ours" else f"results_{settings.protocol}"


def _num(x):
    """A JSON-safe number: NaN / inf -> None, numpy scalars -> Python."""
    if x is None:
        return None
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    x = float(x)
    return x if math.isfinite(x) else None


def _jsonable(metrics: dict) -> dict:
    out = {}
    for k, v in metrics.items():
        out[k] = [_num(i) for i in v] if isinstance(v, (list, tuple)) else _num(v)
    return out


def _mean(values) -> float | None:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    return float(np.mean(v)) if v else None


def _descriptor_warnings(pair: PairPredictions, settings: EvaluationSettings) -> list[str]:
    """Warnings about descriptors that do not fit the chosen settings (printed once)."""
    if settings.sift or settings.descriptor_metric != "l2" or pair.desc is None or len(pair.desc) == 0:
        return []
    norms = np.linalg.norm(pair.desc.astype(np.float64), axis=1)
    if np.all(np.abs(norms - 1.0) < 1e-2):
        return []
    what = f"{pair.file}: descriptors are not unit vectors (norms {norms.min():.3g}..{norms.max():.3g})"
    if settings.protocol == "reference":
        return [f"{what}; the reference NN mAP matcher assumes unit norm: pass --sift for classical descriptors"]
    if settings.nn_thresh is not None:
        return [f"{what}; evaluation.nn_thresh={settings.nn_thresh} assumes unit norm: pass --sift "
                f"for classical descriptors"]
    return []


def aggregate(per_pair: list[dict], settings: EvaluationSettings, repeatability: bool, homography: bool) -> dict:
    """Dataset-level numbers from the per-pair records (see docs/EVALUATION.md)."""
    out: dict = {}
    n1 = [p["n_points"][0] for p in per_pair]
    n2 = [p["n_points"][1] for p in per_pair]
    out["mean_points"] = [_mean(n1), _mean(n2)]
    if "n_shared" in (per_pair[0] if per_pair else {}):
        out["mean_shared_points"] = [_mean(p["n_shared"][0] for p in per_pair),
                                     _mean(p["n_shared"][1] for p in per_pair)]
    if repeatability:
        out["repeatability"] = _mean(p["repeatability"] for p in per_pair)
        mles = [p["mle"] for p in per_pair if p["mle"] is not None]
        if settings.protocol == "reference":  # the reference averages only strictly positive errors
            mles = [v for v in mles if v > 0]
        out["mle"] = _mean(mles)
        out["mle_pairs"] = len(mles)
    if homography:
        errors = [np.inf if p["corner_error"] is None else p["corner_error"] for p in per_pair]
        acc = homography_accuracy(errors, settings.homography_thresholds)
        out["homography_accuracy"] = {f"{t:g}": v for t, v in acc.items()}
        ok = [e for e in errors if math.isfinite(e)]
        # AUC of the corner error (LightGlue / glue-factory), of the estimator chosen for it
        key = "corner_error_dlt" if settings.homography_estimator == "dlt" else "corner_error"
        auc_errors = [np.inf if p.get(key) is None else p[key] for p in per_pair]
        aucs = error_auc(auc_errors, settings.homography_auc_thresholds)
        out["homography_auc"] = {f"{t:g}": v for t, v in aucs.items()}
        out["homography_failures"] = len(errors) - len(ok)
        out["corner_error_mean"] = _mean(ok)
        out["corner_error_median"] = float(np.median(ok)) if ok else None
        out["nn_map"] = _mean(p["nn_ap"] for p in per_pair)
        out["matching_score"] = _mean(p["matching_score"] for p in per_pair)
        out["mean_matches"] = _mean(p["n_matches"] for p in per_pair)
        out["mean_inliers"] = _mean(p["n_inliers"] for p in per_pair)
    return out


def _save_pictures(pair: PairPredictions, res: PairResult, image_dir: Path, output_img: bool,
                   plot_matching: bool, settings: EvaluationSettings) -> None:
    import cv2

    from utils.draw import YELLOW, draw_keypoints, draw_matches, put_title, save_rgb, side_by_side, to_rgb_uint8

    stem = pair.file.stem
    m, d = res.metrics, res.drawing
    if output_img:
        # every detection in yellow, the evaluated ones (k best in the shared region) in green
        left = draw_keypoints(draw_keypoints(pair.image, d["all_points1"], YELLOW, 1.0), d["points1"])
        right = draw_keypoints(draw_keypoints(pair.warped_image, d["all_points2"], YELLOW, 1.0), d["points2"])
        title = (f"{pair.file.name}: {len(d['points1'])} / {len(d['points2'])} points evaluated (green) "
                 f"of {len(d['all_points1'])} / {len(d['all_points2'])}")
        if "repeatability" in m:
            title += f", repeatability {m['repeatability']:.3f}"
        save_rgb(image_dir / "detections" / f"{stem}.png", put_title(side_by_side([left, right]), title))
        if "corner_error" in m:
            h2, w2 = pair.warped_size
            img1 = to_rgb_uint8(pair.image)
            if d.get("H_est") is not None:
                warped = cv2.warpPerspective(img1, d["H_est"], (w2, h2))
                title = f"image warped by the estimate | warped_image  (corner error {m['corner_error']:.2f} px)"
            else:
                warped = np.zeros((h2, w2, 3), np.uint8)
                title = "homography estimation failed"
            save_rgb(image_dir / "warping" / f"{stem}.png",
                     put_title(side_by_side([warped, pair.warped_image]), title))
    if plot_matching and "match_points1" in d:
        ok = d["match_correct"]
        label = ("RANSAC inliers" if settings.protocol == "reference"
                 else f"correct (<= {settings.correctness_distance:g} px)")
        canvas = draw_matches(pair.image, pair.warped_image, d["match_points1"], d["match_points2"], ok,
                              max_lines=MAX_DRAWN_MATCHES)
        shown = f" ({MAX_DRAWN_MATCHES} drawn)" if len(ok) > MAX_DRAWN_MATCHES else ""
        save_rgb(image_dir / "matching" / f"{stem}.png",
                 put_title(canvas, f"{pair.file.name}: {len(ok)} mutual-NN matches, {int(ok.sum())} {label}{shown}"))


def evaluate_folder(pred_dir: str | Path, settings: EvaluationSettings, repeatability: bool = True,
                    homography: bool = True, output_dir: str | Path | None = None, output_img: bool = False,
                    plot_matching: bool = False, progress: bool = True) -> dict:
    """Evaluate every ``<i>.npz`` of ``pred_dir``; returns the results dict (results.json's content).

    Pictures (``output_img`` / ``plot_matching``) go under ``output_dir/<stem>_images/``; nothing
    else is written here (see :func:`write_results`).
    """
    pred_dir = Path(pred_dir)
    files = list_prediction_files(pred_dir)
    for f in files:  # missing keys and broken archives fail before any work is done
        check_keys(f, need_descriptors=homography)
    image_dir = None
    if output_img or plot_matching:
        if output_dir is None:
            raise ValueError("evaluate_folder: output_dir is needed to write pictures")
        image_dir = Path(output_dir) / f"{results_stem(settings)}_images"

    per_pair: list[dict] = []
    with single_torch_thread():
        for i, f in enumerate(tqdm(files, desc="evaluating pairs", unit="pair", disable=not progress,
                                   file=sys.stderr)):
            pair = load_pair(f, need_descriptors=homography)
            if homography and i == 0:  # descriptors that do not fit the settings: say so once
                for w in _descriptor_warnings(pair, settings):
                    print(f"warning: {w}", file=sys.stderr)
            res = evaluate_pair(pair, settings, repeatability=repeatability, homography=homography)
            per_pair.append({"file": f.name, "name": pair.name, "index": pair.index, **_jsonable(res.metrics)})
            if image_dir is not None:
                _save_pictures(pair, res, image_dir, output_img, plot_matching and homography, settings)

    return {
        "schema_version": SCHEMA_VERSION,
        "predictions": str(pred_dir.resolve()),
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "num_pairs": len(per_pair),
        "tasks": {"repeatability": bool(repeatability), "homography": bool(homography)},
        "settings": settings.record(),
        "metrics": aggregate(per_pair, settings, repeatability, homography),
        "images": str(image_dir.resolve()) if image_dir is not None else None,
        "per_pair": per_pair,
    }


# --------------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------------
def _fmt(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_table(results: dict) -> str:
    """The results as a markdown table laid out like the reference README's HPatches table."""
    m, s = results["metrics"], results["settings"]
    head = ["Protocol", "Pairs", "k"]
    row = [s["protocol"] + (" (sift)" if s["sift"] else ""), str(results["num_pairs"]), str(s["top_k"] or "all")]
    if results["tasks"]["homography"]:
        for t, v in m["homography_accuracy"].items():
            head.append(f"Homography eps={t}")
            row.append(_fmt(v, 3))
        for t, v in m["homography_auc"].items():
            head.append(f"H AUC@{t}px")
            row.append(_fmt(v, 3))
    if results["tasks"]["repeatability"]:
        head += ["Repeatability", "MLE"]
        row += [_fmt(m["repeatability"]), _fmt(m["mle"])]
    if results["tasks"]["homography"]:
        head += ["NN mAP", "Matching Score"]
        row += [_fmt(m["nn_map"]), _fmt(m["matching_score"])]
    return aligned_table(head, row)


def aligned_table(head: list[str], row: list[str]) -> str:
    """A one-row markdown table whose columns line up in plain text (evaluation.py's tables)."""
    widths = [max(len(h), len(r)) for h, r in zip(head, row)]
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(head), sep, line(row)])


def format_report(results: dict) -> str:
    """results.txt: settings, the table, a few counts, then one line per pair."""
    m, s = results["metrics"], results["settings"]
    lines = [f"HPatches evaluation of {results['predictions']}", f"date: {results['created']}",
             f"pairs: {results['num_pairs']}", "settings:"]
    lines += [f"  {k}: {v}" for k, v in s.items()]
    lines += ["", format_table(results), ""]
    if results["tasks"]["repeatability"]:
        lines.append(f"MLE averaged over {m['mle_pairs']} pairs with repeated points")
    if results["tasks"]["homography"]:
        lines.append(f"homography AUC: corner error of the {s['homography_estimator']} estimate"
                     + (" (cv2.RANSAC, as the accuracy)" if s["homography_estimator"] == "ransac"
                        else " (least-squares DLT on all mutual-NN matches)")
                     + ", failures counted as infinite")
        lines.append(f"homography failures (counted as incorrect): {m['homography_failures']} "
                     f"of {results['num_pairs']}")
        lines.append(f"corner error over successful estimates: mean {_fmt(m['corner_error_mean'], 2)} px, "
                     f"median {_fmt(m['corner_error_median'], 2)} px")
        lines.append(f"mean mutual-NN matches {_fmt(m['mean_matches'], 1)}, "
                     f"mean RANSAC inliers {_fmt(m['mean_inliers'], 1)}")
    lines.append(f"mean points per image: {_fmt(m['mean_points'][0], 1)} / {_fmt(m['mean_points'][1], 1)}")
    lines += ["", "====== per pair ======"]
    keys = [("repeatability", "rep", 3), ("mle", "mle", 2), ("corner_error", "corner_err", 2),
            ("corner_error_dlt", "corner_err_dlt", 2),
            ("nn_ap", "nn_ap", 3), ("matching_score", "ms", 3)]
    for p in results["per_pair"]:
        cells = [p["file"]] + ([p["name"]] if p.get("name") else [])
        cells += [f"{short}={_fmt(p[k], d)}" for k, short, d in keys if k in p]
        lines.append("  ".join(cells))
    return "\n".join(lines) + "\n"


def write_results(results: dict, output_dir: str | Path, stem: str = "results",
                  report=format_report) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.txt`` (``report(results)``, by default the HPatches
    report) into ``output_dir`` atomically; returns their paths."""
    output_dir = Path(output_dir)
    json_path, txt_path = output_dir / f"{stem}.json", output_dir / f"{stem}.txt"
    atomic_write_text(json_path, json.dumps(results, indent=2, allow_nan=False) + "\n")
    atomic_write_text(txt_path, report(results))
    return json_path, txt_path
