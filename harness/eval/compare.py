"""Run-level statistics, written into results.json: pairwise comparisons of arms on the same
test items, corrected for the number of comparisons, the minimum detectable difference of each
task, and the mean/std over seeds of arms run once per seed.

Tests: McNemar's exact test for correctness, a paired bootstrap for per-item scores and corpus
metrics (macro-F1, BLEU, entity F1, perplexity: recomputed on every resample of items), and,
for arms that ran under several seeds, one seed-and-item bootstrap per pair of arms instead of
one test per seed (stats.seed_bootstrap, seeds and items resampled as crossed factors), and the
interval of each such arm's mean over seeds by the same resampling. The family of a correction is
every comparison of one metric on one task (all pairs of arms)."""

from __future__ import annotations

import itertools
import statistics
import warnings
from pathlib import Path

import numpy as np

from harness.eval import judge_pairs, judge_reliability, metrics, stats
from harness.naming import base_name
from harness.results.arm_folder import arm_predictions


def _prediction_rows(run_dir: Path, result) -> dict[str, dict]:
    return {str(row["id"]): row for row in arm_predictions(run_dir, result)}


def _metric_rows(metric: metrics.Metric, rows: dict[str, dict], ids: list[str], labels) -> np.ndarray | None:
    """The item table of `metric` on these items: stored per-item scores for metrics that are a
    mean over items; for corpus metrics, their item statistics recomputed from the predictions
    (so runs written before corpus metrics were compared get the test too)."""
    if metric.item_stats is None or metric.reduce is None:
        return None
    if metrics.per_item_score(metric):
        scores = [(rows[i].get("scores") or {}).get(metric.name) for i in ids]
        return None if any(s is None for s in scores) else np.asarray(scores, dtype=float).reshape(-1, 1)
    chosen = [rows[i] for i in ids]
    items = metrics.Items(
        preds=[r.get("prediction") for r in chosen],
        refs=[r.get("reference") for r in chosen],
        labels=labels,
        rows=chosen,
    )
    try:
        table = metric.item_stats(items)
    except (KeyError, TypeError, ValueError):  # rows lacking what the metric reads (an older run)
        return None
    return None if table is None or len(table) != len(ids) else np.asarray(table)


def _checked_table(result, metric: metrics.Metric, arm_rows: dict, ids: list[str], labels) -> np.ndarray | None:
    """The arm's item table of `metric` on `ids`. Rebuilt statistics must give the arm's own
    value on all its items; if they do not (rows that changed meaning since the run), None: no
    test beats a wrong one."""
    found = _metric_rows(metric, arm_rows, ids, labels)
    recorded = result.metrics.get(metric.name)
    if (
        found is not None
        and len(ids) == len(arm_rows)
        and recorded is not None
        and not abs(metric.reduce(found) - recorded) <= 1e-4 * max(1.0, abs(recorded))
    ):
        return None
    return found


def seed_intervals(
    run_dir: Path, results: list, *, tasks: dict | None = None, resamples: int = stats.DEFAULT_RESAMPLES, seed: int = 0
) -> dict[str, dict[str, list[float]]]:
    """{arm name without seed: {metric: [low, high]}}: the interval of the mean over seeds of each
    arm that ran under several seeds, by the crossed seed-and-item bootstrap (stats.seed_item_ci)."""
    tasks = tasks or {}
    groups: dict[str, list] = {}
    for r in results:
        if r.status == "ok":
            groups.setdefault(base_name(r.arm["name"]), []).append(r)
    out: dict[str, dict] = {}
    for base, runs in groups.items():
        if len(runs) < 2 or resamples <= 0:
            continue
        rows = {r.arm["name"]: _prediction_rows(Path(run_dir), r) for r in runs}
        ids = sorted(set.intersection(*[set(found) for found in rows.values()]))
        labels = (tasks.get(runs[0].arm.get("task_key")) or {}).get("labels")
        for metric in metrics.METRICS.values():
            if len(ids) < 2 or any(r.metrics.get(metric.name) is None for r in runs):
                continue
            found = [_checked_table(r, metric, rows[r.arm["name"]], ids, labels) for r in runs]
            if any(t is None for t in found):
                continue
            ci = stats.seed_item_ci(found, metric.reduce, resamples=resamples, seed=seed)
            if ci is not None:
                out.setdefault(base, {})[metric.name] = ci
    return out


