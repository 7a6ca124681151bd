"""Golden results of a finished run, for people: flat rows for reports, one console line per arm."""

from __future__ import annotations

from harness.errors import safe


def golden_rows(results: dict) -> list[dict]:
    """A flat list over a run's results.json, for reports: {set, arm, item_id, passed, must, ...}."""
    rows = []
    for arm in results.get("arms", []):
        for name, entry in (arm.get("golden") or {}).items():
            for item in entry.get("items", []):
                rows.append(
                    {
                        "set": name,
                        "arm": arm["arm"]["name"],
                        "item_id": item["id"],
                        "passed": item["passed"],
                        "must": item["must"],
                        "expected": item["expected"],
                        "actual": item["actual"],
                        "failures": item["failures"],
                    }
                )
    return rows


def print_golden_summary(results: dict, console) -> None:
    """One line per arm and golden set: the pass rate and the failing `must` items."""
    for arm in results.get("arms", []):
        for name, entry in (arm.get("golden") or {}).items():
            if entry.get("error"):
                console.print(
                    f"[red]golden {safe(name)}[/] {safe(arm['arm']['name'])}: {safe(entry['error'])}", highlight=False
                )
                continue
            must = entry.get("must_failed") or []
            colour = "red" if must else "green"
            console.print(
                f"[{colour}]golden {safe(name)}@{safe(entry.get('version'))}[/] {safe(arm['arm']['name'])}: "
                f"{entry['passed']}/{entry['total']} items pass ({entry['pass_rate']:.0%})"
                + (f"; must items failing: {safe(', '.join(must))}" if must else ""),
                highlight=False,
            )
