"""The pairwise tests where people read them, per task and primary metric: the arms ranked, each
difference with its interval, raw and adjusted p (marked with how each p was obtained), the test,
and the arms statistically tied for first: the best arm and every arm that no corrected test
separates from it. The HTML page, the headline and the exports all read this one view."""

from __future__ import annotations

from harness.eval import stats
from harness.eval.compare import CORRECTION_NAMES
from harness.eval.metrics import METRICS
from harness.naming import base_name
from harness.report.cells import arm_name, best_values, over_seeds, with_ci
from harness.results.audit import rankable

TEST_NAMES = {
    "mcnemar": "McNemar exact",
    "paired_bootstrap": "paired bootstrap",
    "seed_bootstrap": "seeds × items",
}


def _is(ref, arm: dict) -> bool:
    a = arm["arm"]
    return ref in (a.get("name"), a.get("slug"), a.get("hash"))


def family_of(comparisons: list | None, task_key: str, metric: str | None) -> list[dict]:
    """The comparisons of one correction family: this task's, on this metric."""
    return [c for c in comparisons or [] if c.get("metric") == metric and c.get("task", task_key) == task_key]


def between(family: list[dict], x: dict, y: dict) -> tuple[dict | None, int]:
    """The comparison of arms x and y, and +1 if it reads x - y, -1 if y - x."""
    for c in family:
        if _is(c.get("a"), x) and _is(c.get("b"), y):
            return c, 1
        if _is(c.get("a"), y) and _is(c.get("b"), x):
            return c, -1
    return None, 0


def ranked_arms(arms: list[dict], metric: str | None) -> list[dict]:
    ok = [a for a in arms if rankable(a) and metric and a["metrics"].get(metric) is not None]
    return sorted(ok, key=lambda a: a["metrics"][metric], reverse=METRICS[metric].higher_is_better) if ok else []


def tied_for_first(ranked: list[dict], family: list[dict]) -> list[dict]:
    """The best arm and every arm that no corrected test separates from it (a pair never tested
    is not separated)."""
    if not ranked:
        return []
    best = ranked[0]
    tied = [best]
    for other in ranked[1:]:
        c, _ = between(family, best, other)
        if not (c and c.get("significant") and c.get("better") is not None and _is(c["better"], best)):
            tied.append(other)
    return tied


def _rank(ref, ranked: list[dict]) -> int | None:
    return next((i for i, a in enumerate(ranked) if _is(ref, a)), None)


def signed(value: float, unit: str) -> str:
    return f"{value:+.3f}" if unit in ("fraction", "F-measure", "F-measure (cosine)") else f"{value:+.3g}"


def view(task_key: str, arms: list[dict], metric: str | None, comparisons: list | None, correction: str | None):
    """What the page shows for one task, or None when nothing was tested on its primary metric."""
    family = family_of(comparisons, task_key, metric)
    ranked = ranked_arms(arms, metric)
    if not family:
        return None

    unit = METRICS[metric].unit
    tied = tied_for_first(ranked, family)
    rows = []
    for c in family:
        first, second = c["a"], c["b"]
        sign = 1
        rank_a, rank_b = (len(ranked) if r is None else r for r in (_rank(c["a"], ranked), _rank(c["b"], ranked)))
        if rank_b < rank_a:  # unranked arms (diverged, collapsed) count as last
            first, second, sign = c["b"], c["a"], -1
        ci = c.get("ci")
        ci_text = "–"
        if ci:
            low, high = sorted(sign * v for v in ci)
            ci_text = f"[{signed(low, unit)}, {signed(high, unit)}]"
        method = c.get("p_method")
        rows.append(
            {
                "first": first,
                "second": second,
                "difference": signed(sign * c["difference"], unit) if c.get("difference") is not None else "–",
                "ci": ci_text,
                "ci_method": c.get("ci_method") or "",
                "p": stats.format_p(c.get("p_value"), method),
                "p_adjusted": stats.format_p(c.get("p_adjusted"), method) if c.get("p_adjusted") is not None else "–",
                "mark": stats.P_METHODS.get(method or "", ("", ""))[1],
                "method": stats.p_label(method),
                "test": TEST_NAMES.get(c.get("test"), c.get("test") or "–")
                + (f" (seeds {', '.join(map(str, c['seeds']))})" if c.get("seeds") else ""),
                "significant": bool(c.get("significant")),
                "order": tuple(sorted((rank_a, rank_b))),
            }
        )
    rows.sort(key=lambda r: r["order"])
    methods = sorted({(r["mark"], r["method"]) for r in rows if r["mark"]})
    return {
        "metric": metric,
        "arrow": "↑" if METRICS[metric].higher_is_better else "↓",
        "ranked": [
            {"rank": i + 1, "name": arm_name(a), "value": with_ci(a, metric), "tied": any(a is t for t in tied)}
            for i, a in enumerate(ranked)
        ]
        + [  # completed but never ranked (diverged or collapsed): listed last, with the reason
            {"rank": "–", "name": arm_name(a), "value": with_ci(a, metric), "tied": False, "note": a["health"][0]}
            for a in arms
            if a["status"] == "ok" and a.get("health") and a["metrics"].get(metric) is not None
        ],
        "tied": [arm_name(a) for a in tied],
        "rows": rows,
        "correction": CORRECTION_NAMES.get(correction, correction) if correction not in (None, "none") else None,
        "methods": [{"mark": m, "label": label} for m, label in methods],
    }


def marked_cells(arms: list[dict], names: list[str], results: dict | None = None) -> set[tuple[str, str]]:
    """(arm name, metric) of every cell to mark, per task (arms on different tasks never compete):
    on a metric tested pairwise, the arms statistically tied for first (an arm run under several
    seeds is judged by its mean, as the tests compare it); on a metric never tested (costs), the
    best value by the metric's direction."""

    results = results or {}
    marked = set()
    for task in dict.fromkeys(a["arm"].get("task_key") for a in arms):
        group = [a for a in arms if a["arm"].get("task_key") == task]
        pooled = over_seeds(group, results.get("seed_summary"))
        for name, value in best_values(group, names).items():
            family = family_of(results.get("comparisons"), task, name)
            if family:
                tied = {a["arm"]["name"] for a in tied_for_first(ranked_arms(pooled, name), family)}
                marked |= {
                    (a["arm"]["name"], name)
                    for a in group
                    if rankable(a) and (a["arm"]["name"] in tied or base_name(a["arm"]["name"]) in tied)
                }
            else:
                marked |= {(a["arm"]["name"], name) for a in group if rankable(a) and a["metrics"].get(name) == value}
    return marked
