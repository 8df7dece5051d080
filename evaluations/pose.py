"""Relative pose evaluation of exported pose pairs (``evaluation.py --pose``; docs/EVALUATION.md).

Per pair (``export_pairs`` predictions, :func:`evaluations.predictions.load_pose_pair`):

1. the k best points of each image (``evaluation.top_k``) are matched by mutual nearest neighbour
   (:func:`utils.matching.mutual_nearest_neighbours`; ``evaluation.nn_thresh`` and
   ``evaluation.pose.ratio`` optional);
2. the essential matrix is estimated with OpenCV on normalised coordinates, the RANSAC threshold
   given in pixels and divided by the mean focal length of the pair, then the pose is recovered
   (the candidate with the most inliers passing the cheirality check);
3. pose error = max(angle of R_est^T R_gt, sign-free angle between t_est and t_gt), in degrees;
   fewer than 5 matches or an estimation failure is an infinite error;
4. matching precision = share of matches whose squared symmetric epipolar distance (normalised
   coordinates, ground-truth pose) is below ``evaluation.pose.epipolar_threshold``.

Over the pairs: AUC of the pose error at 5 / 10 / 20 degrees (:func:`evaluations.auc.error_auc`),
mean precision and mean number of matches.
"""
from __future__ import annotations

import datetime as _dt
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evaluations.auc import error_auc
from evaluations.descriptor import descriptor_distances
from evaluations.hpatches_report import aligned_table
from evaluations.predictions import PosePairPredictions, check_keys, list_prediction_files, load_pose_pair
from evaluations.repeatability import top_k_indices
from utils.config import ConfigError, load_config
from utils.geometry import normalize_points, rotation_angle_error, symmetric_epipolar_error, translation_angle_error
from utils.matching import mutual_nearest_neighbours

SCHEMA_VERSION = 1
ESTIMATORS = ("ransac", "magsac")
MIN_MATCHES = 5  # the five-point solver's minimum
MAX_DRAWN_MATCHES = 300


@dataclass(frozen=True)
class PoseSettings:
    """What defines the pose numbers (``evaluation.pose`` plus the matching keys of ``evaluation``)."""

    # no defaults here: they live in configs/defaults/pose.yaml and evaluation.yaml (load_pose_settings)
    thresholds: tuple[float, ...]
    estimator: str
    ransac_threshold: float
    confidence: float
    epipolar_threshold: float
    ratio: float | None
    top_k: int
    nn_thresh: float | None
    descriptor_metric: str
    sift: bool

    def __post_init__(self):
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"evaluation.pose.estimator: expected one of {', '.join(ESTIMATORS)}, "
                              f"got {self.estimator!r}")
        if not self.thresholds or any(not t > 0 for t in self.thresholds):
            raise ConfigError(f"evaluation.pose.thresholds: expected positive angles, got {list(self.thresholds)}")
        if not self.ransac_threshold > 0:
            raise ConfigError(f"evaluation.pose.ransac_threshold: must be > 0 px, got {self.ransac_threshold}")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"evaluation.pose.confidence: must be in (0, 1), got {self.confidence}")
        if not self.epipolar_threshold > 0:
            raise ConfigError(f"evaluation.pose.epipolar_threshold: must be > 0, got {self.epipolar_threshold}")
        if self.ratio is not None and not 0 < self.ratio <= 1:
            raise ConfigError(f"evaluation.pose.ratio: must be null or in (0, 1], got {self.ratio}")
        if self.top_k < 0:
            raise ConfigError(f"evaluation.top_k: must be >= 0 (0 = all points), got {self.top_k}")

    @property
    def match_thresh(self) -> float | None:
        """The descriptor-distance cut of the matching (never with --sift, as for HPatches)."""
        return None if self.sift else self.nn_thresh

    def header(self) -> str:
        """One line naming the estimator and its thresholds (printed above the table)."""
        method = {"ransac": "cv2.RANSAC", "magsac": "cv2.USAC_MAGSAC"}[self.estimator]
        match = f"mutual NN, k = {self.top_k or 'all'}"
        if self.match_thresh is not None:
            match += f", distance < {self.match_thresh:g}"
        if self.ratio is not None:
            match += f", ratio < {self.ratio:g}"
        return (f"estimator: cv2.findEssentialMat {method}, threshold {self.ransac_threshold:g} px / mean focal, "
                f"confidence {self.confidence:g}; matches: {match}; precision: symmetric epipolar "
                f"distance^2 < {self.epipolar_threshold:g} (normalised)")

    def record(self) -> dict:
        import cv2

        d = asdict(self)
        d["thresholds"] = list(self.thresholds)
        d["nn_thresh"] = self.match_thresh
        d["opencv_version"] = cv2.__version__
        d["numpy_version"] = np.__version__
        d["python_version"] = platform.python_version()
        return d


