"""Area under the cumulative error curve, as SuperGlue, LoFTR and glue-factory report it.

Used for the relative pose error (degrees, :mod:`evaluations.pose`) and the homography corner
error (pixels, :mod:`evaluations.hpatches_report`); the definition is in docs/EVALUATION.md.
"""
from __future__ import annotations

import numpy as np


def error_auc(errors, thresholds) -> dict[float, float]:
    """Normalised area under the recall-vs-error curve up to each threshold.

    With the n errors sorted, e_0 = 0 <= e_1 <= ... <= e_n and recall r_i = i / n, the curve is
    the polyline through (e_i, r_i), cut at t (held flat from the last e_i < t to t); the AUC is
    its trapezoidal area divided by t, in [0, 1]. A failed estimate is an infinite (or NaN) error:
    it counts in n but never enters the area. Returns ``{t: auc}`` (NaN when there is no error).
    """
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    e = np.sort(np.where(np.isnan(e), np.inf, e))
    n = len(e)
    out: dict[float, float] = {}
    for t in thresholds:
        t = float(t)
        if n == 0:
            out[t] = float("nan")
            continue
        x = np.r_[0.0, e]
        r = np.arange(n + 1) / n
        last = int(np.searchsorted(x, t))  # points with error < t (plus the origin)
        xs = np.r_[x[:last], t]
        rs = np.r_[r[:last], r[last - 1]]
        out[t] = float(np.sum(np.diff(xs) * (rs[1:] + rs[:-1]) / 2.0) / t)
    return out
