"""What the HTML report shows, computed from one run folder only (results.json and each arm's
predictions.jsonl): the headline, the comparison table, chart data, per-class scores, the
per-example view, golden-set results and provenance. Directions and units come from the metric
registry; nothing here knows a method by name."""

from __future__ import annotations

from pathlib import Path

from markupsafe import Markup

from harness.eval.compare import CORRECTION_NAMES, adjusted_p, difference_text
from harness.eval.metrics import METRICS
from harness.naming import base_name
from harness.paths import read_jsonl_objects
from harness.report import charts
from harness.results.audit import rankable

CONSUMED = ["steps", "examples", "tokens", "seconds"]
PARETO_COSTS = ["peak_memory_mb", "latency_p50_ms", "trainable_params"]
MAX_EXAMPLES = 500  # rows in the per-example view; a few hundred keeps the page light
MAX_TEXT = 600  # characters of an input or prediction shown per cell


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
                    "ci": {},
                    "metrics": {m: v["mean"] for m, v in entry["metrics"].items()},
                }
            )
    return out


def headline(
    task_key: str,
    arms: list[dict],
    metric: str | None,
    comparisons: list | None,
    correction: str | None = None,
    sensitivity: dict | None = None,
) -> Markup:
    """One sentence: which arm is best on the primary metric, and whether that is significant
    after the run's correction; then what this test set can detect at all."""
    sentence = _best_sentence(task_key, arms, metric, comparisons, correction)
    if comparisons and correction:
        family = [c for c in comparisons if c.get("metric") == metric and c.get("task", task_key) == task_key]
        if family and not any(c.get("significant") for c in family):
            smallest = min(family, key=adjusted_p)
            how = (
                "without correction"
                if correction == "none"
                else f"after {CORRECTION_NAMES.get(correction, correction)} correction"
            )
            sentence += Markup(
                " No pair of arms differs significantly on {} {}; the smallest adjusted p is {:.3g} ({} vs {})."
            ).format(metric, how, adjusted_p(smallest), smallest["a"], smallest["b"])
    if sensitivity:
        sentence += Markup(
            " With {} items this comparison can detect {} differences of about {} (80% power; from the {})."
        ).format(
            sensitivity["n"],
            sensitivity["metric"],
            difference_text(sensitivity["mdd"], sensitivity.get("unit", "")),
            sensitivity.get("basis", "observed standard error"),
        )
    return sentence


def _best_sentence(
    task_key: str, arms: list[dict], metric: str | None, comparisons: list | None, correction: str | None
) -> Markup:
    ok = [a for a in arms if rankable(a) and metric and a["metrics"].get(metric) is not None]
    failed = sum(a["status"] == "failed" for a in arms)
    unhealthy = [a for a in arms if a["status"] == "ok" and a.get("health")]
    if not ok:
        if unhealthy:
            return Markup(
                "No arm on <b>{}</b> trained soundly ({} diverged or collapsed, {} failed), so there is no answer yet."
            ).format(task_key, len(unhealthy), failed)
        return Markup("No arm completed on <b>{}</b>, so there is no answer yet ({} failed).").format(task_key, failed)
    higher = METRICS[metric].higher_is_better
    ranked = sorted(ok, key=lambda a: a["metrics"][metric], reverse=higher)
    best = ranked[0]
    if len(ranked) == 1:
        return Markup("Only <b>{}</b> completed on <b>{}</b> ({} {}); there is nothing to compare it with.").format(
            arm_name(best), task_key, metric, with_ci(best, metric)
        )
    tied = [a for a in ranked if a["metrics"][metric] == best["metrics"][metric]]
    if len(tied) > 1:
        bold = [Markup("<b>{}</b>").format(arm_name(a)) for a in tied]
        names = Markup(", ").join(bold[:-1]) + Markup(" and ") + bold[-1]
        return Markup("On <b>{}</b>, {} tie on {} ({}); the data do not separate them.").format(
            task_key, names, metric, with_ci(best, metric)
        )
    runner_up = ranked[1]
    sentence = Markup("On <b>{}</b>, <b>{}</b> is best by {} ({}), ahead of {} ({}); {}").format(
        task_key,
        arm_name(best),
        metric,
        with_ci(best, metric),
        arm_name(runner_up),
        with_ci(runner_up, metric),
        significance(best, runner_up, metric, comparisons, correction),
    )
    return sentence