def pose_settings(config: dict, top_k: int | None = None, sift: bool = False) -> PoseSettings:
    """Settings from a loaded config (``evaluation`` section); ``top_k`` (not None) wins."""
    ev = config["evaluation"]
    p = ev["pose"]
    return PoseSettings(
        thresholds=tuple(float(t) for t in p["thresholds"]),
        estimator=p["estimator"],
        ransac_threshold=float(p["ransac_threshold"]),
        confidence=float(p["confidence"]),
        epipolar_threshold=float(p["epipolar_threshold"]),
        ratio=None if p["ratio"] is None else float(p["ratio"]),
        top_k=int(top_k if top_k is not None else ev["top_k"]),
        nn_thresh=ev["nn_thresh"],
        descriptor_metric=ev["descriptor_metric"],
        sift=bool(sift),
    )


def load_pose_settings(overrides=(), top_k: int | None = None, sift: bool = False) -> PoseSettings:
    """Defaults + ``--set`` overrides + CLI switches -> :class:`PoseSettings`."""
    return pose_settings(load_config(None, overrides), top_k=top_k, sift=sift)


# --------------------------------------------------------------------------------------------
# estimation and errors
# --------------------------------------------------------------------------------------------
@dataclass
class RelativePose:
    R: np.ndarray | None   # 3 x 3, None when the estimation failed
    t: np.ndarray | None   # 3, unit length (the scale is unknown)
    inliers: np.ndarray    # L bool

    @property
    def ok(self) -> bool:
        return self.R is not None


