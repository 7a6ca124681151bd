"""Golden results of a finished run, for people: one console line per arm and golden set (the flat
rows of reports and the API are harness.results.arm_folder.golden_rows)."""

from __future__ import annotations

from harness.errors import safe


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
