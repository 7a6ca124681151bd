"""Statistics that make numbers decidable: bootstrap confidence intervals, McNemar's exact test,
the paired bootstrap (over items, or crossed over seeds and items), corrections for
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
# p-value is near its resolution floor, 1/(resamples+1): 1000 resamples can never give less than
# 0.001, which Holm multiplies by the family size (78 pairs: 0.078), so no bootstrap-tested pair
# could ever be significant after correction. There the tail is read from the normal
# approximation with the bootstrap's standard error instead (the bootstrap Wald test; Efron &
# Tibshirani 1993, An Introduction to the Bootstrap, ch. 16).
TAIL_RESOLUTION = 10
# Before that fallback, up to this many times the resamples are drawn (where they can help).
MAX_GROWTH = 20
CHUNK = 2000  # resamples drawn at once by the vectorised bootstrap (bounds its memory)


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
    shifted to the null), with the +1 correction so it is never exactly 0; `p_method` says how it
    was obtained (see `seed_bootstrap`)."""
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

    Crossed resampling (Owen 2007, "The pigeonhole bootstrap", Ann. Appl. Stat. 1:386): seeds and
    test items are two crossed factors, every seed scored on every item, so one draw is a sample
    of seeds with replacement AND one sample of item indices with replacement, used for every
    drawn seed and for both arms. (Drawing the items again for each seed, as for nested clusters,
    would count an item that a model gets right under every seed as new evidence each time and
    overstate significance: 9% to 14% rejections at a nominal 5% with 3 to 5 seeds in
    docs/statistics.md.) It errs the other way, too cautious, because it counts the seed x item
    variance more than once; so `compare` uses it for corpus metrics only and `crossed_t` for
    per-item scores. With one seed this is the ordinary paired bootstrap.

    p-value: the share of resampled differences at least as extreme as the observed one
    (`p_method` "bootstrap"); when fewer than TAIL_RESOLUTION are, more resamples are drawn, up
    to MAX_GROWTH times as many, where that can bring TAIL_RESOLUTION of them ("bootstrap"
    still, `resamples` says how many); beyond that, the normal tail at the bootstrap's standard
    error ("bootstrap normal tail"). `ci`: the percentile interval; `se`: the standard deviation
    of the resampled differences."""
    a_list = [_as_rows(a) for a in a_by_seed]
    b_list = [_as_rows(b) for b in b_by_seed]
    if not a_list or len(a_list) != len(b_list) or any(len(a) != len(b) for a, b in zip(a_list, b_list)):
        raise ValueError("the paired bootstrap needs the same seeds and items for both arms")
    if len({len(a) for a in a_list}) != 1:
        raise ValueError("the seed-and-item bootstrap needs the same test items under every seed")
    if resamples <= 0:
        raise ValueError("the paired bootstrap needs at least one resample")
    observed = float(np.mean([reduce(a) - reduce(b) for a, b in zip(a_list, b_list)]))
    rng = np.random.default_rng(seed)
    per_item = (
        np.stack([a[:, 0] - b[:, 0] for a, b in zip(a_list, b_list)]).astype(float) if reduce is item_mean else None
    )

    def draw(k: int) -> np.ndarray:
        return crossed_resamples(
            per_item,
            lambda s, items: reduce(a_list[s][items]) - reduce(b_list[s][items]),
            (len(a_list), len(a_list[0])),
            k,
            rng,
        )

    deltas = draw(resamples)
    deltas = deltas[~np.isnan(deltas)]
    if not len(deltas) or np.isnan(observed):
        return {"difference": observed, "p_value": 1.0, "p_method": "bootstrap", "ci": None, "se": None}
    ci = np.quantile(deltas, [ALPHA / 2, 1 - ALPHA / 2])
    se = float(deltas.std(ddof=1)) if len(deltas) > 1 else 0.0
    p, p_method, used = _tail_p(observed, deltas, se, draw)
    return {
        "difference": observed,
        "p_value": min(float(p), 1.0),
        "p_method": p_method,
        "resamples": used,
        "ci": [float(ci[0]), float(ci[1])],
        "se": se,
    }


def _tail_p(observed: float, deltas: np.ndarray, se: float, more: Callable[[int], np.ndarray]):
    """(p, method, resamples used): the bootstrap share, grown adaptively, else the normal tail."""
    from scipy.stats import norm

    def extreme_count(values):
        return int((np.abs(values - observed) >= abs(observed) - 1e-12).sum())

    extreme, used = extreme_count(deltas), len(deltas)
    if extreme < TAIL_RESOLUTION and se > 0:
        # Grow only where MAX_GROWTH times the resamples can be expected to reach the resolution
        # (the normal tail is the guide): bounded work, and none spent where it cannot help.
        expected = MAX_GROWTH * used * 2 * norm.sf(abs(observed) / se)
        if expected >= TAIL_RESOLUTION:
            extra = more((MAX_GROWTH - 1) * used)
            extra = extra[~np.isnan(extra)]
            extreme, used = extreme + extreme_count(extra), used + len(extra)
    if extreme >= TAIL_RESOLUTION or se == 0.0:
        return (extreme + 1) / (used + 1), "bootstrap", used
    return float(2 * norm.sf(abs(observed) / se)), "bootstrap normal tail", used


def crossed_variance(table: np.ndarray) -> tuple[float, float]:
    """(variance, degrees of freedom) of the grand mean of a seeds x items table whose two
    factors are random and crossed, from the two-way ANOVA mean squares (one value per cell):
    E[MS_seeds + MS_items - MS_residual] / (S n) = s2_seed / S + s2_item / n + s2_resid / (S n),
    the unbiased moment estimate; degrees of freedom by Satterthwaite's approximation (the
    quasi-F of Clark 1973, "The language-as-fixed-effect fallacy"). Floored at MS_residual / (S n),
    the variance the cells' own noise alone gives. The crossed bootstrap counts the residual term
    two to three times (Owen 2007), so on 0/1 scores, where that term is large, its test is far
    too cautious (0.3% to 2% rejections at a nominal 5%, docs/statistics.md); this one is not."""
    table = np.asarray(table, dtype=float)
    s, n = table.shape
    grand, seed_means, item_means = table.mean(), table.mean(1), table.mean(0)
    ms_seeds = n * ((seed_means - grand) ** 2).sum() / (s - 1)
    ms_items = s * ((item_means - grand) ** 2).sum() / (n - 1)
    resid = table - seed_means[:, None] - item_means[None, :] + grand
    ms_resid = (resid**2).sum() / ((s - 1) * (n - 1))
    combined = max(ms_seeds + ms_items - ms_resid, ms_resid)
    spread = ms_seeds**2 / (s - 1) + ms_items**2 / (n - 1) + ms_resid**2 / ((s - 1) * (n - 1))
    df = combined**2 / spread if spread > 0 else float((s - 1) * (n - 1))
    return combined / (s * n), float(df)


def crossed_t(a_by_seed: list, b_by_seed: list, *, alpha: float = ALPHA) -> dict:
    """Test of the mean over seeds and items of a - b, per-item scores under several seeds, seeds
    and items crossed random factors: t = difference / sqrt(crossed_variance), two-sided, with
    Satterthwaite's degrees of freedom; the interval is difference +- t_(1-alpha/2, df) * se."""
    from scipy.stats import t as student

    table = np.stack([_as_rows(a)[:, 0] - _as_rows(b)[:, 0] for a, b in zip(a_by_seed, b_by_seed)]).astype(float)
    if table.shape[0] < 2 or table.shape[1] < 2:
        raise ValueError("the crossed t test needs at least two seeds and two items")
    observed = float(table.mean())
    variance, df = crossed_variance(table)
    se = math.sqrt(variance)
    if se == 0:
        p, half = (1.0 if observed == 0 else 0.0), 0.0
    else:
        p = float(2 * student.sf(abs(observed) / se, df))
        half = float(student.ppf(1 - alpha / 2, df)) * se
    return {
        "difference": observed,
        "p_value": min(p, 1.0),
        "p_method": "crossed t",
        "ci_method": "t interval, seeds x items variance components",
        "df": round(df, 2),
        "ci": [observed - half, observed + half],
        "se": se,
    }


