"""The comparison table's cells, shared by the report's page (harness.report.view) and its pairwise
tests (harness.report.pairwise): values with their units and intervals, an arm's name, the best value
per metric, the primary metric, and arms pooled over their seeds. Directions and units come from the
metric registry."""

from __future__ import annotations

from harness.eval.metrics import METRICS
from harness.naming import base_name
from harness.report import charts
from harness.results.audit import rankable


def format_value(value, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if unit in ("fraction", "F-measure"):
        return f"{value:.3f}"
    if unit == "parameters":
        return charts.short_number(value)
    if unit == "%":
        return f"{value:.3g}%"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def unit_of(name: str) -> str:
    return METRICS[name].unit if name in METRICS else ""


def arm_name(arm: dict) -> str:
    return arm["arm"]["name"]


def same_arm(ref, arm: dict) -> bool:
    """Comparisons may name an arm by its name, slug or hash (a seed-aware comparison names it
    without its seed)."""
    return ref in (arm["arm"].get("name"), arm["arm"].get("slug"), arm["arm"].get("hash"))


def best_values(arms: list[dict], names: list[str]) -> dict[str, float]:
    """Best value per metric among ok arms by the metric's direction; none when all are equal."""
    best = {}
    for name in names:
        values = [a["metrics"][name] for a in arms if rankable(a) and a["metrics"].get(name) is not None]
        if name in METRICS and len(set(values)) > 1:
            best[name] = max(values) if METRICS[name].higher_is_better else min(values)
    return best


def metric_columns(arms: list[dict], task_type: str) -> list[str]:
    """Quality metrics of the task type first, then cost metrics, in the registry's order; then
    any metric the registry does not know (shown, never marked best)."""
    present = {n for a in arms for n, v in a["metrics"].items() if v is not None}
    quality = [n for n, m in METRICS.items() if m.kind == "quality" and n in present and task_type in m.task_types]
    other_quality = [n for n, m in METRICS.items() if m.kind == "quality" and n in present and n not in quality]
    cost = [n for n, m in METRICS.items() if m.kind == "cost" and n in present]
    unknown = sorted(present - set(METRICS))
    return quality + other_quality + cost + unknown


def primary_metric(arms: list[dict], task_type: str) -> str | None:
    """The first quality metric of the task type that the arms report."""
    for name, metric in METRICS.items():
        if (
            metric.kind == "quality"
            and task_type in metric.task_types
            and any(a["metrics"].get(name) is not None for a in arms)
        ):
            return name
    return None


def interval(arm: dict, name: str) -> tuple[float, float] | None:
    """The arm's confidence interval for a metric, when the statistics step recorded one."""
    value = (arm.get("ci") or {}).get(name)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return float(value[0]), float(value[1])
    return None


def with_ci(arm: dict, name: str) -> str:
    text = format_value(arm["metrics"].get(name), unit_of(name))
    bounds = interval(arm, name)
    if bounds:
        low, high = (format_value(v, unit_of(name)) for v in bounds)
        text += f" [{low}, {high}]"
    return text


# ----------------------------------------------------------------------------- the headline


def over_seeds(arms: list[dict], seed_summary: list | None) -> list[dict]:
    """Arms that ran under several seeds, as one arm each with its mean over seeds (what the
    seed-aware comparisons compare); other arms unchanged."""
    means = {e["arm"]: e for e in seed_summary or []}
    out, seen = [], set()
    for a in arms:
        base = base_name(arm_name(a))
        entry = means.get(base)
        if a["status"] != "ok" or entry is None:
            out.append(a)
        elif base not in seen:
            seen.add(base)
            out.append(
                {
                    **a,
                    "arm": {**a["arm"], "name": base},
                    "ci": {m: v["ci"] for m, v in entry["metrics"].items() if v.get("ci")},
                    "metrics": {m: v["mean"] for m, v in entry["metrics"].items()},
                }
            )
    return out
