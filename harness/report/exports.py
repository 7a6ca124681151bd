"""`harness report RUN --format md|csv|latex`: the comparison table where analysts paste it.

Markdown for PR comments and READMEs, CSV for spreadsheets, LaTeX (booktabs) for papers, each
written by pandas' own writers (DataFrame.to_markdown through tabulate, to_csv, Styler.to_latex).
Every metric comes with its 95% bootstrap CI where the run computed one. Marked (bold; a `best`
column in CSV): on a metric the run tested pairwise, the arms statistically tied for first (the
best and every arm no corrected test separates from it, harness.report.pairwise); on a metric
never tested (costs), the best value by the metric's declared direction.

The second table, `--table comparisons`, is the pairwise tests of each task's primary metric
(every test in CSV): each difference with its interval, raw and adjusted p with how p was
obtained, the test, and the detectable difference of that test.
"""

from __future__ import annotations

from harness.eval import stats
from harness.eval.compare import sensitivity_sentence
from harness.eval.metrics import METRICS
from harness.report import pairwise
from harness.report.cells import format_value, over_seeds, primary_metric, unit_of
from harness.report.console import COST_COLUMNS, quality_names

FORMATS = ("html", "md", "csv", "latex")
TABLES = ("arms", "comparisons", "both")
IDENTITY = ["arm", "task", "method", "model", "status"]


def columns_of(arms: list[dict]) -> list[str]:
    """The metrics the table shows: the quality metrics the arms report, then the usual costs."""
    present = {n for a in arms for n, v in a["metrics"].items() if v is not None}
    return quality_names(arms) + [c for c in COST_COLUMNS if c in present]


def best_cells(arms: list[dict], names: list[str], results: dict | None = None) -> set[tuple[str, str]]:
    """(arm name, metric) of every marked cell: harness.report.pairwise.marked_cells."""
    return pairwise.marked_cells(arms, names, results)


def numeric_frame(results: dict):
    """One row per arm: identity, then per metric its value, `_low`, `_high`; `best` lists the
    metrics on which the arm is best for its task (semicolon-separated)."""
    import pandas as pd

    arms = results["arms"]
    names = columns_of(arms)
    best = best_cells(arms, names, results)
    rows = []
    for arm in arms:
        a, ci = arm["arm"], arm.get("ci") or {}
        row = {
            "arm": a["name"],
            "task": a.get("task_key"),
            "method": a.get("method"),
            "model": a.get("model_key"),
            "status": arm["status"],
        }
        for name in names:
            low, high = ci.get(name) or (None, None)
            row.update({name: arm["metrics"].get(name), f"{name}_low": low, f"{name}_high": high})
        row["best"] = ";".join(n for n in names if (a["name"], n) in best)
        rows.append(row)
    with_ci = [n for n in names if any((a.get("ci") or {}).get(n) for a in arms)]
    columns = [c for n in names for c in ((n, f"{n}_low", f"{n}_high") if n in with_ci else (n,))]
    return pd.DataFrame(rows, columns=IDENTITY + columns + ["best"])


def _cell(arm: dict, name: str) -> str:
    value = arm["metrics"].get(name)
    text = format_value(value, unit_of(name))
    low_high = (arm.get("ci") or {}).get(name)
    if value is not None and low_high:
        text += f" [{format_value(low_high[0], unit_of(name))}, {format_value(low_high[1], unit_of(name))}]"
    return text


def _header(name: str) -> str:
    return f"{name} {'↑' if METRICS[name].higher_is_better else '↓'}" if name in METRICS else name


def display_rows(results: dict) -> tuple[list[str], list[list[str]], set[tuple[int, int]]]:
    """(headers, rows of text, (row, column) of best cells) shared by Markdown and LaTeX."""
    arms = results["arms"]
    names = columns_of(arms)
    best = best_cells(arms, names, results)
    headers = ["arm", "task", "status"] + [_header(n) for n in names]
    rows, marked = [], set()
    for i, arm in enumerate(arms):
        status = arm["status"] if arm["status"] != "failed" else f"failed: {(arm.get('error') or '')[:60]}"
        rows.append([arm["arm"]["name"], arm["arm"].get("task_key") or "", status] + [_cell(arm, n) for n in names])
        marked |= {(i, 3 + j) for j, n in enumerate(names) if (arm["arm"]["name"], n) in best}
    return headers, rows, marked


