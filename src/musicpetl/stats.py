"""Bootstrap confidence intervals and paired bootstrap tests over test items.

Written here: scipy.stats.bootstrap resamples one statistic of plain arrays, but our metrics take
(labels, probabilities) of whole test sets (mAP is not a mean of per-item scores) and the paired
test must reuse the same resampled items for both systems.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

Metric = Callable[[np.ndarray, np.ndarray], float]


def resample_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) item indices drawn with replacement; the same seed gives the same resamples."""
    if n == 0:
        raise ValueError("cannot bootstrap an empty test set")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _take(a, idx):
    return np.asarray(a, dtype=object)[idx] if isinstance(a, list) else np.asarray(a)[idx]


def bootstrap_ci(metric: Metric, y_true, y_pred, *, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float, float]:
    """Point estimate and percentile (1 - alpha) interval of `metric` over resampled test items."""
    point = float(metric(y_true, y_pred))
    stats = np.array([metric(_take(y_true, i), _take(y_pred, i))
                      for i in resample_indices(len(y_pred), n_boot, seed)], dtype=float)
    lo, hi = np.nanquantile(stats, [alpha / 2, 1 - alpha / 2])
    return point, float(lo), float(hi)


def bootstrap_mean_ci(scores, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """The same for a metric that is a mean of per-item scores (accuracy, key score): vectorised."""
    scores = np.asarray(scores, dtype=float)
    means = scores[resample_indices(len(scores), n_boot, seed)].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(scores.mean()), float(lo), float(hi)


def _p_value(delta: float, deltas: np.ndarray) -> float:
    # shift the bootstrap distribution to the null (delta = 0) and count resamples at least as
    # extreme as the observed delta, two-sided, with the +1 correction (never exactly 0)
    extreme = np.sum(np.abs(deltas - delta) >= abs(delta) - 1e-12)
    return float(min(1.0, (extreme + 1) / (len(deltas) + 1)))


def paired_bootstrap(metric: Metric, y_true, pred_a, pred_b, *, n_boot: int = 1000, alpha: float = 0.05,
                     seed: int = 0) -> dict:
    """delta = metric(a) - metric(b) with its interval and two-sided p-value; same items for both."""
    if len(pred_a) != len(pred_b):
        raise ValueError(f"paired test needs predictions for the same items ({len(pred_a)} vs {len(pred_b)})")
    delta = float(metric(y_true, pred_a) - metric(y_true, pred_b))
    deltas = np.array([metric(_take(y_true, i), _take(pred_a, i)) - metric(_take(y_true, i), _take(pred_b, i))
                       for i in resample_indices(len(pred_a), n_boot, seed)], dtype=float)
    deltas = deltas[np.isfinite(deltas)]
    lo, hi = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    return {"delta": delta, "low": float(lo), "high": float(hi), "p_value": _p_value(delta, deltas)}


def paired_bootstrap_scores(scores_a, scores_b, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict:
    """Paired test for mean-of-item-scores metrics, vectorised."""
    diff = np.asarray(scores_a, dtype=float) - np.asarray(scores_b, dtype=float)
    deltas = diff[resample_indices(len(diff), n_boot, seed)].mean(axis=1)
    lo, hi = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    return {"delta": float(diff.mean()), "low": float(lo), "high": float(hi), "p_value": _p_value(diff.mean(), deltas)}
