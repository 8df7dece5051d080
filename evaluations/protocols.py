"""Evaluation settings: the ``evaluation:`` config section, the CLI switches, and what gets recorded.

Two protocols share the same inputs (docs/EVALUATION.md gives every formula):

* ``ours`` (default): metrics as defined in the paper, on the k best points of the shared region,
  with ground-truth correctness (within ``correctness_distance`` px);
* ``reference``: the definitions of the reference implementation's evaluation script, so that its
  README table can be compared like for like (RANSAC-inlier labels, fixed 240 x 320 corners, ...).
"""
from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field

import numpy as np

from utils.config import ConfigError, load_config

PROTOCOLS = ("ours", "reference")
DESCRIPTOR_METRICS = ("l2", "hamming")
HOMOGRAPHY_ESTIMATORS = ("ransac", "dlt")
EVALUATOR_VERSION = "1.0"


@dataclass(frozen=True)
class EvaluationSettings:
    protocol: str = "ours"
    top_k: int = 1000
    correctness_distance: float = 3.0
    homography_thresholds: tuple[float, ...] = (1.0, 3.0, 5.0)
    ransac_threshold: float = 3.0
    ransac_max_iters: int = 2000
    ransac_confidence: float = 0.995
    descriptor_metric: str = "l2"
    nn_thresh: float | None = None
    sift: bool = False
    reference_image_size: tuple[int, int] = (240, 320)
    reference_nn_thresh: float = 1.2
    homography_auc_thresholds: tuple[float, ...] = (1.0, 3.0, 5.0)
    homography_estimator: str = "ransac"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"evaluation.protocol: unknown protocol {self.protocol!r} (expected ours or reference)")
        if self.descriptor_metric not in DESCRIPTOR_METRICS:
            raise ConfigError(f"evaluation.descriptor_metric: unknown metric {self.descriptor_metric!r} "
                              f"(expected l2 or hamming)")
        if self.top_k < 0:
            raise ConfigError(f"evaluation.top_k: must be >= 0 (0 = all points), got {self.top_k}")
        if not self.correctness_distance > 0:
            raise ConfigError(f"evaluation.correctness_distance: must be > 0, got {self.correctness_distance}")
        if not self.homography_thresholds or any(not t > 0 for t in self.homography_thresholds):
            raise ConfigError(f"evaluation.homography_thresholds: expected a non-empty list of positive "
                              f"distances, got {list(self.homography_thresholds)}")
        if not self.ransac_threshold > 0:
            raise ConfigError(f"evaluation.ransac.threshold: must be > 0, got {self.ransac_threshold}")
        if self.ransac_max_iters < 1:
            raise ConfigError(f"evaluation.ransac.max_iters: must be >= 1, got {self.ransac_max_iters}")
        if not 0 < self.ransac_confidence < 1:
            raise ConfigError(f"evaluation.ransac.confidence: must be in (0, 1), got {self.ransac_confidence}")
        if self.nn_thresh is not None and not (isinstance(self.nn_thresh, (int, float)) and self.nn_thresh > 0):
            raise ConfigError(f"evaluation.nn_thresh: must be null or a positive number, got {self.nn_thresh!r}")
        if not self.homography_auc_thresholds or any(not t > 0 for t in self.homography_auc_thresholds):
            raise ConfigError(f"evaluation.homography_auc.thresholds: expected a non-empty list of positive "
                              f"distances, got {list(self.homography_auc_thresholds)}")
        if self.homography_estimator not in HOMOGRAPHY_ESTIMATORS:
            raise ConfigError(f"evaluation.homography_auc.estimator: expected ransac or dlt, "
                              f"got {self.homography_estimator!r}")
        if len(self.reference_image_size) != 2 or min(self.reference_image_size) < 2:
            raise ConfigError("evaluation.reference.image_size: expected [H, W], "
                              f"got {list(self.reference_image_size)}")

    @property
    def match_thresh(self) -> float | None:
        """The descriptor-distance cut of our mutual-NN matching (never with --sift)."""
        return None if self.sift else self.nn_thresh

    def record(self) -> dict:
        """Everything that defines the numbers, for results.json."""
        import cv2

        d = asdict(self)
        d.pop("extra")
        d["homography_thresholds"] = list(self.homography_thresholds)
        d["reference_image_size"] = list(self.reference_image_size)
        d["homography_auc_thresholds"] = list(self.homography_auc_thresholds)
        d["nn_thresh"] = self.match_thresh
        d["corner_image_size"] = (list(self.reference_image_size) if self.protocol == "reference"
                                  else "each pair's own image size")
        d["ransac_method"] = "cv2.RANSAC"
        d["evaluator_version"] = EVALUATOR_VERSION
        d["opencv_version"] = cv2.__version__
        d["numpy_version"] = np.__version__
        d["python_version"] = platform.python_version()
        return d


def settings_from_config(config: dict, protocol: str | None = None, top_k: int | None = None,
                         sift: bool = False) -> EvaluationSettings:
    """Settings from a loaded config's ``evaluation:`` section; CLI values (not None) win."""
    ev = config.get("evaluation", {})
    ransac = ev.get("ransac", {})
    ref = ev.get("reference", {})
    auc = ev.get("homography_auc", {})
    return EvaluationSettings(
        protocol=protocol if protocol is not None else ev.get("protocol", "ours"),
        top_k=int(top_k if top_k is not None else ev.get("top_k", 1000)),
        correctness_distance=float(ev.get("correctness_distance", 3.0)),
        homography_thresholds=tuple(float(t) for t in ev.get("homography_thresholds", (1.0, 3.0, 5.0))),
        ransac_threshold=float(ransac.get("threshold", 3.0)),
        ransac_max_iters=int(ransac.get("max_iters", 2000)),
        ransac_confidence=float(ransac.get("confidence", 0.995)),
        descriptor_metric=ev.get("descriptor_metric", "l2"),
        nn_thresh=ev.get("nn_thresh"),
        sift=bool(sift),
        reference_image_size=tuple(int(v) for v in ref.get("image_size", (240, 320))),
        reference_nn_thresh=float(ref.get("nn_thresh", 1.2)),
        homography_auc_thresholds=tuple(float(t) for t in auc.get("thresholds", (1.0, 3.0, 5.0))),
        homography_estimator=auc.get("estimator", "ransac"),
    )


def load_settings(overrides=(), protocol: str | None = None, top_k: int | None = None,
                  sift: bool = False) -> EvaluationSettings:
    """Defaults + ``--set`` overrides + CLI switches -> :class:`EvaluationSettings`."""
    return settings_from_config(load_config(None, overrides), protocol=protocol, top_k=top_k, sift=sift)