def to_markdown(results: dict, table: str = "both") -> str:
    """GitHub tables (the arms, then the pairwise tests), a title line above and legends below."""
    parts = []
    if table in ("arms", "both"):
        headers, rows, marked = display_rows(results)
        parts += [_title(results), "", _md_table(headers, rows, marked, left=3), "", _legend(), ""]
    if table in ("comparisons", "both"):
        headers, rows, marked = comparison_rows(results)
        parts += [f"Pairwise tests — {_title(results)}", ""]
        parts += (
            [_md_table(headers, rows, marked, left=3), "", *comparison_notes(results), ""]
            if rows
            else [
                "No pairwise test was computed for this run.",
                "",
            ]
        )
    return "\n".join(parts)


def _md_table(headers: list[str], rows: list[list[str]], marked: set, left: int) -> str:
    import pandas as pd

    cells = [[_md(text, bold=(i, j) in marked) for j, text in enumerate(row)] for i, row in enumerate(rows)]
    frame = pd.DataFrame(cells, columns=[_md(h) for h in headers])
    align = ["left"] * left + ["right"] * (len(headers) - left)
    return frame.to_markdown(index=False, tablefmt="github", colalign=align, disable_numparse=True)


def to_csv(results: dict, table: str = "arms") -> str:
    """One table per CSV file: the arms, or (`comparisons`) every pairwise test."""
    return (comparison_frame(results) if table == "comparisons" else numeric_frame(results)).to_csv(index=False)


# ----------------------------------------------------------------------------- the pairwise tests


