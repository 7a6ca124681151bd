"""Budget audit: did every training arm consume the same budget? Deviations are flagged."""

from __future__ import annotations


def budget_audit(results) -> dict:
    """Compare what training arms consumed. Arms that share a task must have trained on the same
    examples in the same order (same order hash) for the same number of steps."""
    trained = [r for r in results if r.status == "ok" and r.consumed and r.consumed.get("steps")]
    flags: dict[str, list[str]] = {}
    by_task: dict[str, list] = {}
    for r in trained:
        # Arms of different seeds see different example orders by design: compare within a seed.
        by_task.setdefault(r.arm["task_key"] + ("" if r.arm.get("seed") is None else f", seed {r.arm['seed']}")
                           + _stages_of(r), []).append(r)
        c = r.consumed
        if c.get("stopped_early"):
            flags.setdefault(r.arm["name"], []).append(f"stopped early: {c.get('stop_reason')}")
    for task, group in by_task.items():
        reference = _most_common([(r.consumed["steps"], r.consumed["examples"], r.consumed["order_hash"]) for r in group])
        for r in group:
            c = r.consumed
            if (c["steps"], c["examples"], c["order_hash"]) != reference:
                flags.setdefault(r.arm["name"], []).append(
                    f"consumed {c['steps']} steps / {c['examples']} examples (order {c['order_hash']}), "
                    f"others on '{task}' consumed {reference[0]} / {reference[1]} (order {reference[2]})")
    return {"identical": not flags, "flags": flags}


def _most_common(items):
    return max(set(items), key=items.count)


def _stages_of(result) -> str:
    """Arms with different stage lists consume different budgets by design: compare within one."""
    stages = result.arm.get("stages")
    return f", stages {'+'.join(s['name'] for s in stages)}" if stages else ""