def estimate_relative_pose(points0: np.ndarray, points1: np.ndarray, K0: np.ndarray, K1: np.ndarray,
                           threshold: float = 1.0, confidence: float = 0.99999,
                           estimator: str = "ransac") -> RelativePose:
    """Essential matrix (OpenCV) and pose from ``L x 2`` pixel matches of calibrated images.

    The points are normalised with K0 / K1 and the pixel ``threshold`` is divided by the mean of
    the four focal lengths. OpenCV may return several essential matrices (stacked 3 x 3 blocks);
    each is decomposed by ``cv2.recoverPose`` on the RANSAC inliers and the one with the most
    points in front of both cameras is kept.
    """
    import cv2

    n = len(points0)
    failed = RelativePose(None, None, np.zeros(n, dtype=bool))
    if n < MIN_MATCHES:
        return failed
    x0, x1 = normalize_points(points0, K0), normalize_points(points1, K1)
    focal = float(np.mean([K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]]))
    method = {"ransac": cv2.RANSAC, "magsac": cv2.USAC_MAGSAC}[estimator]
    try:
        E, mask = cv2.findEssentialMat(x0, x1, np.eye(3), method=method, prob=float(confidence),
                                       threshold=float(threshold) / focal)
    except cv2.error:
        return failed
    if E is None or mask is None or E.shape[0] % 3 or E.shape[1] != 3:
        return failed
    best = None
    for E_i in np.split(E, E.shape[0] // 3):
        count, R, t, m = cv2.recoverPose(E_i, x0, x1, np.eye(3), 1e9, mask=mask.copy())
        if best is None or count > best[0]:
            best = (count, R, t.reshape(3), m.reshape(-1) > 0)
    if best is None or best[0] == 0:
        return failed
    return RelativePose(best[1].astype(np.float64), best[2].astype(np.float64), best[3])


def relative_pose_error(T_0to1: np.ndarray, R: np.ndarray | None, t: np.ndarray | None) -> tuple[float, float]:
    """(rotation error, translation direction error) in degrees; (inf, inf) for a failed estimate."""
    if R is None or t is None:
        return float("inf"), float("inf")
    T = np.asarray(T_0to1, dtype=np.float64)
    return rotation_angle_error(R, T[:3, :3]), translation_angle_error(t, T[:3, 3])


# --------------------------------------------------------------------------------------------
# one pair, a folder
# --------------------------------------------------------------------------------------------
def evaluate_pose_pair(pair: PosePairPredictions, s: PoseSettings) -> tuple[dict, dict]:
    """``(metrics, drawing)`` of one pair: JSON-ready numbers, and the matches for pictures."""
    P0, P1 = pair.points, pair.warped_points
    A0 = np.sort(top_k_indices(pair.scores, len(P0), s.top_k))
    A1 = np.sort(top_k_indices(pair.warped_scores, len(P1), s.top_k))
    D = descriptor_distances(pair.desc[A0], pair.warped_desc[A1], s.descriptor_metric)
    mm = mutual_nearest_neighbours(D, s.match_thresh, s.ratio)
    q0, q1 = P0[A0][mm.idx1], P1[A1][mm.idx2]
    epi = symmetric_epipolar_error(q0, q1, pair.K, pair.warped_K, pair.T_0to1)
    correct = epi < s.epipolar_threshold
    est = estimate_relative_pose(q0, q1, pair.K, pair.warped_K, s.ransac_threshold, s.confidence, s.estimator)
    err_R, err_t = relative_pose_error(pair.T_0to1, est.R, est.t)
    metrics = {
        "n_points": [len(P0), len(P1)],
        "n_matches": len(mm),
        "n_correct": int(correct.sum()),
        "precision": float(correct.mean()) if len(mm) else 0.0,  # SuperGlue: 0 without matches
        "n_inliers": int(est.inliers.sum()),
        "pose_ok": est.ok,
        "error_R": err_R,
        "error_t": err_t,
        "pose_error": max(err_R, err_t),
    }
    drawing = {"points0": q0, "points1": q1, "epipolar_error": epi, "inliers": est.inliers}
    return metrics, drawing


def aggregate(per_pair: list[dict], s: PoseSettings) -> dict:
    """AUC of the pose error (failures count as infinite), mean precision and matches."""
    errors = [np.inf if p["pose_error"] is None else p["pose_error"] for p in per_pair]
    auc = error_auc(errors, s.thresholds)
    n = len(per_pair)
    return {
        "pose_auc": {f"{t:g}": v for t, v in auc.items()},
        "precision": float(np.mean([p["precision"] for p in per_pair])) if n else None,
        "mean_matches": float(np.mean([p["n_matches"] for p in per_pair])) if n else None,
        "mean_inliers": float(np.mean([p["n_inliers"] for p in per_pair])) if n else None,
        "pose_failures": int(sum(not np.isfinite(e) for e in errors)),
        "median_pose_error": float(np.median(errors)) if n else None,
    }


def _save_matching_picture(pair: PosePairPredictions, drawing: dict, metrics: dict, s: PoseSettings,
                           folder: Path) -> None:
    from utils.draw import draw_matches, error_colors, put_title, save_rgb

    order = np.argsort(-drawing["epipolar_error"], kind="stable")  # worst first: good ones drawn on top
    epi = drawing["epipolar_error"][order]
    canvas = draw_matches(pair.image, pair.warped_image, drawing["points0"][order], drawing["points1"][order],
                          colors=error_colors(epi, s.epipolar_threshold), max_lines=MAX_DRAWN_MATCHES)
    err = metrics["pose_error"]
    shown = f" ({MAX_DRAWN_MATCHES} drawn)" if len(epi) > MAX_DRAWN_MATCHES else ""
    title = (f"{pair.file.name}: {len(epi)} matches{shown}, precision {metrics['precision']:.3f} "
             f"(green: epipolar error below {s.epipolar_threshold:g}, red: 2x above), pose error "
             + (f"{err:.1f} deg" if err is not None and np.isfinite(err) else "failed"))
    save_rgb(folder / f"{pair.file.stem}.png", put_title(canvas, title))


def evaluate_pose_folder(pred_dir: str | Path, s: PoseSettings, output_dir: str | Path | None = None,
                         plot_matching: bool = False, progress: bool = True, keep_drawing: bool = False) -> dict:
    """Evaluate every ``<i>.npz`` of ``pred_dir``; returns the results dict (results.json's content).

    ``plot_matching`` writes ``output_dir/results_images/matching/<i>.png``; ``keep_drawing`` adds
    the matches and their epipolar errors of each pair under ``"drawing"`` (not JSON-ready; tests).
    """
    from evaluations.hpatches_report import _jsonable, single_torch_thread

    pred_dir = Path(pred_dir)
    files = list_prediction_files(pred_dir)
    for f in files:  # missing keys fail before any work is done
        check_keys(f, need_descriptors=True, pose=True)
    image_dir = None
    if plot_matching:
        if output_dir is None:
            raise ValueError("evaluate_pose_folder: output_dir is needed to write pictures")
        image_dir = Path(output_dir) / "results_images"
    per_pair, drawings = [], []
    with single_torch_thread():
        for f in tqdm(files, desc="evaluating pose pairs", unit="pair", disable=not progress, file=sys.stderr):
            pair = load_pose_pair(f)
            metrics, drawing = evaluate_pose_pair(pair, s)
            record = {"file": f.name, "name": pair.name, **_jsonable(metrics)}
            per_pair.append(record)
            if keep_drawing:
                drawings.append(drawing)
            if image_dir is not None:
                _save_matching_picture(pair, drawing, record, s, image_dir / "matching")
    results = {
        "schema_version": SCHEMA_VERSION,
        "kind": "relative_pose",
        "predictions": str(pred_dir.resolve()),
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "num_pairs": len(per_pair),
        "settings": s.record(),
        "metrics": aggregate(per_pair, s),
        "images": str(image_dir.resolve()) if image_dir is not None else None,
        "per_pair": per_pair,
    }
    if keep_drawing:
        results["drawing"] = drawings
    return results


# --------------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------------
def _fmt(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_pose_table(results: dict) -> str:
    """The results as a markdown table, in the style of the HPatches table."""
    m, s = results["metrics"], results["settings"]
    head = ["Pairs", "k"] + [f"AUC@{t}" for t in m["pose_auc"]] + ["Precision", "Matches"]
    row = [str(results["num_pairs"]), str(s["top_k"] or "all")]
    row += [_fmt(v) for v in m["pose_auc"].values()] + [_fmt(m["precision"]), _fmt(m["mean_matches"], 1)]
    return aligned_table(head, row)


def format_pose_report(results: dict) -> str:
    """results.txt: header, settings, the table, counts, then one line per pair."""
    m, s = results["metrics"], results["settings"]
    lines = [f"Relative pose evaluation of {results['predictions']}", f"date: {results['created']}",
             f"pairs: {results['num_pairs']}", PoseSettings(**_settings_fields(s)).header(), "settings:"]
    lines += [f"  {k}: {v}" for k, v in s.items()]
    lines += ["", format_pose_table(results), "",
              f"pose failures (infinite error): {m['pose_failures']} of {results['num_pairs']}",
              f"median pose error: {_fmt(m['median_pose_error'], 2)} deg",
              f"mean mutual-NN matches {_fmt(m['mean_matches'], 1)}, "
              f"mean inliers of the recovered pose (RANSAC + cheirality) {_fmt(m['mean_inliers'], 1)}",
              "", "====== per pair ======"]
    for p in results["per_pair"]:
        lines.append(f"{p['file']}  {p['name'] or ''}  err_R={_fmt(p['error_R'], 2)}  err_t={_fmt(p['error_t'], 2)}  "
                     f"precision={_fmt(p['precision'])}  matches={p['n_matches']}  inliers={p['n_inliers']}")
    return "\n".join(lines) + "\n"


def _settings_fields(record: dict) -> dict:
    fields = PoseSettings.__dataclass_fields__
    out = {k: v for k, v in record.items() if k in fields}
    out["thresholds"] = tuple(out["thresholds"])
    return out
