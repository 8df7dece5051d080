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
    """The ``evaluation:`` section as typed fields; its defaults live only in configs/defaults/evaluation.yaml
    (build one with :func:`load_settings`)."""

    protocol: str
    top_k: int
    correctness_distance: float
    homography_thresholds: tuple[float, ...]
    ransac_threshold: float
    ransac_max_iters: int
    ransac_confidence: float
    descriptor_metric: str
    nn_thresh: float | None
    sift: bool
    reference_image_size: tuple[int, int]
    reference_nn_thresh: float
    homography_auc_thresholds: tuple[float, ...]
    homography_estimator: str
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
    """Settings from a loaded (defaults-merged) config's ``evaluation:`` section; CLI values (not None) win."""
    ev = config["evaluation"]
    ransac, ref, auc = ev["ransac"], ev["reference"], ev["homography_auc"]
    return EvaluationSettings(
        protocol=protocol if protocol is not None else ev["protocol"],
        top_k=int(top_k if top_k is not None else ev["top_k"]),
        correctness_distance=float(ev["correctness_distance"]),
        homography_thresholds=tuple(float(t) for t in ev["homography_thresholds"]),
        ransac_threshold=float(ransac["threshold"]),
        ransac_max_iters=int(ransac["max_iters"]),
        ransac_confidence=float(ransac["confidence"]),
        descriptor_metric=ev["descriptor_metric"],
        nn_thresh=ev["nn_thresh"],
        sift=bool(sift),
        reference_image_size=tuple(int(v) for v in ref["image_size"]),
        reference_nn_thresh=float(ref["nn_thresh"]),
        homography_auc_thresholds=tuple(float(t) for t in auc["thresholds"]),
        homography_estimator=auc["estimator"],
    )


def load_settings(overrides=(), protocol: str | None = None, top_k: int | None = None,
                  sift: bool = False) -> EvaluationSettings:
    """Defaults + ``--set`` overrides + CLI switches -> :class:`EvaluationSettings`."""
    return settings_from_config(load_config(None, overrides), protocol=protocol, top_k=top_k, sift=sift)