def significance(
    best: dict, other: dict, metric: str, comparisons: list | None, correction: str | None = None
) -> Markup:
    if comparisons is None:
        return Markup("significance was not computed.")
    for c in comparisons:
        pair = (c.get("a"), c.get("b"))
        if c.get("metric") == metric and (
            same_arm(pair[0], best) and same_arm(pair[1], other) or same_arm(pair[0], other) and same_arm(pair[1], best)
        ):
            detail = []
            if c.get("difference") is not None:
                detail.append(f"difference {c['difference']:+.3g}")
            if c.get("p_value") is not None:
                detail.append(f"p = {c['p_value']:.3g}")
            corrected = c.get("p_adjusted") is not None and c.get("correction") not in (None, "none")
            if corrected:
                detail.append(
                    f"{CORRECTION_NAMES.get(c['correction'], c['correction'])}-adjusted p = "
                    f"{c['p_adjusted']:.3g} over {c.get('family_size', '?')} pairs"
                )
            if c.get("seeds"):
                detail.append(f"tested over seeds {', '.join(map(str, c['seeds']))} and items")
            detail_text = f" ({', '.join(detail)})" if detail else ""
            if c.get("significant"):
                return Markup("the difference is <b>significant</b>{}.").format(detail_text)
            after = " after correction" if corrected else ""
            return Markup("the difference is <b>not significant</b>{}{}, so this run does not separate them.").format(
                after, detail_text
            )
    return Markup("no significance test compares these two.")


# ----------------------------------------------------------------------------- the table


def table(arms: list[dict], task_type: str, flags: dict) -> dict:
    """Arms as columns, metrics as rows (grouped: quality, cost, budget consumed): a handful of
    arms against a dozen metrics reads best this way round."""
    names = metric_columns(arms, task_type)
    best = best_values(arms, names)
    columns = [
        {
            "name": arm_name(a),
            "method": a["arm"].get("method"),
            "model": a["arm"].get("model_key"),
            "status": a["status"],
            "error": a.get("error"),
            "flags": flags.get(arm_name(a), []),
            "health": a.get("health") or [],
            "reused_from": a.get("reused_from"),
            **evaluation_notes(a),
        }
        for a in arms
    ]
    groups: dict[str, list] = {"quality": [], "cost": [], "other": []}
    for n in names:
        metric = METRICS.get(n)
        groups[metric.kind if metric else "other"].append(
            {
                "name": n,
                "unit": unit_of(n),
                "arrow": ("↑" if metric.higher_is_better else "↓") if metric else "",
                "description": metric.description if metric else "not in the metric registry",
                "cells": [
                    {"text": with_ci(a, n), "best": n in best and rankable(a) and a["metrics"].get(n) == best[n]}
                    for a in arms
                ],
            }
        )
    groups["budget consumed"] = [
        {
            "name": k,
            "unit": "",
            "arrow": "",
            "description": f"{k} this arm consumed in training",
            "cells": [{"text": format_value((a.get("consumed") or {}).get(k)), "best": False} for a in arms],
        }
        for k in CONSUMED
    ]
    return {
        "columns": columns,
        "groups": [{"title": t, "rows": r} for t, r in groups.items() if r],
        "contended": [c["name"] for c in columns if c.get("contended")],
    }