def _test_of(metric: metrics.Metric, n_seeds: int) -> str | None:
    if not metric.paired_test:
        return None
    return "seed_bootstrap" if n_seeds > 1 else metric.paired_test


def comparisons(
    run_dir: Path,
    results: list,
    *,
    tasks: dict | None = None,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
    correction: str = stats.DEFAULT_CORRECTION,
    alpha: float = stats.ALPHA,
) -> list[dict]:
    """Every pair of ok arms on the same task, on every metric with a paired test, corrected per
    (task, metric) family. Arms that share several seeds get one seed-aware test per pair, named
    by the arm's name without its seed; arms with one common seed get the item-level test."""
    tasks = tasks or {}
    ok = [r for r in results if r.status == "ok"]
    rows = {r.arm["name"]: _prediction_rows(Path(run_dir), r) for r in ok}
    groups: dict[tuple, dict] = {}
    for r in ok:
        groups.setdefault((r.arm.get("task_key"), base_name(r.arm["name"])), {})[r.arm.get("seed")] = r
    tables: dict[tuple, np.ndarray | None] = {}

    def table(result, metric, ids, labels):
        key = (result.arm["name"], metric.name, tuple(ids))
        if key not in tables:
            tables[key] = _checked_table(result, metric, rows[result.arm["name"]], ids, labels)
        return tables[key]

    out = []
    for (task_a, base_a), (task_b, base_b) in itertools.combinations(groups, 2):
        if task_a != task_b:
            continue
        ga, gb = groups[(task_a, base_a)], groups[(task_b, base_b)]
        common = sorted(set(ga) & set(gb), key=lambda s: (s is None, s))
        if not common:
            continue
        ids = sorted(set.intersection(*[set(rows[g[s].arm["name"]]) for s in common for g in (ga, gb)]))
        if len(ids) < 2:
            continue
        labels = (tasks.get(task_a) or {}).get("labels")
        if len(common) == 1:
            name_a, name_b = ga[common[0]].arm["name"], gb[common[0]].arm["name"]
        else:
            name_a, name_b = base_a, base_b
        for metric in metrics.METRICS.values():
            test = _test_of(metric, len(common))
            missing = any(g[s].metrics.get(metric.name) is None for g in (ga, gb) for s in common)
            if test is None or (test != "mcnemar" and resamples <= 0) or missing:
                continue
            a_tables = [table(ga[s], metric, ids, labels) for s in common]
            b_tables = [table(gb[s], metric, ids, labels) for s in common]
            if any(t is None for t in a_tables + b_tables):
                continue
            if test != "seed_bootstrap":
                a_tables, b_tables = a_tables[0], b_tables[0]
            c = stats.compare(
                metric.name,
                test,
                name_a,
                a_tables,
                name_b,
                b_tables,
                higher_is_better=metric.higher_is_better,
                reduce=metric.reduce,
                seeds=common if len(common) > 1 else None,
                resamples=resamples,
                seed=seed,
                alpha=alpha,
            )
            out.append({"task": task_a, **c})
    for family in families(out).values():
        stats.correct_family(family, correction, alpha)
    return out


def families(comparisons: list[dict]) -> dict[tuple, list[dict]]:
    """Comparisons grouped into correction families: one per (task, metric)."""
    out: dict[tuple, list[dict]] = {}
    for c in comparisons:
        out.setdefault((c.get("task"), c["metric"]), []).append(c)
    return out


# ------------------------------------------------------------------ sensitivity


