"""Budget audit: did every training arm consume the same budget? Deviations are flagged. And the
health of each arm: a diverged or collapsed arm is flagged, and never ranked best."""

from __future__ import annotations

# Diverged: the loss at the end (mean of the last quarter of steps) is both DIVERGED_RATIO times
# its first value and DIVERGED_NATS above it. Both, so that neither a tiny starting loss nor
# ordinary noise on a short curve trips it; lr 1e3 takes 0.69 to 130,794 in four steps.
DIVERGED_RATIO = 3.0
DIVERGED_NATS = 1.0
COLLAPSE_MIN_ITEMS = 8  # fewer test items than this say little about a model predicting one label


def rankable(arm: dict) -> bool:
    """An arm (as in results.json) that may be named best: ok, and neither diverged nor collapsed."""
    return arm["status"] == "ok" and not arm.get("health")


def arm_health(result) -> list[str]:
    """Why an ok arm's numbers should not be trusted: its training loss diverged, or it predicted
    one label for every test item (collapsed). Empty when neither."""
    if result.status != "ok":
        return []
    flags = []
    for name, points in (result.curves or {}).items():
        if name != "train_loss" and not name.endswith("_loss"):
            continue
        losses = [p[1] for p in points if isinstance(p, (list, tuple)) and len(p) == 2]
        if len(losses) < 2:
            continue
        start, tail = losses[0], losses[-max(1, len(losses) // 4) :]
        end = sum(tail) / len(tail)
        if end != end or end in (float("inf"), float("-inf")):
            flags.append(f"diverged: {name} ended at {end}")
        elif end > DIVERGED_RATIO * start and end - start > DIVERGED_NATS:
            flags.append(f"diverged: {name} rose from {start:.3g} to {end:.3g}; lower the learning rate")
    matrix = (result.metrics_detail or {}).get("confusion_matrix") or {}
    rows, labels = matrix.get("matrix") or [], matrix.get("labels") or []
    if rows and labels:
        predicted = [sum(row[j] for row in rows) for j in range(len(labels))]
        present = sum(1 for row in rows if sum(row))
        total = sum(predicted)
        used = [labels[j] for j, n in enumerate(predicted) if n]
        if total >= COLLAPSE_MIN_ITEMS and present >= 2 and len(used) == 1:
            flags.append(f"collapsed: predicted '{used[0]}' for all {total} test items")
    return flags


def budget_audit(results) -> dict:
    """Compare what training arms consumed. Arms that share a task must have trained on the same
    examples in the same order (same order hash) for the same number of steps."""
    trained = [r for r in results if r.status == "ok" and r.consumed and r.consumed.get("steps")]
    flags: dict[str, list[str]] = {}
    by_task: dict[str, list] = {}
    for r in trained:
        # Arms of different seeds see different example orders by design: compare within a seed.
        by_task.setdefault(
            r.arm["task_key"] + ("" if r.arm.get("seed") is None else f", seed {r.arm['seed']}") + _stages_of(r), []
        ).append(r)
        c = r.consumed
        if c.get("stopped_early"):
            flags.setdefault(r.arm["name"], []).append(f"stopped early: {c.get('stop_reason')}")
    for task, group in by_task.items():
        reference = _most_common(
            [(r.consumed["steps"], r.consumed["examples"], r.consumed["order_hash"]) for r in group]
        )
        for r in group:
            c = r.consumed
            if (c["steps"], c["examples"], c["order_hash"]) != reference:
                flags.setdefault(r.arm["name"], []).append(
                    f"consumed {c['steps']} steps / {c['examples']} examples (order {c['order_hash']}), "
                    f"others on '{task}' consumed {reference[0]} / {reference[1]} (order {reference[2]})"
                )
    health = {r.arm["name"]: r.health for r in results if getattr(r, "health", None)}
    return {"identical": not flags, "flags": flags, "health": health}


def _most_common(items):
    return max(set(items), key=items.count)


def _stages_of(result) -> str:
    """Arms with different stage lists consume different budgets by design: compare within one."""
    stages = result.arm.get("stages")
    return f", stages {'+'.join(s['name'] for s in stages)}" if stages else ""
