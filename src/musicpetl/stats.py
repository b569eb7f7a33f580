"""Confidence intervals and paired tests over test items that stay honest at small n.

- A proportion (a share of items scored right or wrong: accuracy, tempo Accuracy 1 and 2) gets the
  Wilson score interval (`wilson_interval`), valid at every n >= 1.
- Every other metric gets a BCa bootstrap interval from `scipy.stats.bootstrap`, resampling item
  *indices*: `bootstrap((np.arange(n),), lambda i: metric(labels[i], probs[i]), method="BCa")`.
  One index resample feeds both labels and predictions, so whole-set metrics (macro mAP, which is
  not a mean of per-item scores) and paired differences of two systems on the same items
  (`metric(a[i]) - metric(b[i])`) need nothing of our own.
- Below `MIN_ITEMS` test items no bootstrap interval is given at all: with n items there are at most
  C(2n-1, n) distinct resamples (35 at n = 4), BCa's bias and acceleration terms come from n
  jack-knife values, and the percentile interval that used to be printed collapsed to [0, 0].
- BCa is undefined on degenerate data (every resample gives the same value, or the observed value
  lies outside the resampled ones). That is reported, never raised: the point estimate with a
  zero-width interval flagged as degenerate, or a percentile interval flagged as the fallback.

One fast path, kept because bench/bootstrap.py shows the need (BENCHMARKS.md): macro mAP and
ROC-AUC of many resamples at once (`macro_ap_auc_weighted`, equal to scikit-learn's to 1e-12). The
generic path calls scikit-learn once per resample and once per jack-knife sample, n + n_boot calls:
4.5 minutes per metric at 1,000 items and 50 tags, about an hour at MTAT's 5,329 test items; the
vectorised one takes 2 s for both metrics at 1,000 items. Means of per-item scores (key) need no
fast path (0.07 s at 1,000 items through the generic call per resample).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats as _scipy_stats

from musicpetl.errors import InputError

Metric = Callable[[np.ndarray, np.ndarray], float]

MIN_ITEMS = 10
"""Fewest test items for a bootstrap interval (and a paired test); below it none is given."""

_BATCH_ELEMENTS = 4_000_000  # resampled item indices held at once (~32 MB)


@dataclass(frozen=True)
class Interval:
    """A point estimate over `n` items, its interval (None where none is honest) and how it was made."""
    point: float
    low: float | None
    high: float | None
    n: int
    note: str
    degenerate: bool = False

    def as_tuple(self) -> tuple[float, float, float]:
        """(point, low, high) with NaN for a missing bound (the old tuple API)."""
        nan = float("nan")
        return self.point, nan if self.low is None else self.low, nan if self.high is None else self.high


def too_few(n: int) -> str:
    return f"none: {n} items < {MIN_ITEMS}, too few for a bootstrap interval"


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> Interval:
    """Wilson score interval of a proportion `successes / n`.

    Chosen over the exact Clopper-Pearson interval: Clopper-Pearson guarantees at least the nominal
    coverage by being conservative (at n = 36 it is about 10 % wider), so comparing methods with it
    hides real differences; Wilson's coverage stays close to nominal on average down to a handful of
    items (Brown, Cai & DasGupta 2001 recommend it for small n) and, unlike the bootstrap or the
    Wald interval, it never collapses at 0 or n successes: 0 of 4 gives [0, 0.49], not [0, 0].
    """
    if n <= 0:
        raise InputError("cannot compute an interval over 0 items")
    if not 0 <= successes <= n or int(successes) != successes:
        raise InputError(f"successes must be an integer in 0..{n}, got {successes!r}")
    ci = _scipy_stats.binomtest(int(successes), n).proportion_ci(confidence_level=1 - alpha, method="wilson")
    return Interval(successes / n, float(ci.low), float(ci.high), n, f"Wilson {100 * (1 - alpha):g}%")


def _bootstrap(statistic, n: int, *, n_boot: int, alpha: float, seed: int, vectorized: bool):
    """scipy's BCa bootstrap over item indices; warnings about degenerate data are caught, not shown."""
    batch = max(1, _BATCH_ELEMENTS // n)  # bounds memory: scipy's jack-knife alone is n x (n - 1) indices
    with warnings.catch_warnings():
        # DegenerateDataWarning and 0/0 RuntimeWarnings: handled by the caller from the result
        warnings.simplefilter("ignore")
        return _scipy_stats.bootstrap((np.arange(n),), statistic, n_resamples=n_boot, batch=batch,
                                      vectorized=vectorized, method="BCa", confidence_level=1 - alpha,
                                      rng=np.random.default_rng(seed))


def _interval(point: float, low: float, high: float, dist: np.ndarray, n: int, alpha: float, n_boot: int) -> Interval:
    conf = f"{100 * (1 - alpha):g}%"
    if not np.isfinite(point):
        return Interval(point, None, None, n, "none: the metric is undefined on these items")
    finite = dist[np.isfinite(dist)]
    if finite.size == 0 or np.ptp(finite) == 0:  # scipy may still return a finite, zero-width BCa interval
        value = point if finite.size == 0 else float(finite[0])
        return Interval(point, point, point, n, f"degenerate: every resample gives {value:.3f}", degenerate=True)
    if np.isfinite(low) and np.isfinite(high):
        return Interval(point, float(low), float(high), n, f"BCa {conf}, {n_boot} resamples")
    lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return Interval(point, float(lo), float(hi), n, f"percentile {conf} (BCa undefined on these items)")


def bootstrap_intervals(statistic: Callable, n: int, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0,
                        vectorized: bool = False) -> tuple[list[Interval], np.ndarray | None]:
    """BCa intervals of `statistic(item_indices)` (a float or a vector of k metrics) over `n` items.

    Returns one Interval per output and the bootstrap distribution, shape (k, n_boot), None when
    n < MIN_ITEMS (then every Interval says so and has no bounds). A vectorised statistic takes
    `(idx, axis=-1)`, idx of shape (..., m), and returns shape (k, ...) (scipy's convention).
    """
    if n <= 0:
        raise InputError("cannot bootstrap an empty test set")
    full = np.arange(n)
    point = np.atleast_1d(np.asarray(statistic(full, axis=-1) if vectorized else statistic(full),
                                     dtype=float)).reshape(-1)
    if n < MIN_ITEMS:
        return [Interval(float(p), None, None, n, too_few(n)) for p in point], None
    res = _bootstrap(statistic, n, n_boot=n_boot, alpha=alpha, seed=seed, vectorized=vectorized)
    low = np.atleast_1d(res.confidence_interval.low).reshape(-1)
    high = np.atleast_1d(res.confidence_interval.high).reshape(-1)
    dist = np.asarray(res.bootstrap_distribution, dtype=float).reshape(len(point), -1)
    return [_interval(float(p), lo, hi, d, n, alpha, n_boot) for p, lo, hi, d in zip(point, low, high, dist)], dist


def _take(a, idx):
    return np.asarray(a, dtype=object)[idx] if isinstance(a, list) else np.asarray(a)[idx]


def metric_interval(metric: Metric, y_true, y_pred, *, n_boot: int = 1000, alpha: float = 0.05,
                    seed: int = 0) -> Interval:
    """BCa interval of any whole-set `metric(labels, predictions)` over resampled items."""
    if len(y_true) != len(y_pred):
        raise InputError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    (iv,), _ = bootstrap_intervals(lambda i: metric(_take(y_true, i), _take(y_pred, i)), len(y_pred),
                                   n_boot=n_boot, alpha=alpha, seed=seed)
    return iv


def mean_interval(scores, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> Interval:
    """BCa interval of a metric that is the mean of per-item scores (key weighted score)."""
    scores = np.asarray(scores, dtype=float)
    (iv,), _ = bootstrap_intervals(lambda i: scores[i].mean(), len(scores), n_boot=n_boot, alpha=alpha, seed=seed)
    return iv


def bootstrap_ci(metric: Metric, y_true, y_pred, *, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float, float]:
    """(point, low, high) of `metric_interval`; low and high are NaN where no interval is given."""
    return metric_interval(metric, y_true, y_pred, n_boot=n_boot, alpha=alpha, seed=seed).as_tuple()


def bootstrap_mean_ci(scores, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """(point, low, high) of `mean_interval`; low and high are NaN where no interval is given."""
    return mean_interval(scores, n_boot=n_boot, alpha=alpha, seed=seed).as_tuple()


def _p_value(delta: float, deltas: np.ndarray) -> float:
    # shift the bootstrap distribution to the null (delta = 0) and count resamples at least as
    # extreme as the observed delta, two-sided, with the +1 correction (never exactly 0)
    deltas = deltas[np.isfinite(deltas)]
    if deltas.size == 0:
        return float("nan")
    extreme = np.sum(np.abs(deltas - delta) >= abs(delta) - 1e-12)
    return float(min(1.0, (extreme + 1) / (len(deltas) + 1)))


def _paired(statistic, n: int, *, n_boot: int, alpha: float, seed: int, vectorized: bool = False) -> dict:
    """{delta, low, high, p_value, n, note}; low/high/p_value NaN below MIN_ITEMS."""
    (iv,), dist = bootstrap_intervals(statistic, n, n_boot=n_boot, alpha=alpha, seed=seed, vectorized=vectorized)
    delta, low, high = iv.as_tuple()
    p = float("nan") if dist is None or not np.isfinite(delta) else _p_value(delta, dist[0])
    return {"delta": delta, "low": low, "high": high, "p_value": p, "n": n, "note": iv.note}


def paired_bootstrap(metric: Metric, y_true, pred_a, pred_b, *, n_boot: int = 1000, alpha: float = 0.05,
                     seed: int = 0) -> dict:
    """delta = metric(a) - metric(b), its BCa interval and two-sided p-value; same items for both.

    Keys: delta, low, high, p_value (NaN for low/high/p_value below MIN_ITEMS items), n, note.
    """
    if len(pred_a) != len(pred_b):
        raise InputError(f"paired test needs predictions for the same items ({len(pred_a)} vs {len(pred_b)})")
    if len(y_true) != len(pred_a):
        raise InputError(f"{len(y_true)} labels but {len(pred_a)} predictions")

    def diff(i):
        y = _take(y_true, i)
        return metric(y, _take(pred_a, i)) - metric(y, _take(pred_b, i))

    return _paired(diff, len(pred_a), n_boot=n_boot, alpha=alpha, seed=seed)


def paired_bootstrap_scores(scores_a, scores_b, *, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict:
    """The paired test for mean-of-item-scores metrics (same keys as `paired_bootstrap`)."""
    if len(scores_a) != len(scores_b):
        raise InputError(f"paired test needs scores for the same items ({len(scores_a)} vs {len(scores_b)})")
    diff = np.asarray(scores_a, dtype=float) - np.asarray(scores_b, dtype=float)
    return _paired(lambda i: diff[i].mean(), len(diff), n_boot=n_boot, alpha=alpha, seed=seed)


def paired_bootstrap_vectorized(statistic_a: Callable, statistic_b: Callable, n: int, *, n_boot: int = 1000,
                                alpha: float = 0.05, seed: int = 0) -> dict:
    """The paired test of two vectorised statistics (`statistic(idx, axis=-1)`, a float per resample,
    as `tagging_statistic(...)` picked to one metric) on the same resampled items; keys as
    `paired_bootstrap`."""
    return _paired(lambda idx, axis=-1: statistic_a(idx, axis=axis) - statistic_b(idx, axis=axis), n,
                   n_boot=n_boot, alpha=alpha, seed=seed, vectorized=True)


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(batch, m) item indices -> (batch, n) how often each item was drawn."""
    idx = np.asarray(idx, dtype=np.int64).reshape(-1, np.shape(idx)[-1])
    rows = idx.shape[0]
    flat = (idx + n * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


def macro_ap_auc_weighted(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro average precision and ROC-AUC of many item weightings at once: shape (2, batch).

    `weights` (batch, n) are integer draw counts of a resample; the result equals scikit-learn's
    average_precision_score / roc_auc_score (average="macro") on the resampled rows, over the tags
    that have both positives and negatives in that resample (as TaggingTask.metrics); NaN where none.
    Ties follow scikit-learn: one threshold per distinct score. Per tag, with items sorted by
    descending score and grouped by equal score, only the groups holding positives contribute:
    AP = sum_g dTP_g / P * TP_g / (TP_g + FP_g); ROC-AUC = sum_g dTP_g * (negatives below g + half
    the negatives tied in g) / (P N) (Mann-Whitney, equal to the trapezoid over the ROC curve).
    """
    y = np.asarray(y, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    batch = len(weights)
    ap_sum, auc_sum, used = np.zeros(batch), np.zeros(batch), np.zeros(batch)
    for t in range(y.shape[1]):
        order = np.argsort(scores[:, t], kind="mergesort")[::-1]  # descending, as scikit-learn
        s, pos = scores[order, t], y[order, t]
        if not pos.any() or pos.all():
            continue  # no resample has both classes of this tag
        first = np.r_[True, s[1:] != s[:-1]]  # first item of each distinct score
        group = np.cumsum(first) - 1
        starts = np.flatnonzero(first)
        ends = np.r_[starts[1:], len(s)]  # one past the last item of each group
        w = weights[:, order]
        cum = np.zeros((batch, len(s) + 1))
        np.cumsum(w, axis=1, out=cum[:, 1:])  # cum[:, k]: weight of the first k items
        p_idx = np.flatnonzero(pos)
        cum_pos = np.cumsum(w[:, p_idx], axis=1)  # positive weight up to each positive item
        g = group[p_idx]
        last = np.r_[g[1:] != g[:-1], True]  # the last positive item of each group holding one
        g = g[last]
        tps = cum_pos[:, last]  # positives up to the end of each such group
        tps_before = np.concatenate([np.zeros((batch, 1)), tps[:, :-1]], axis=1)
        total = cum[:, ends[g]]
        fps = total - tps
        fps_before = cum[:, starts[g]] - tps_before
        d_tps = tps - tps_before
        n_pos, n_neg = tps[:, -1], cum[:, -1] - tps[:, -1]
        ok = (n_pos > 0) & (n_neg > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ap = (d_tps * np.divide(tps, total, out=np.zeros_like(tps), where=total > 0)).sum(axis=1) / n_pos
            below = n_neg[:, None] - fps_before - 0.5 * (fps - fps_before)
            auc = (d_tps * below).sum(axis=1) / (n_pos * n_neg)
        ap_sum += np.where(ok, ap, 0.0)
        auc_sum += np.where(ok, auc, 0.0)
        used += ok
    with np.errstate(invalid="ignore"):
        return np.stack([ap_sum / used, auc_sum / used])  # 0/0 -> NaN: no tag scorable


TAGGING_METRICS = ("mAP", "ROC-AUC")  # what tagging_statistic computes, in its order


def tagging_statistic(y: np.ndarray, scores: np.ndarray, metric: str | None = None) -> Callable:
    """A vectorised `statistic(idx, axis=-1)` -> (2, batch) [macro mAP, macro ROC-AUC] for
    `bootstrap_intervals(..., vectorized=True)`; with `metric` ("mAP" or "ROC-AUC") that one only,
    shape (batch,)."""
    y, scores = np.asarray(y), np.asarray(scores)
    pick = None if metric is None else TAGGING_METRICS.index(metric)

    def statistic(idx, axis=-1):
        idx = np.moveaxis(np.asarray(idx), axis, -1)
        out = macro_ap_auc_weighted(y, scores, _counts(idx, len(y)))
        out = out.reshape((2,) + idx.shape[:-1])  # (2,) for one sample, (2, batch) for a batch
        return out if pick is None else out[pick]

    return statistic