def sensitivity(
    comparisons: list[dict],
    results: list,
    tasks: dict | None = None,
    *,
    alpha: float = stats.ALPHA,
    power: float = stats.POWER,
) -> dict[str, dict]:
    """Per task: the minimum detectable difference (MDD) of its primary metric at `power`, for
    its number of test items, from what the comparisons observed (median over the pairs). For
    McNemar pairs it is the exact test's (binomial power at the median discordant rate;
    `mdd_method` "exact McNemar power"); for bootstrap tests the normal approximation at the
    bootstrap's standard error (`mdd_method` "normal approximation").
    `mdd_first_step` is the same at alpha / family size, the level the smallest p-value of a
    Holm-corrected family must reach (so what a winner among many arms must exceed)."""
    tasks = tasks or {}
    out = {}
    task_keys = list(dict.fromkeys(r.arm.get("task_key") for r in results if r.status == "ok"))
    for key in task_keys:
        primary = _primary(task_type=(tasks.get(key) or {}).get("type", "classification"))
        if primary is None:
            continue
        mine = [c for c in comparisons if c.get("task") == key and c["metric"] == primary and _mdd_se(c) is not None]
        if not mine:
            continue
        se = statistics.median(_mdd_se(c) for c in mine)
        n = int(statistics.median(c["n"] for c in mine))
        tests = sorted({c["test"] for c in mine})
        family_size = max(c.get("family_size", len(mine)) for c in mine)
        entry = {
            "metric": primary,
            "unit": metrics.METRICS[primary].unit,
            "n": n,
            "pairs": len(mine),
            "se": round(se, 6),
            "power": power,
            "alpha": alpha,
            "mdd": round(stats.minimum_detectable_difference(se, alpha=alpha, power=power), 6),
            "mdd_first_step": round(stats.minimum_detectable_difference(se, alpha=alpha / family_size, power=power), 6),
            "mdd_method": "normal approximation",
            "family_size": family_size,
            "tests": tests,
        }
        if tests == ["mcnemar"]:
            psi = statistics.median(c["discordant"] / c["n"] for c in mine)
            entry["discordant_rate"] = round(psi, 6)
            entry["basis"] = f"observed discordant rate of the McNemar pairs, median over {len(mine)}"
            exact = stats.mcnemar_exact_mdd(n, psi, alpha=alpha, power=power)
            first = stats.mcnemar_exact_mdd(n, psi, alpha=alpha / family_size, power=power)
            # The detectable difference of the test that ran, where the exact power reaches `power`
            # at all (else the approximation stays, named as such).
            if exact is not None:
                entry.update(mdd=round(exact, 6), mdd_method="exact McNemar power")
            entry["mdd_first_step_method"] = "normal approximation"
            if first is not None:
                entry.update(mdd_first_step=round(first, 6), mdd_first_step_method="exact McNemar power")
        else:
            entry["basis"] = f"bootstrap standard error of the difference, median over {len(mine)} pairs"
        out[key] = entry
    return out


def _mdd_se(c: dict) -> float | None:
    """The SE a pair's detectable difference is built on: McNemar's null SE (`se_null`; older
    runs kept it in `se`), else the bootstrap SE of the difference."""
    if c.get("test") == "mcnemar":
        return c.get("se_null", c.get("se"))
    return c.get("se")


def _primary(task_type: str) -> str | None:
    try:
        return metrics.primary_metric(task_type)
    except Exception:  # noqa: BLE001 - an unknown task type in an older results.json: no sensitivity
        return None


def planned_mdd(n: int, *, discordant_rate: float, alpha: float = stats.ALPHA, power: float = stats.POWER) -> float:
    """MDD of accuracy before anything ran: the analytic approximation for paired proportions
    with an assumed share of items on which two arms disagree (Connor 1987)."""
    return stats.minimum_detectable_difference(stats.discordant_se(discordant_rate, n), alpha=alpha, power=power)


def difference_text(value: float, unit: str) -> str:
    """A difference in the metric's terms: points for fractions and F-measures."""
    if unit in ("fraction", "F-measure", "F-measure (cosine)"):
        return f"{100 * value:.1f} points"
    return f"{value:.3g} {unit}"