def evaluation_notes(arm: dict) -> dict:
    """How an arm was evaluated (a decoder's scoring rule, the precision) and whether its cost
    metrics were measured on a busy machine (load above the CPUs, or other processes using CPU)."""
    provenance, detail = arm.get("provenance") or {}, arm.get("metrics_detail") or {}
    parts = [(provenance.get("label_scoring") or {}).get("text"), provenance.get("eval_precision")]
    conditions = detail.get("cost_conditions") or {}
    busy = None
    if conditions.get("contended"):
        busy = (
            f"cost measured on a busy machine: load {conditions.get('load_avg_1m')} on {conditions.get('cpu_count')} "
            f"CPUs, other processes used {conditions.get('other_cores_in_use')} cores on average"
        )
    return {"evaluation": " · ".join(p for p in parts if p), "contended": busy}


# ----------------------------------------------------------------------------- charts


def pareto_charts(arms: list[dict], metric: str | None, colours: dict[str, str]) -> list[dict]:
    ok = [a for a in arms if a["status"] == "ok" and metric and a["metrics"].get(metric) is not None]
    out = []
    for cost in PARETO_COSTS:
        series = [
            {
                "name": arm_name(a),
                "colour": colours[arm_name(a)],
                "x": a["metrics"][cost],
                "y": a["metrics"][metric],
                "x_text": format_value(a["metrics"][cost], unit_of(cost)),
                "y_text": with_ci(a, metric),
                "y_ci": interval(a, metric),
            }
            for a in ok
            if a["metrics"].get(cost) is not None
        ]
        title = f"{metric} against {cost}" if metric else cost
        if not series:
            out.append({"title": title, "chart": None})
            continue
        chart = charts.scatter(
            series,
            x_label=f"{cost} ({unit_of(cost)})",
            y_label=f"{metric} ({unit_of(metric)})",
            x_higher_better=METRICS[cost].higher_is_better,
            y_higher_better=METRICS[metric].higher_is_better,
        )
        out.append({"title": title, "chart": chart})
    return out


def learning_curves(arms: list[dict], colours: dict[str, str]) -> dict | None:
    series = [
        {"name": arm_name(a), "colour": colours[arm_name(a)], "points": a["curves"]["train_loss"]}
        for a in arms
        if a["status"] == "ok" and (a.get("curves") or {}).get("train_loss")
    ]
    if not series:
        return None
    return charts.lines(series, x_label="optimizer step", y_label="train loss")


# ----------------------------------------------------------------------------- predictions


def read_predictions(run_dir: Path, arm: dict) -> list[dict]:
    name = (arm.get("artifacts") or {}).get("predictions", "predictions.jsonl")
    path = run_dir / "arms" / arm["arm"].get("slug", "") / name
    if arm["status"] != "ok" or not path.is_file():
        return []
    return read_jsonl_objects(path, fix="rerun the arm (`harness run --force --only <arm>`) to write it again")


def per_class(predictions: dict[str, list[dict]], labels: list[str] | None, colours: dict[str, str]) -> dict | None:
    """Recall of each class (the share of its test items predicted right), per arm."""
    if not predictions:
        return None
    classes = list(labels or sorted({str(r.get("reference")) for rows in predictions.values() for r in rows}))
    series, table_rows = [], []
    for name, rows in predictions.items():
        values = []
        for label in classes:
            of_class = [r for r in rows if str(r.get("reference")) == label]
            values.append(
                sum(str(r.get("prediction")) == label for r in of_class) / len(of_class) if of_class else None
            )
        series.append({"name": name, "colour": colours[name], "values": values})
        table_rows.append({"name": name, "cells": [format_value(v, "fraction") for v in values]})
    counts = [sum(str(r.get("reference")) == label for r in next(iter(predictions.values()))) for label in classes]
    return {
        "chart": charts.grouped_bars(classes, series, y_label="recall"),
        "classes": classes,
        "counts": counts,
        "rows": table_rows,
    }


def clip(text) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " …"


