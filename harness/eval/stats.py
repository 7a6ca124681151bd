"""Statistics that make numbers decidable: bootstrap confidence intervals, McNemar's exact test,
the paired bootstrap (flat over items, or hierarchical over seeds and items), corrections for
many comparisons, the minimum detectable difference, and the mean/std over seeds. Pure functions
over arrays and dicts."""

from __future__ import annotations

import math
import statistics
from typing import Callable

import numpy as np

ALPHA = 0.05
DEFAULT_RESAMPLES = 1000
POWER = 0.8
CORRECTIONS = ("holm", "bh", "none")
DEFAULT_CORRECTION = "holm"
# Below this many resampled differences as extreme as the observed one, the bootstrap's own
# p-value is at its resolution floor, 1/(resamples+1): 1000 resamples can never give less than
# 0.001, which Holm multiplies by the family size (78 pairs: 0.078), so no bootstrap-tested pair
# could ever be significant after correction. There the tail is read from the normal
# approximation with the bootstrap's standard error instead (the bootstrap Wald test; Efron &
# Tibshirani 1993, An Introduction to the Bootstrap, ch. 16).
TAIL_RESOLUTION = 10


def item_mean(rows: np.ndarray) -> float:
    """The metric of per-item scores: their mean (the first column)."""
    return float(rows[:, 0].mean())


def bootstrap_ci(
    rows: np.ndarray,
    reduce: Callable[[np.ndarray], float] = item_mean,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    alpha: float = ALPHA,
) -> list[float] | None:
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
    from scipy.stats import binom

    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError("McNemar needs the same items for both arms")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    discordant = a_only + b_only
    # Binomial(d, 1/2) is symmetric, so the two-sided exact p (scipy's binomtest) is twice the
    # smaller tail; computed directly, it is ~50x cheaper, which matters for 78 pairs x metrics.
    p = 1.0 if discordant == 0 else float(2 * binom.cdf(min(a_only, b_only), discordant, 0.5))
    return {"a_only": a_only, "b_only": b_only, "p_value": min(p, 1.0)}


