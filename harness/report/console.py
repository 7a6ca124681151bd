"""The plain table printed at the end of a run: every arm, its metrics and what it consumed."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from harness.errors import safe
from harness.eval.compare import summary_lines
from harness.eval.metrics import METRICS
from harness.results.audit import rankable

COST_COLUMNS = ["peak_memory_mb", "train_seconds", "latency_p50_ms", "latency_p95_ms", "trainable_params"]


def best_by_metric(arms: list[dict], names: list[str]) -> dict[str, float]:
    """The best value of each metric among rankable arms, by the metric's declared direction."""
    best = {}
    for name in names:
        values = [a["metrics"].get(name) for a in arms if rankable(a) and a["metrics"].get(name) is not None]
        if values:
            best[name] = max(values) if METRICS[name].higher_is_better else min(values)
    return best


def quality_names(arms: list[dict]) -> list[str]:
    seen = [n for a in arms for n in a["metrics"] if n in METRICS and METRICS[n].kind == "quality"]
    return list(dict.fromkeys(seen))


def fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and abs(value) < 10:
        return f"{value:.3f}"
    if isinstance(value, (int, float)) and abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def results_table(results: dict) -> Table:
    arms = results["arms"]
    quality = quality_names(arms)
    metric_cols = quality + COST_COLUMNS
    best = best_by_metric(arms, metric_cols)
    flags = results.get("budget_audit", {}).get("flags", {})
    table = Table(
        title=f"{safe(results['experiment']['name'])} — run {safe(results.get('run_id', ''))}", show_lines=False
    )
    table.add_column("arm")
    table.add_column("status")
    for name in metric_cols:
        arrow = "↑" if METRICS[name].higher_is_better else "↓"
        table.add_column(f"{name} {arrow}", justify="right")
    for col in ("steps", "examples", "tokens"):
        table.add_column(col, justify="right")
    for arm in arms:
        m, c = arm["metrics"], arm.get("consumed") or {}
        cells = []
        for name in metric_cols:
            text = fmt(m.get(name))
            marked = name in best and m.get(name) == best[name] and rankable(arm)
            cells.append(f"[bold green]{text}[/]" if marked else text)
        status = (
            arm["status"] if arm["status"] != "failed" else f"[red]failed[/]: {safe((arm.get('error') or '')[:60])}"
        )
        if arm["arm"]["name"] in flags:
            status += " [yellow]⚑[/]"
        if arm.get("health"):
            status += " [red]⚑ " + safe(", ".join(h.split(":")[0] for h in arm["health"])) + "[/]"
        table.add_row(
            safe(arm["arm"]["name"]), status, *cells, fmt(c.get("steps")), fmt(c.get("examples")), fmt(c.get("tokens"))
        )
    return table


def print_results(results: dict, console: Console | None = None) -> None:
    console = console or Console()
    console.print(results_table(results))
    for name, reasons in results.get("budget_audit", {}).get("flags", {}).items():
        console.print(f"[yellow]⚑ budget[/] {safe(name)}: {safe('; '.join(reasons))}", highlight=False)
    for arm in results.get("arms", []):
        for reason in arm.get("health") or []:
            console.print(
                f"[red]⚑ {safe(reason.split(':')[0])}[/] {safe(arm['arm']['name'])}: "
                f"{safe(reason.split(':', 1)[-1].strip())} (never ranked best)",
                highlight=False,
            )

    for line in summary_lines(results):
        console.print(line, markup=False, highlight=False)