def examples(predictions: dict[str, list[dict]], task_type: str) -> dict | None:
    """The same test item across arms, for the first MAX_EXAMPLES items."""
    if not predictions:
        return None
    by_arm = {name: {str(r.get("id")): r for r in rows} for name, rows in predictions.items()}
    ids = list(dict.fromkeys(str(r.get("id")) for rows in predictions.values() for r in rows))
    items = []
    for item_id in ids[:MAX_EXAMPLES]:
        first = next(by_arm[n][item_id] for n in by_arm if item_id in by_arm[n])
        cells = []
        for name in by_arm:
            row = by_arm[name].get(item_id)
            if row is None:
                cells.append({"text": "–", "correct": None, "scores": ""})
                continue
            scores = row.get("probs") or row.get("logprobs") or {}
            cells.append(
                {
                    "text": clip(row.get("prediction")),
                    "correct": (str(row.get("prediction")) == str(row.get("reference")))
                    if task_type == "classification"
                    else None,
                    "scores": ", ".join(f"{k}: {v}" for k, v in scores.items()),
                }
            )
        distinct = {c["text"] for c in cells if c["text"] != "–"}
        items.append(
            {
                "id": item_id,
                "input": clip(first.get("input")),
                "reference": clip(first.get("reference")),
                "cells": cells,
                "disagree": len(distinct) > 1,
            }
        )
    return {
        "arms": list(by_arm),
        "rows": items,
        "total": len(ids),
        "shown": len(items),
        "disagreements": sum(i["disagree"] for i in items),
    }


# ----------------------------------------------------------------------------- golden, provenance


def golden(results: dict) -> dict | None:
    """Golden-set results in either shape: {arm: [{item_id, passed, ...}]} or [{arm, item_id, passed, ...}]."""
    data = results.get("golden") or _golden_rows_from_arms(results)
    if not data:
        return None
    rows = [{"arm": arm, **r} for arm, items in data.items() for r in items] if isinstance(data, dict) else list(data)
    arms = list(dict.fromkeys(str(r.get("arm")) for r in rows))
    items = list(dict.fromkeys(str(r.get("item_id", r.get("id"))) for r in rows))
    grid = {(str(r.get("arm")), str(r.get("item_id", r.get("id")))): r for r in rows}
    cells = []
    for item in items:
        line = []
        for arm in arms:
            r = grid.get((arm, item))
            details = "; ".join(
                f"{k}: {v}" for k, v in (r or {}).items() if k not in ("arm", "item_id", "id", "passed")
            )
            line.append(None if r is None else {"passed": bool(r.get("passed")), "details": details})
        cells.append({"item": item, "cells": line})
    rates = []
    for arm in arms:
        mine = [r for r in rows if str(r.get("arm")) == arm]
        rates.append(f"{sum(bool(r.get('passed')) for r in mine)}/{len(mine)}")
    return {"arms": arms, "rows": cells, "rates": rates}


def _golden_rows_from_arms(results: dict) -> list[dict]:
    """Per-arm golden results (arms[i].golden[set].items, see harness/golden/scoring.py) as flat rows."""
    rows = []
    for arm in results.get("arms", []):
        for set_name, outcome in (arm.get("golden") or {}).items():
            for item in outcome.get("items") or []:
                rows.append(
                    {
                        "arm": arm["arm"]["name"],
                        "item_id": f"{set_name}/{item.get('id')}",
                        "passed": item.get("passed"),
                        "must": item.get("must"),
                        "failures": "; ".join(map(str, item.get("failures") or [])) or None,
                    }
                )
    return rows