# ------------------------------------------------------------------ the run


def seed_summary(results: list) -> list[dict]:
    """Arms that ran under several seeds: mean, std and each seed's value of every metric."""
    groups: dict[str, list] = {}
    for r in results:
        if r.status == "ok":
            groups.setdefault(base_name(r.arm["name"]), []).append((r.arm.get("seed"), r.metrics))
    groups = {k: sorted(v, key=lambda x: (x[0] is None, x[0])) for k, v in groups.items() if len(v) > 1}
    names = [n for n in metrics.METRICS if any(n in m for runs in groups.values() for _, m in runs)]
    return stats.seed_summary(groups, names)


def run_statistics(run_dir: Path, results: list, budget: dict, tasks: dict | None = None) -> dict:
    """What write_run_results adds to results.json."""
    resamples = int(budget.get("bootstrap_resamples", stats.DEFAULT_RESAMPLES))
    correction = budget.get("correction") or stats.DEFAULT_CORRECTION
    judged = judge_pairs.run_results(run_dir)  # the judge's run-level steps, when the run asked for them
    found = comparisons(
        run_dir, results, tasks=tasks, resamples=resamples, seed=int(budget.get("seed", 0)), correction=correction
    )
    summary = seed_summary(results)
    intervals = seed_intervals(run_dir, results, tasks=tasks, resamples=resamples, seed=int(budget.get("seed", 0)))
    for entry in summary:
        for name, ci in intervals.get(entry["arm"], {}).items():
            if name in entry["metrics"]:
                entry["metrics"][name]["ci"] = ci
    return {
        "comparisons": found,
        "correction": correction,
        "seed_summary": summary,
        "sensitivity": sensitivity(found, results, tasks),
        "alpha": stats.ALPHA,
        "metric_info": metrics.describe(),
        "judge_agreement": judge_agreement(results),
        **judged,
    }


PAIRWISE_STRENGTH = "judge_pairwise_strength"
JUDGE_METRICS = ("judge_score", "judge_win_rate", PAIRWISE_STRENGTH)
REFERENCE_METRICS = ("rougeL", "bertscore_f1", "embedding_cosine")


def judge_agreement(results: list) -> list[dict]:
    """Does the judge rank the arms of a task like the reference metrics do? Spearman's rho
    across the ok arms (three or more) of each task, judge metric against each reference metric
    (a withheld judge metric is absent from the arm's metrics, so never correlated)."""
    from scipy.stats import spearmanr

    by_task: dict[str, list] = {}
    for r in results:
        if r.status == "ok":
            by_task.setdefault(r.arm.get("task_key"), []).append(r.metrics)
    out = []
    for task, rows in by_task.items():
        for judge, reference in itertools.product(JUDGE_METRICS, REFERENCE_METRICS):
            pairs = [
                (m[judge], m[reference]) for m in rows if m.get(judge) is not None and m.get(reference) is not None
            ]
            if len(pairs) < 3:
                continue
            with warnings.catch_warnings():  # a constant column: rho is undefined (NaN, recorded as None)
                warnings.simplefilter("ignore")
                rho, p = spearmanr(*zip(*pairs))
            out.append(
                {
                    "task": task,
                    "judge_metric": judge,
                    "reference_metric": reference,
                    "arms": len(pairs),
                    "spearman_rho": None if rho != rho else round(float(rho), 6),
                    "p_value": None if p != p else round(float(p), 6),
                }
            )
    return out


# ------------------------------------------------------------------ words


def _p_text(p: float, method: str | None = None) -> str:
    text = stats.format_p(p, method)
    return text if text.startswith("<") else f"= {text}"


CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg", "none": "no"}


def adjusted_p(c: dict) -> float:
    """The p-value a decision rests on: adjusted when the run recorded a correction (results
    written before corrections existed have only the raw one)."""
    return c["p_adjusted"] if c.get("p_adjusted") is not None else c["p_value"]