def comparison_frame(results: dict):
    """Every pairwise test of the run, one row each, in numbers: the interval as `ci_low`/`ci_high`
    and `ci_method`; `p_method` says how p was obtained; `tied_for_first` lists, on each task's
    tested metrics, whether each arm of the pair is in the group tied for first."""
    import pandas as pd

    columns = (
        "task metric a b difference ci_low ci_high ci_method p_value p_adjusted p_method correction family_size "
        "significant test seeds n a_tied_for_first b_tied_for_first"
    ).split()
    tied = _tied_groups(results)
    rows = []
    for c in results.get("comparisons") or []:
        low, high = c.get("ci") or (None, None)
        group = tied.get((c.get("task"), c["metric"]), set())
        rows.append(
            {
                **{k: c.get(k) for k in columns},
                "ci_low": low,
                "ci_high": high,
                "seeds": ";".join(map(str, c["seeds"])) if c.get("seeds") else None,
                "a_tied_for_first": c["a"] in group,
                "b_tied_for_first": c["b"] in group,
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _tied_groups(results: dict) -> dict[tuple, set[str]]:
    out = {}
    arms = results.get("arms") or []
    for task in dict.fromkeys(a["arm"].get("task_key") for a in arms):
        pooled = over_seeds([a for a in arms if a["arm"].get("task_key") == task], results.get("seed_summary"))
        for metric in {c["metric"] for c in results.get("comparisons") or [] if c.get("task", task) == task}:
            family = pairwise.family_of(results.get("comparisons"), task, metric)
            ranked = pairwise.ranked_arms(pooled, metric) if metric in METRICS else []
            out[(task, metric)] = {a["arm"]["name"] for a in pairwise.tied_for_first(ranked, family)}
    return out


def _primary_views(results: dict) -> list[tuple[str, dict]]:
    arms = results.get("arms") or []
    tasks = (results.get("experiment") or {}).get("tasks") or {}
    out = []
    for task in dict.fromkeys(a["arm"].get("task_key") for a in arms):
        group = [a for a in arms if a["arm"].get("task_key") == task]
        metric = primary_metric(group, (tasks.get(task) or {}).get("type", "classification"))
        shown = pairwise.view(
            task,
            over_seeds(group, results.get("seed_summary")),
            metric,
            results.get("comparisons"),
            results.get("correction"),
        )
        if shown:
            out.append((task, shown))
    return out


def comparison_rows(results: dict) -> tuple[list[str], list[list[str]], set[tuple[int, int]]]:
    """(headers, rows, bold cells: none) of the pairwise tests of each task's primary metric, for
    Markdown and LaTeX; a * after the adjusted p marks the pairs significant after correction."""
    headers = ["task", "metric", "pair", "difference [95% CI]", "p", "adjusted p", "p by", "test"]
    rows, marked = [], set()
    for task, shown in _primary_views(results):
        for r in shown["rows"]:
            rows.append(
                [
                    task,
                    shown["metric"],
                    f"{r['first']} − {r['second']}",
                    f"{r['difference']} {r['ci']}",
                    r["p"],
                    r["p_adjusted"] + (" *" if r["significant"] else ""),
                    r["method"],
                    r["test"],
                ]
            )
    return headers, rows, marked


def comparison_notes(results: dict) -> list[str]:
    """The lines under the comparisons table: the tied group, the sensitivity, the legend."""
    lines = []
    for task, shown in _primary_views(results):
        lines.append(
            f"Statistically tied for first on {shown['metric']} ({task}): {', '.join(shown['tied'])} "
            f"(no {'corrected ' if shown['correction'] else ''}test separates them from the best)."
            if shown["tied"]
            else f"No arm on {task} can be ranked on {shown['metric']} (diverged or collapsed arms never are)."
        )
        sensitivity = (results.get("sensitivity") or {}).get(task)
        if sensitivity:
            lines.append(sensitivity_sentence(task, sensitivity) + ".")
    correction = results.get("correction")
    lines.append(
        "Differences read higher-ranked minus lower-ranked arm; * adjusted p below "
        f"{results.get('alpha', stats.ALPHA)} ({correction or 'no'} correction per task and metric). "
        "p by: exact (McNemar's binomial), bootstrap (share of resamples), normal approx. (the bootstrap's "
        "normal tail, used where too few resamples are as extreme; shown no finer than < 1e-4), "
        "t, seeds x items (variance components of seeds and items, Satterthwaite df)."
    )
    return lines


def to_latex(results: dict, table: str = "both") -> str:
    """booktabs tables (\\toprule/\\midrule/\\bottomrule): need \\usepackage{booktabs}; every text
    a user or a dataset wrote is escaped for LaTeX, the marked values are bold. The arms, then
    the pairwise tests (a second table, its notes in the caption)."""
    parts = []
    if table in ("arms", "both"):
        parts.append(_latex_table(*display_rows(results), caption=_title(results, markdown=False), left=3))
    if table in ("comparisons", "both"):
        headers, rows, marked = comparison_rows(results)
        if rows:
            caption = f"Pairwise tests, {_title(results, markdown=False)}. " + " ".join(comparison_notes(results))
            parts.append(_latex_table(headers, rows, marked, caption=caption, left=4))
    return "\n".join(parts)


def _latex_table(headers, rows, marked, *, caption: str, left: int) -> str:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=[_latex_header(h) for h in headers])  # headers are LaTeX already
    styler = frame.style.hide(axis="index").format(escape="latex")
    styler = styler.apply(
        lambda _: pd.DataFrame(
            [["font-weight: bold" if (i, j) in marked else "" for j in range(len(headers))] for i in range(len(rows))],
            index=frame.index,
            columns=frame.columns,
        ),
        axis=None,
    )
    return styler.to_latex(
        hrules=True,
        convert_css=True,
        column_format="l" * left + "r" * (len(headers) - left),
        caption=_latex_escape(caption),
        position="htbp",
    )


def _latex_header(name: str) -> str:
    if name.endswith((" ↑", " ↓")):
        return _latex_escape(name[:-2]) + (r" $\uparrow$" if name.endswith("↑") else r" $\downarrow$")
    return _latex_escape(name)


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _latex_escape(text: str) -> str:
    """The characters Styler.format(escape="latex") escapes in cells, for the caption and headers."""
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _title(results: dict, markdown: bool = True) -> str:
    name, run_id = (results.get("experiment") or {}).get("name", ""), results.get("run_id", "")
    return f"**{_md(name)}** — run {_md(run_id)}" if markdown else f"{name}: run {run_id}"


def _legend() -> str:
    return (
        "**Bold**: on a metric tested pairwise, the arms statistically tied for first (no corrected test "
        "separates them from the best); on an untested metric (costs), the best value "
        "(↑ higher is better, ↓ lower is better); [low, high]: 95% confidence interval."
    )


def _md(text: str, bold: bool = False) -> str:
    """A table cell: pipes and newlines would break the row; markup characters are escaped."""
    text = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    for ch in "*`<>":
        text = text.replace(ch, "\\" + ch)
    return f"**{text}**" if bold and text not in ("", "–") else text