def provenance(results: dict) -> dict:
    arms = [a for a in results["arms"] if a.get("provenance")]
    packages: dict[str, list] = {}
    for a in arms:
        for name, version in (a["provenance"].get("packages") or {}).items():
            if version not in packages.setdefault(name, []):
                packages[name].append(version)

    def distinct(key):
        return sorted({str(a["provenance"].get(key)) for a in arms if a["provenance"].get(key) is not None})

    fingerprints = {}
    for a in arms:
        if a["provenance"].get("data_fingerprint"):
            fingerprints.setdefault(a["arm"]["task_key"], set()).add(a["provenance"]["data_fingerprint"])
    experiment = results.get("experiment", {})
    models = {
        k: f"{v.get('source')}" + (f" ({v['kind']})" if v.get("kind") else "")
        for k, v in (experiment.get("models") or {}).items()
    }
    return {
        "packages": {k: ", ".join("–" if v is None else str(v) for v in vs) for k, vs in sorted(packages.items())},
        "python": ", ".join(distinct("python")) or "–",
        "device": ", ".join(distinct("device")) or "–",
        "git_commit": ", ".join(distinct("git_commit")) or "–",
        "fingerprints": {k: ", ".join(sorted(v)) for k, v in fingerprints.items()},
        "models": models,
        "budget": experiment.get("budget") or {},
        "run_id": results.get("run_id"),
        "written_at": results.get("written_at"),
    }


# ----------------------------------------------------------------------------- the whole page


def build(run_dir: Path, results: dict) -> dict:
    experiment = results.get("experiment", {})
    all_arms = results.get("arms", [])
    ok_names = [arm_name(a) for a in all_arms if a["status"] == "ok"]
    colours = {name: charts.colour(i) for i, name in enumerate(ok_names)}
    flags = (results.get("budget_audit") or {}).get("flags") or {}
    comparisons = results.get("comparisons")
    task_keys = list(dict.fromkeys([a["arm"]["task_key"] for a in all_arms]))
    tasks = []
    for key in task_keys:
        spec = (experiment.get("tasks") or {}).get(key) or {}
        task_type = spec.get("type", "classification")
        arms = [a for a in all_arms if a["arm"]["task_key"] == key]
        metric = primary_metric(arms, task_type)
        predictions = {arm_name(a): rows for a in arms if (rows := read_predictions(run_dir, a))}
        tasks.append(
            {
                "key": key,
                "type": task_type,
                "metric": metric,
                "headline": headline(
                    key,
                    over_seeds(arms, results.get("seed_summary")),
                    metric,
                    comparisons,
                    results.get("correction"),
                    (results.get("sensitivity") or {}).get(key),
                ),
                "table": table(arms, task_type, flags),
                "pareto": pareto_charts(arms, metric, colours),
                "curves": learning_curves(arms, colours),
                "per_class": per_class(predictions, spec.get("labels"), colours)
                if task_type == "classification"
                else None,
                "examples": examples(predictions, task_type),
                "judge_agreement": [j for j in results.get("judge_agreement") or [] if j["task"] == key],
                "legend": [{"name": arm_name(a), "colour": colours[arm_name(a)]} for a in arms if a["status"] == "ok"],
            }
        )
    audit = results.get("budget_audit") or {}
    return {
        "name": experiment.get("name", run_dir.parent.name),
        "question": experiment.get("question"),
        "description": experiment.get("description"),
        "run_id": results.get("run_id", run_dir.name),
        "tasks": tasks,
        "multi_task": len(tasks) > 1,
        "counts": {
            "arms": len(all_arms),
            "ok": len(ok_names),
            "failed": sum(a["status"] == "failed" for a in all_arms),
            "planned": results.get("planned_arms"),
        },
        "failed": [
            {"name": arm_name(a), "error": a.get("error") or "no error recorded"}
            for a in all_arms
            if a["status"] == "failed"
        ],
        "audit": {"identical": audit.get("identical"), "flags": flags},
        "significance_computed": comparisons is not None,
        "correction": CORRECTION_NAMES.get(results.get("correction"))
        if results.get("correction") not in (None, "none")
        else None,
        "golden": golden(results),
        "provenance": provenance(results),
    }