def crossed_resamples(
    per_item: np.ndarray | None, statistic: Callable | None, shape: tuple[int, int], resamples: int, rng
) -> np.ndarray:
    """`resamples` bootstrap values of a mean over seeds, each from one draw of seeds with
    replacement and ONE draw of item indices shared by every drawn seed (and both arms).

    `per_item` (seeds x items): the statistic is a mean over items (vectorised); else
    `statistic(seed, item_indices)` gives one seed's value on the drawn items. shape: (seeds, items)."""
    n_seeds, n = shape
    out = np.empty(resamples)
    for start in range(0, resamples, CHUNK):
        k = min(CHUNK, resamples - start)
        if n_seeds == 1:
            weights = np.ones((k, 1))
        else:
            drawn = rng.integers(0, n_seeds, size=(k, n_seeds))
            weights = np.stack([np.bincount(d, minlength=n_seeds) for d in drawn]) / n_seeds
        items = rng.integers(0, n, size=(k, n))
        if per_item is not None:
            mixed = weights @ per_item  # each resample's seed-weighted per-item value
            out[start : start + k] = np.take_along_axis(mixed, items, axis=1).mean(1)
            continue
        for r in range(k):
            drawn_seeds = np.flatnonzero(weights[r])
            out[start + r] = sum(weights[r, s] * statistic(s, items[r]) for s in drawn_seeds)
    return out


