"""Statistics that make numbers decidable: bootstrap confidence intervals, McNemar's exact test,
the paired bootstrap, and the mean/std over seeds. Pure functions over arrays and dicts."""

from __future__ import annotations

import math
import statistics
from typing import Callable

import numpy as np

ALPHA = 0.05
DEFAULT_RESAMPLES = 1000


def item_mean(rows: np.ndarray) -> float:
    """The metric of per-item scores: their mean (the first column)."""
    return float(rows[:, 0].mean())


def bootstrap_ci(rows: np.ndarray, reduce: Callable[[np.ndarray], float] = item_mean, *,
                 resamples: int = DEFAULT_RESAMPLES, seed: int = 0, alpha: float = ALPHA) -> list[float] | None:
    """Percentile bootstrap interval of `reduce(rows)`: resample the test items (rows) with
    replacement `resamples` times; (alpha/2, 1-alpha/2) quantiles of the recomputed metric.
    None when there are fewer than two items or no resamples."""
    rows = np.asarray(rows)
    if rows.ndim == 1:
        rows = rows.reshape(-1, 1)
    n = len(rows)
    if n < 2 or resamples <= 0:
        return None
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, n, size=(resamples, n))
    if reduce is item_mean:
        values = rows[:, 0][indices].mean(1)  # vectorised: the common case
    else:
        values = np.array([reduce(rows[i]) for i in indices], dtype=float)
    values = values[~np.isnan(values)]
    if not len(values):
        return None
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return [round(float(low), 6), round(float(high), 6)]


def mcnemar_exact(a_correct, b_correct) -> dict:
    """McNemar's exact test on paired correctness: only the discordant items count; under the
    null each is equally likely to favour a or b, so b_only ~ Binomial(discordant, 1/2)."""
    from scipy.stats import binomtest

    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError("McNemar needs the same items for both arms")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    discordant = a_only + b_only
    p = 1.0 if discordant == 0 else float(binomtest(a_only, discordant, 0.5, alternative="two-sided").pvalue)
    return {"a_only": a_only, "b_only": b_only, "p_value": min(p, 1.0)}


def paired_bootstrap(a_rows, b_rows, reduce: Callable[[np.ndarray], float] = item_mean, *,
                     resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """Two-sided paired bootstrap of metric(a) - metric(b) on the same items.

    Both arms are resampled with the SAME item indices; the p-value is the share of resampled
    differences at least as far from the observed one as the observed is from 0 (the bootstrap
    distribution shifted to the null), with the +1 correction so it is never exactly 0."""
    a, b = np.asarray(a_rows, dtype=float), np.asarray(b_rows, dtype=float)
    if a.ndim == 1:
        a, b = a.reshape(-1, 1), b.reshape(-1, 1)
    if len(a) != len(b):
        raise ValueError("the paired bootstrap needs the same items for both arms")
    observed = reduce(a) - reduce(b)
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, len(a), size=(resamples, len(a)))
    if reduce is item_mean:
        deltas = a[:, 0][indices].mean(1) - b[:, 0][indices].mean(1)
    else:
        deltas = np.array([reduce(a[i]) - reduce(b[i]) for i in indices])
    extreme = int((np.abs(deltas - observed) >= abs(observed) - 1e-12).sum())
    p = (extreme + 1) / (resamples + 1)
    ci = np.quantile(deltas, [ALPHA / 2, 1 - ALPHA / 2])
    return {"difference": float(observed), "p_value": min(float(p), 1.0), "ci": [float(ci[0]), float(ci[1])]}


def seed_summary(groups: dict[str, list[tuple[int, dict]]], metric_names: list[str]) -> list[dict]:
    """{arm: [(seed, metrics), ...]} -> mean, sample std (0 for one seed) and every seed's value."""
    summary = []
    for name, runs in groups.items():
        entry = {"arm": name, "seeds": [seed for seed, _ in runs], "metrics": {}}
        for metric in metric_names:
            values = [m.get(metric) for _, m in runs]
            if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values) or not values:
                continue
            entry["metrics"][metric] = {
                "mean": round(statistics.fmean(values), 6),
                "std": round(statistics.stdev(values), 6) if len(values) > 1 else 0.0,
                "values": values,
            }
        summary.append(entry)
    return summary


def compare(metric: str, test: str, a_name: str, a_rows, b_name: str, b_rows, *, higher_is_better: bool,
            resamples: int = DEFAULT_RESAMPLES, seed: int = 0, alpha: float = ALPHA) -> dict:
    """One pairwise comparison in the shape results.json and the report use."""
    a_rows, b_rows = np.asarray(a_rows, dtype=float), np.asarray(b_rows, dtype=float)
    if test == "mcnemar":
        outcome = mcnemar_exact(a_rows.reshape(-1) > 0.5, b_rows.reshape(-1) > 0.5)
        difference = float(a_rows.mean() - b_rows.mean())
        p = outcome["p_value"]
    elif test == "paired_bootstrap":
        outcome = paired_bootstrap(a_rows, b_rows, resamples=resamples, seed=seed)
        difference, p = outcome["difference"], outcome["p_value"]
    else:
        raise ValueError(f"unknown paired test '{test}'")
    better = None
    if p < alpha and difference != 0:
        better = a_name if (difference > 0) == higher_is_better else b_name
    return {"metric": metric, "a": a_name, "b": b_name, "difference": round(difference, 6),
            "p_value": round(p, 6), "significant": bool(p < alpha), "test": test, "n": int(len(a_rows)),
            "better": better}