def paired_bootstrap(
    a_rows,
    b_rows,
    reduce: Callable[[np.ndarray], float] = item_mean,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict:
    """Two-sided paired bootstrap of metric(a) - metric(b) on the same items.

    Both arms are resampled with the SAME item indices, and the metric is recomputed from the
    resampled rows by `reduce`, so a corpus metric (macro-F1, BLEU, entity F1) is recomputed on
    every resample, not averaged per item. The p-value is the share of resampled differences at
    least as far from the observed one as the observed is from 0 (the bootstrap distribution
    shifted to the null), with the +1 correction so it is never exactly 0; where fewer than
    TAIL_RESOLUTION resampled differences are that far, the normal tail at the bootstrap's
    standard error (`p_method` says which)."""
    return seed_bootstrap([a_rows], [b_rows], reduce, resamples=resamples, seed=seed)


def seed_bootstrap(
    a_by_seed: list,
    b_by_seed: list,
    reduce: Callable[[np.ndarray], float] = item_mean,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict:
    """Two-sided paired bootstrap of the difference of two arms that each ran under the same
    seeds, on the same items: the statistic is the mean over seeds of metric(a_s) - metric(b_s).

    Two-stage (hierarchical) resampling, as for clustered data (Davison & Hinkley 1997,
    Bootstrap Methods and their Application, section 3.8): draw the seeds with replacement, then,
    within each drawn seed, the items with replacement, the same item indices for both arms. The
    spread of the result so carries both sources of variation: which seeds were run and which
    items were tested, and a difference that changes sign from seed to seed is not significant
    however many items each seed has. With one seed this is the ordinary paired bootstrap.
    p-value and interval as in `paired_bootstrap`; `se` is the standard deviation of the
    resampled differences (the standard error used for the minimum detectable difference)."""
    a_list = [_as_rows(a) for a in a_by_seed]
    b_list = [_as_rows(b) for b in b_by_seed]
    if not a_list or len(a_list) != len(b_list) or any(len(a) != len(b) for a, b in zip(a_list, b_list)):
        raise ValueError("the paired bootstrap needs the same seeds and items for both arms")
    if resamples <= 0:
        raise ValueError("the paired bootstrap needs at least one resample")
    n_seeds = len(a_list)
    observed = float(np.mean([reduce(a) - reduce(b) for a, b in zip(a_list, b_list)]))
    rng = np.random.default_rng(seed)
    sizes = {len(a) for a in a_list}
    if reduce is item_mean and len(sizes) == 1:  # vectorised: per-item scores, as many items per seed
        n = sizes.pop()
        diffs = np.stack([a[:, 0] - b[:, 0] for a, b in zip(a_list, b_list)])  # seeds x items
        if n_seeds == 1:
            deltas = diffs[0][rng.integers(0, n, size=(resamples, n))].mean(1)
        else:
            drawn = rng.integers(0, n_seeds, size=(resamples, n_seeds))
            items = rng.integers(0, n, size=(resamples, n_seeds, n))
            deltas = diffs[drawn[..., None], items].mean(axis=(1, 2))
    else:
        deltas = np.empty(resamples)
        for r in range(resamples):
            drawn = rng.integers(0, n_seeds, size=n_seeds) if n_seeds > 1 else [0]
            values = []
            for s in drawn:
                idx = rng.integers(0, len(a_list[s]), size=len(a_list[s]))
                values.append(reduce(a_list[s][idx]) - reduce(b_list[s][idx]))
            deltas[r] = np.mean(values)
    deltas = deltas[~np.isnan(deltas)]
    if not len(deltas) or np.isnan(observed):
        return {"difference": observed, "p_value": 1.0, "ci": None, "se": None}
    extreme = int((np.abs(deltas - observed) >= abs(observed) - 1e-12).sum())
    ci = np.quantile(deltas, [ALPHA / 2, 1 - ALPHA / 2])
    se = float(deltas.std(ddof=1)) if len(deltas) > 1 else 0.0
    if extreme >= TAIL_RESOLUTION or se == 0.0:
        p, p_method = (extreme + 1) / (len(deltas) + 1), "bootstrap"
    else:  # beyond the resampling's resolution: the normal tail at the bootstrap's standard error
        from scipy.stats import norm

        p, p_method = float(2 * norm.sf(abs(observed) / se)), "bootstrap normal tail"
    return {
        "difference": observed,
        "p_value": min(float(p), 1.0),
        "p_method": p_method,
        "ci": [float(ci[0]), float(ci[1])],
        "se": se,
    }


def _as_rows(rows) -> np.ndarray:
    rows = np.asarray(rows)  # keep integer tables integer: confusion rows index a matrix
    return rows.reshape(-1, 1) if rows.ndim == 1 else rows


# ------------------------------------------------------------------ many comparisons


def adjust_p_values(p_values, method: str = DEFAULT_CORRECTION) -> list[float]:
    """Adjusted p-values of one family of tests (compare each with alpha).

    holm: Holm's step-down procedure, which bounds the family-wise error rate (the chance of
    any false "A beats B" in the family) at alpha under any dependence between the tests;
    bh: Benjamini-Hochberg, which bounds the expected share of false discoveries among the
    significant ones (scipy.stats.false_discovery_control); none: the raw p-values."""
    p = np.asarray(p_values, dtype=float)
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction '{method}' (one of {', '.join(CORRECTIONS)})")
    if method == "none" or p.size == 0:
        return [float(x) for x in p]
    if method == "bh":
        from scipy.stats import false_discovery_control

        return [float(x) for x in false_discovery_control(p, method="bh")]
    # Holm (scipy has no Holm; statsmodels' multipletests runs gc.collect() on every call, 0.3 s
    # each in a loaded process): the i-th smallest p times (m - i), then a running maximum.
    order = np.argsort(p, kind="stable")
    steps = np.maximum.accumulate(p[order] * (p.size - np.arange(p.size)))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(steps, 1.0)
    return [float(x) for x in adjusted]


# ------------------------------------------------------------------ sensitivity


def z_sum(alpha: float = ALPHA, power: float = POWER) -> float:
    """z_{1-alpha/2} + z_{power}: the detectable difference in standard errors."""
    from scipy.stats import norm

    return float(norm.ppf(1 - alpha / 2) + norm.ppf(power))


def minimum_detectable_difference(se: float, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true difference that a two-sided test at level `alpha` detects with
    probability `power`, when the observed difference has standard error `se` (normal
    approximation: (z_{1-alpha/2} + z_{power}) * se)."""
    return z_sum(alpha, power) * float(se)


def discordant_se(discordant_rate: float, n: int) -> float:
    """Standard error of the difference of two paired proportions (accuracy) under the null of
    McNemar's test: sqrt(psi / n), psi the share of items on which the two arms disagree
    (Connor 1987, Biometrics 43:207; the null variance, so slightly conservative)."""
    return math.sqrt(discordant_rate / n) if n > 0 else float("inf")


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


def compare(
    metric: str,
    test: str,
    a_name: str,
    a_rows,
    b_name: str,
    b_rows,
    *,
    higher_is_better: bool,
    reduce: Callable[[np.ndarray], float] = item_mean,
    seeds: list | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    alpha: float = ALPHA,
) -> dict:
    """One pairwise comparison in the shape results.json and the report use.

    test: "mcnemar" (paired correctness), "paired_bootstrap" (`reduce` recomputes the metric
    on each resample of items), or "seed_bootstrap": a_rows and b_rows are then lists with one
    table per seed (in the order of `seeds`), compared by `seed_bootstrap`. `significant` and
    `better` here are for this test alone; `correct_family` replaces them by the corrected ones."""
    extra: dict = {}
    if test == "seed_bootstrap":
        outcome = seed_bootstrap(a_rows, b_rows, reduce, resamples=resamples, seed=seed)
        n = int(len(_as_rows(a_rows[0])))
        extra["seeds"] = list(seeds or range(len(a_rows)))
    else:
        a_rows, b_rows = _as_rows(a_rows), _as_rows(b_rows)
        n = int(len(a_rows))
    if test == "mcnemar":
        outcome = mcnemar_exact(a_rows.reshape(-1) > 0.5, b_rows.reshape(-1) > 0.5)
        outcome["difference"] = float(a_rows.mean() - b_rows.mean())
        discordant = outcome["a_only"] + outcome["b_only"]
        extra.update(discordant=discordant, se=round(discordant_se(discordant / n, n), 6))
    elif test == "paired_bootstrap":
        outcome = paired_bootstrap(a_rows, b_rows, reduce, resamples=resamples, seed=seed)
    elif test != "seed_bootstrap":
        raise ValueError(f"unknown paired test '{test}'")
    if test != "mcnemar":
        extra["se"] = None if outcome["se"] is None else round(outcome["se"], 6)
        if outcome.get("p_method"):
            extra["p_method"] = outcome["p_method"]
        if outcome["ci"] is not None:
            extra["ci"] = [round(v, 6) for v in outcome["ci"]]
    difference, p = outcome["difference"], outcome["p_value"]
    ahead = None
    if difference != 0 and not math.isnan(difference):
        ahead = a_name if (difference > 0) == higher_is_better else b_name
    return {
        "metric": metric,
        "a": a_name,
        "b": b_name,
        "difference": round(difference, 6),
        "p_value": round(p, 6),
        "significant": bool(p < alpha),
        "test": test,
        "n": n,
        "better": ahead if p < alpha else None,
        "ahead": ahead,
        **extra,
    }


def correct_family(family: list[dict], method: str = DEFAULT_CORRECTION, alpha: float = ALPHA) -> None:
    """Adjust the p-values of one family of comparisons (in place): each keeps its raw
    `p_value` and gets `p_adjusted`, `correction` and `family_size`; `significant` and `better`
    then follow the adjusted p-value."""
    adjusted = adjust_p_values([c["p_value"] for c in family], method)
    for c, p in zip(family, adjusted):
        c.update(p_adjusted=round(min(p, 1.0), 6), correction=method, family_size=len(family))
        c["significant"] = bool(c["p_adjusted"] < alpha)
        c["better"] = c.get("ahead") if c["significant"] else None