def seed_item_ci(
    by_seed: list,
    reduce: Callable[[np.ndarray], float] = item_mean,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    alpha: float = ALPHA,
) -> list[float] | None:
    """Interval of one arm's metric averaged over seeds, seeds and items crossed: for per-item
    scores the t interval of `crossed_variance`; for corpus metrics the percentile interval of
    the crossed resampling of `seed_bootstrap` (wider than it needs to be, never narrower)."""
    tables = [_as_rows(t) for t in by_seed]
    if not tables or len(tables[0]) < 2 or resamples <= 0 or len({len(t) for t in tables}) != 1:
        return None
    if reduce is item_mean and len(tables) > 1:  # per-item scores: the unbiased variance components
        from scipy.stats import t as student

        table = np.stack([t[:, 0] for t in tables]).astype(float)
        variance, df = crossed_variance(table)
        half = float(student.ppf(1 - alpha / 2, df)) * math.sqrt(variance)
        return [round(float(table.mean() - half), 6), round(float(table.mean() + half), 6)]
    per_item = np.stack([t[:, 0] for t in tables]).astype(float) if reduce is item_mean else None
    values = crossed_resamples(
        per_item,
        lambda s, items: reduce(tables[s][items]),
        (len(tables), len(tables[0])),
        resamples,
        np.random.default_rng(seed),
    )
    values = values[~np.isnan(values)]
    if not len(values):
        return None
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return [round(float(low), 6), round(float(high), 6)]


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