def significance_counts(results: dict) -> dict:
    """How many comparisons are significant before and after the correction."""
    found = results.get("comparisons") or []
    alpha = results.get("alpha", stats.ALPHA)
    return {
        "tested": len(found),
        "raw": sum(c["p_value"] < alpha for c in found),
        "corrected": sum(bool(c.get("significant")) for c in found),
        "correction": results.get("correction"),
    }


def _test_text(c: dict) -> str:
    text = c.get("test", "")
    if c.get("seeds"):
        text += f" over seeds {c['seeds']}"
    return text


def summary_lines(results: dict) -> list[str]:
    """Plain sentences for the console: significant differences after the correction, the
    sensitivity of each task, and the spread over seeds."""
    found = results.get("comparisons", [])
    alpha = results.get("alpha", stats.ALPHA)
    correction = results.get("correction")
    lines = []
    for c in found:
        if c.get("significant") and c.get("better"):
            worse = c["b"] if c["better"] == c["a"] else c["a"]
            method = c.get("p_method")
            p = (
                f"p {_p_text(c['p_value'], method)}, adjusted {_p_text(c['p_adjusted'], method)}"
                if c.get("p_adjusted") is not None
                else f"p {_p_text(c['p_value'], method)}"
            )
            if stats.p_label(method):
                p += f" ({stats.p_label(method)})"
            lines.append(
                f"{c['better']} beats {worse} on {c['metric']} (by {abs(c['difference']):.3f}, {p}, {_test_text(c)})"
            )
    counts = significance_counts(results)
    if found:
        how = (
            f"after {CORRECTION_NAMES.get(correction, correction)} correction per task and metric"
            if correction and correction != "none"
            else "uncorrected"
            if correction
            else "uncorrected (this run predates corrections; `harness report --recompute` adds them)"
        )
        if not lines:
            smallest = min(found, key=adjusted_p)
            lines.append(
                f"no significant difference at p < {alpha} ({how}) in {len(found)} paired test(s); "
                f"smallest {'adjusted ' if smallest.get('p_adjusted') is not None else ''}p "
                f"{_p_text(adjusted_p(smallest), smallest.get('p_method'))} "
                f"({smallest['a']} vs {smallest['b']} on {smallest['metric']})"
            )
        else:
            lines.append(
                f"{counts['corrected']} of {len(found)} paired test(s) significant at p < {alpha} ({how}); "
                f"{counts['raw']} before correction"
            )
    for key, s in (results.get("sensitivity") or {}).items():
        lines.append(sensitivity_sentence(key, s))
    for entry in results.get("seed_summary", []):
        parts = [
            f"{m} {v['mean']:.3f} ± {v['std']:.3f}"
            for m, v in entry["metrics"].items()
            if m in metrics.METRICS and metrics.METRICS[m].kind == "quality"
        ]
        if parts:
            lines.append(f"{entry['arm']} over seeds {entry['seeds']}: " + ", ".join(parts))
    return lines + judge_reliability.console_lines(results)


def sensitivity_sentence(task: str, s: dict) -> str:
    first = ""
    if s.get("family_size", 1) > 1 and s.get("mdd_first_step") is not None:
        first = (
            f"; {difference_text(s['mdd_first_step'], s.get('unit', ''))} for the first step of a correction "
            f"over {s['family_size']} pairs"
            + (f" ({s['mdd_first_step_method']})" if s.get("mdd_first_step_method") else "")
        )
    method = f"; {s['mdd_method']}" if s.get("mdd_method") else ""
    return (
        f"sensitivity on {task}: with {s['n']} items this comparison can detect {s['metric']} differences of "
        f"about {difference_text(s['mdd'], s.get('unit', ''))} ({int(100 * s.get('power', stats.POWER))}% power, "
        f"alpha {s.get('alpha', stats.ALPHA)}, from the {s.get('basis', 'observed standard error')}{method}{first})"
    )
