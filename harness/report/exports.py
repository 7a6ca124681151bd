"""`harness report RUN --format md|csv|latex`: the comparison table where analysts paste it.

Markdown for PR comments and READMEs, CSV for spreadsheets, LaTeX (booktabs) for papers, each
written by pandas' own writers (DataFrame.to_markdown through tabulate, to_csv, Styler.to_latex).
Every metric comes with its 95% bootstrap CI where the run computed one, and the best value of
each metric among the arms of a task is marked (bold; a `best` column in CSV), by the metric's
declared direction, exactly as the HTML page and the console mark it.
"""

from __future__ import annotations

from harness.eval.metrics import METRICS
from harness.report.console import COST_COLUMNS, quality_names
from harness.report.view import best_values, format_value, unit_of

FORMATS = ("html", "md", "csv", "latex")
IDENTITY = ["arm", "task", "method", "model", "status"]


def columns_of(arms: list[dict]) -> list[str]:
    """The metrics the table shows: the quality metrics the arms report, then the usual costs."""
    present = {n for a in arms for n, v in a["metrics"].items() if v is not None}
    return quality_names(arms) + [c for c in COST_COLUMNS if c in present]


def best_cells(arms: list[dict], names: list[str]) -> set[tuple[str, str]]:
    """(arm name, metric) of every best value, per task: arms on different tasks never compete."""
    best = set()
    for task in dict.fromkeys(a["arm"].get("task_key") for a in arms):
        group = [a for a in arms if a["arm"].get("task_key") == task]
        for name, value in best_values(group, names).items():
            best |= {(a["arm"]["name"], name) for a in group if a["status"] == "ok" and a["metrics"].get(name) == value}
    return best


def numeric_frame(results: dict):
    """One row per arm: identity, then per metric its value, `_low`, `_high`; `best` lists the
    metrics on which the arm is best for its task (semicolon-separated)."""
    import pandas as pd

    arms = results["arms"]
    names = columns_of(arms)
    best = best_cells(arms, names)
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
    best = best_cells(arms, names)
    headers = ["arm", "task", "status"] + [_header(n) for n in names]
    rows, marked = [], set()
    for i, arm in enumerate(arms):
        status = arm["status"] if arm["status"] != "failed" else f"failed: {(arm.get('error') or '')[:60]}"
        rows.append([arm["arm"]["name"], arm["arm"].get("task_key") or "", status] + [_cell(arm, n) for n in names])
        marked |= {(i, 3 + j) for j, n in enumerate(names) if (arm["arm"]["name"], n) in best}
    return headers, rows, marked


def to_markdown(results: dict) -> str:
    """A GitHub table (best in bold), a title line above it and a legend below."""
    import pandas as pd

    headers, rows, marked = display_rows(results)
    cells = [[_md(text, bold=(i, j) in marked) for j, text in enumerate(row)] for i, row in enumerate(rows)]
    frame = pd.DataFrame(cells, columns=[_md(h) for h in headers])
    align = ["left"] * 3 + ["right"] * (len(headers) - 3)
    table = frame.to_markdown(index=False, tablefmt="github", colalign=align, disable_numparse=True)
    return "\n".join([_title(results), "", table, "", _legend(), ""])


def to_csv(results: dict) -> str:
    return numeric_frame(results).to_csv(index=False)


def to_latex(results: dict) -> str:
    """A booktabs table (\\toprule/\\midrule/\\bottomrule): needs \\usepackage{booktabs}; every text
    a user or a dataset wrote is escaped for LaTeX, the best values are bold."""
    import pandas as pd

    headers, rows, marked = display_rows(results)
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
        column_format="lll" + "r" * (len(headers) - 3),
        caption=_latex_escape(_title(results, markdown=False)),
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
        "Best value per metric and task in **bold** (↑ higher is better, ↓ lower is better); "
        "[low, high]: 95% bootstrap confidence interval."
    )


def _md(text: str, bold: bool = False) -> str:
    """A table cell: pipes and newlines would break the row; markup characters are escaped."""
    text = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    for ch in "*`<>":
        text = text.replace(ch, "\\" + ch)
    return f"**{text}**" if bold and text not in ("", "–") else text