def mcnemar_exact_mdd(n: int, discordant_rate: float, *, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest accuracy difference that McNemar's EXACT test at level `alpha` detects with
    probability `power`, on n items of which a share `discordant_rate` is discordant: the number
    of discordant items D ~ Binomial(n, psi), and given D = d the items favouring a
    ~ Binomial(d, (psi + delta) / (2 psi)); the power sums the rejections of the exact test over
    both. Found by bisection over delta in [0, psi]; None where even delta = psi is not detected
    (or n is over 2000, where the normal approximation `minimum_detectable_difference` is close)."""
    from scipy.stats import binom

    if n <= 0 or not 0 < discordant_rate <= 1 or n > 2000:
        return None
    d = np.arange(n + 1)
    k = np.arange(n + 1)
    valid = k[None, :] <= d[:, None]
    tail = binom.cdf(np.minimum(k[None, :], d[:, None] - k[None, :]), d[:, None], 0.5)
    rejects = valid & (2 * tail < alpha)
    weight_d = binom.pmf(d, n, discordant_rate)

    def power_at(delta: float) -> float:
        q = (discordant_rate + delta) / (2 * discordant_rate)
        pmf = np.where(valid, binom.pmf(k[None, :], d[:, None], q), 0.0)
        return float(weight_d @ (pmf * rejects).sum(1))

    if power_at(discordant_rate) < power:
        return None
    low, high = 0.0, discordant_rate
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (low, mid) if power_at(mid) >= power else (mid, high)
    return high


# How each p-value was obtained, as a report names it and the mark beside the number.
P_METHODS = {
    "exact binomial": ("exact", "e"),
    "bootstrap": ("bootstrap", "b"),
    "bootstrap normal tail": ("normal approx.", "n"),
    "crossed t": ("t, seeds x items", "t"),
}
NORMAL_TAIL_FLOOR = 1e-4  # a normal-tail p below this is shown only as "< 1e-4"
STORED_P_FLOOR = 1e-6  # results.json rounds p to 6 decimals


def p_label(method: str | None) -> str:
    """The short name of a p-value's method ("exact", "bootstrap", "normal approx.")."""
    return P_METHODS.get(method or "", (method or "", ""))[0]


def format_p(p: float | None, method: str | None = None) -> str:
    """A p-value with no more precision than its method supports: exact p to 3 significant
    figures (down to the 1e-6 that results.json keeps), a bootstrap p to 2 (it is a count of
    resamples), a normal-tail p to 1 and never below 1e-4 ("< 1e-4"): far in the tail the
    approximation's error is larger than the number."""
    if p is None:
        return "–"
    if method == "bootstrap normal tail":
        return "< 1e-4" if p < NORMAL_TAIL_FLOOR else f"{p:.1g}"
    if p < STORED_P_FLOOR:
        return "< 1e-6"
    return f"{p:.2g}" if method in ("bootstrap", "crossed t") else f"{p:.3g}"


def p_with_method(p: float | None, method: str | None) -> str:
    """ "0.0049 (exact)", "< 1e-4 (normal approx.)": for plain-text outputs."""
    label = p_label(method)
    return format_p(p, method) + (f" ({label})" if label else "")


def paired_proportions_interval(a_only: int, b_only: int, n: int, *, alpha: float = ALPHA) -> dict:
    """Interval of the difference of two accuracies on the same n items (Agresti & Min 2005,
    "Simple improved confidence intervals for comparing matched proportions", Stat. Med. 24:729):
    the Wald interval after adding 1/2 to each cell of the 2x2 table, which keeps its coverage
    near nominal down to small n. `se`: that interval's standard error of the difference."""
    from scipy.stats import norm

    if n <= 0:
        return {"ci": None, "se": None, "ci_method": None}
    p_a, p_b = (a_only + 0.5) / (n + 2), (b_only + 0.5) / (n + 2)
    delta = p_a - p_b
    se = math.sqrt(max(p_a + p_b - delta**2, 0.0) / (n + 2))
    half = float(norm.ppf(1 - alpha / 2)) * se
    return {"ci": [delta - half, delta + half], "se": se, "ci_method": "Agresti-Min paired proportions"}


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
    table per seed (in the order of `seeds`), seeds and items crossed: per-item scores by
    `crossed_t`, corpus metrics by `seed_bootstrap`. Every row gets `ci`, `ci_method`, `se` (of
    the difference) and `p_method`; McNemar rows also `se_null`. `significant` and `better` here
    are for this test alone; `correct_family` replaces them by the corrected ones."""
    extra: dict = {}
    if test == "seed_bootstrap" and reduce is item_mean and len(a_rows) > 1:
        outcome = crossed_t(a_rows, b_rows, alpha=alpha)
        n = int(len(_as_rows(a_rows[0])))
        extra.update(seeds=list(seeds or range(len(a_rows))), df=outcome["df"])
    elif test == "seed_bootstrap":
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
        # McNemar's p is exact; the interval of the difference is Agresti & Min's for paired
        # proportions, and `se` the standard error of the difference as on every other row;
        # `se_null` is the SE under McNemar's null, what its detectable difference is built on.
        extra.update(
            discordant=discordant, p_method="exact binomial", se_null=round(discordant_se(discordant / n, n), 6)
        )
        outcome.update(paired_proportions_interval(outcome["a_only"], outcome["b_only"], n, alpha=alpha))
    elif test == "paired_bootstrap":
        outcome = paired_bootstrap(a_rows, b_rows, reduce, resamples=resamples, seed=seed)
    elif test != "seed_bootstrap":
        raise ValueError(f"unknown paired test '{test}'")
    extra["se"] = None if outcome["se"] is None else round(outcome["se"], 6)
    if outcome.get("p_method") and "p_method" not in extra:
        extra["p_method"] = outcome["p_method"]
    if outcome.get("resamples") and test != "mcnemar":
        extra["resamples"] = outcome["resamples"]
    if outcome["ci"] is not None:
        extra["ci"] = [round(v, 6) for v in outcome["ci"]]
        extra["ci_method"] = outcome.get("ci_method") or (
            "paired bootstrap percentile" + (", seeds x items crossed" if test == "seed_bootstrap" else "")
        )
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
