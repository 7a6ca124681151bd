"""The Python API and the exports: a tiny experiment run through `harness.run`, read back with
`load_run(.../latest)`, compared number by number with results.json; docs/analysis.md executed;
`harness report --format md|csv|latex` parsed back (and the LaTeX compiled when pdflatex exists)."""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import harness
from harness.cli import app
from harness.errors import HarnessError
from tests.conftest import experiment_dict, run_in

DOCS = Path(__file__).resolve().parents[1] / "docs" / "analysis.md"
NAME = "encoder_vs_decoder"  # the experiment name docs/analysis.md reads; here it is the tiny one


@pytest.fixture(scope="module")
def workdir(tiny_models, tiny_data, tmp_path_factory):
    """A folder with two runs of a tiny experiment made by harness.run (the second reuses every
    arm), tracked to a SQLite store of its own."""
    folder = tmp_path_factory.mktemp("api")
    data = experiment_dict(
        tiny_models,
        tiny_data,
        [
            {"method": "zero_shot", "model": "llama"},
            {"method": "full_ft", "model": "bert", "lr": 1e-3},
            {"method": "lora", "model": "llama", "params": {"target_modules": ["no_such_module"]}},  # fails fast
        ],
        name=NAME,
    )
    data["tracking"] = {"uri": f"sqlite:///{folder / 'track.db'}"}
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    first = run_in(folder, path)
    second = run_in(folder, str(path), overrides=["tracking.experiment_name=tiny-again"])  # same arm hashes
    return folder, first, second


def test_run_returns_the_run_and_latest_names_the_newest(workdir):
    folder, first, second = workdir
    assert isinstance(first, harness.Run) and first.run_dir != second.run_dir
    latest = folder / "reports" / NAME / "latest"
    assert latest.is_symlink() and latest.resolve() == second.run_dir
    assert harness.load_run(latest).run_id == second.run_id
    assert harness.load_run(second.run_dir / "results.json").run_id == second.run_id
    # The second run reused the first's completed arms, named by the run id, not by `latest`.
    reused = {a["arm"]["name"]: a["reused_from"] for a in second.arms if a["status"] == "ok"}
    assert reused and set(reused.values()) == {first.run_id}


def test_table_has_one_row_per_arm_with_the_numbers_of_results_json(workdir):
    folder, _, second = workdir
    results = json.loads((second.run_dir / "results.json").read_text())
    table = harness.load_run(folder / "reports" / NAME / "latest").table()
    assert list(table["arm"]) == [a["arm"]["name"] for a in results["arms"]]
    assert list(table["status"]) == ["ok", "ok", "failed"]
    for _, row in table.iterrows():
        arm = next(a for a in results["arms"] if a["arm"]["name"] == row["arm"])
        assert (row["method"], row["model"], row["task"], row["seed"]) == (
            arm["arm"]["method"],
            arm["arm"]["model_key"],
            arm["arm"]["task_key"],
            arm["arm"]["seed"],
        )
        for name, value in arm["metrics"].items():
            assert _same(row[name], value), (row["arm"], name)
        for name, (low, high) in arm["ci"].items():
            assert _same(row[f"{name}_low"], low) and _same(row[f"{name}_high"], high)
        assert _same(row["trainable_params"], arm["metrics"].get("trainable_params"))
    failed = table[table.status == "failed"].iloc[0]
    assert "no_such_module" in failed["error"] and math.isnan(failed["accuracy"])
    ok = table[table.status == "ok"]
    assert (ok.accuracy_low <= ok.accuracy).all() and (ok.accuracy <= ok.accuracy_high).all()


def test_predictions_comparisons_consumed_and_golden(workdir):
    _, _, run = workdir
    items = run.predictions()
    ok = [a for a in run.arms if a["status"] == "ok"]
    assert len(items) == sum(8 for _ in ok)  # eval_examples 8, the failed arm has none
    per_arm = items.groupby("arm")["accuracy"].mean()
    for arm in ok:
        assert per_arm[arm["arm"]["name"]] == pytest.approx(arm["metrics"]["accuracy"])
    assert set(run.predictions("full_ft")["arm"]) == {"full_ft · bert"}
    with pytest.raises(HarnessError, match="matches no arm"):
        run.predictions("nope")
    tests = run.comparisons()
    assert len(tests) == len(run.results["comparisons"]) >= 1
    assert {"metric", "a", "b", "difference", "p_value", "significant"} <= set(tests.columns)
    consumed = run.consumed().set_index("arm")
    trained = next(a for a in ok if a["arm"]["method"] == "full_ft")
    assert consumed.loc["full_ft · bert", "steps"] == trained["consumed"]["steps"] == 2
    assert not consumed["flagged"].any()
    assert run.golden().empty and "item_id" in run.golden().columns


def test_load_runs_concatenates_a_sweep(workdir):
    folder, first, second = workdir
    runs = harness.load_runs(str(folder / "reports" / NAME / "*"))  # `latest` counts once
    assert [r.run_id for r in runs] == [first.run_id, second.run_id]
    table = runs.table()
    assert len(table) == 6 and table.groupby("run_id").size().to_dict() == {first.run_id: 3, second.run_id: 3}
    assert len(runs.predictions()) == 2 * len(second.predictions())
    with pytest.raises(HarnessError, match="no run folder matches"):
        harness.load_runs(str(folder / "nothing" / "*"))


def test_the_analysis_notebook_runs(workdir, capsys):
    folder, _, _ = workdir
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert len(blocks) >= 5
    namespace: dict = {}
    old = os.getcwd()
    os.chdir(folder)
    try:
        for block in blocks:
            exec(compile(block, str(DOCS), "exec"), namespace)  # noqa: S102 - our own documentation
    finally:
        os.chdir(old)
    printed = capsys.readouterr().out
    assert "full_ft · bert" in printed and "| arm" in printed


def test_contradicting_executor_options_and_overrides_on_a_loaded_experiment_are_refused(workdir):
    from harness.planning.experiment_loader import load_experiment

    folder, _, _ = workdir
    with pytest.raises(HarnessError, match="sets the local pool's size"):
        harness.run(folder / "experiment.yaml", jobs=4, executor="ray")
    with pytest.raises(HarnessError, match="not to a loaded Experiment"):
        harness.run(load_experiment(folder / "experiment.yaml"), overrides=["budget.max_steps=1"])


# ----------------------------------------------------------------------------- exports


def report(run_dir: Path, *args: str):
    return CliRunner().invoke(app, ["report", str(run_dir), *args])


def parse_markdown_tables(text: str) -> list[list[dict]]:
    """Read GitHub tables back: each a header row, a delimiter row of dashes, then body rows."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            split = [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in current]
            header, delimiter, body = split[0], split[1], split[2:]
            assert all(re.fullmatch(r":?-{3,}:?", c) for c in delimiter), delimiter
            assert all(len(row) == len(header) for row in body)
            tables.append([dict(zip(header, row)) for row in body])
            current = []
    return tables


def parse_markdown_table(text: str) -> list[dict]:
    return parse_markdown_tables(text)[0]


def test_markdown_export_is_a_github_table_with_cis_and_the_best_marked(workdir):
    _, _, run = workdir
    result = report(run.run_dir, "--format", "md")
    assert result.exit_code == 0, result.output
    rows = {r["arm"]: r for r in parse_markdown_table(result.output)}
    assert set(rows) == {a["arm"]["name"] for a in run.arms}
    ok = [a for a in run.arms if a["status"] == "ok"]
    for arm in ok:
        cell = rows[arm["arm"]["name"]]["accuracy ↑"].strip("*")
        low, high = arm["ci"]["accuracy"]
        assert cell == f"{arm['metrics']['accuracy']:.3f} [{low:.3f}, {high:.3f}]"
    assert rows["lora · llama"]["status"].startswith("failed")
    # Latency: the lower value is the better one and is the one in bold, among the arms that may
    # be ranked; an arm flagged diverged or collapsed (tiny models often predict one label) never is.
    rankable = [a for a in ok if not a.get("health")]
    for arm in ok:
        if arm.get("health"):
            assert not any(str(cell).startswith("**") for cell in rows[arm["arm"]["name"]].values())
    if len(rankable) >= 2:
        fast = min(rankable, key=lambda a: a["metrics"]["latency_p50_ms"])["arm"]["name"]
        slow = max(rankable, key=lambda a: a["metrics"]["latency_p50_ms"])["arm"]["name"]
        assert rows[fast]["latency_p50_ms ↓"].startswith("**") and not rows[slow]["latency_p50_ms ↓"].startswith("**")


def test_markdown_export_has_the_pairwise_tests_with_intervals_and_p_methods(workdir):
    _, _, run = workdir
    result = report(run.run_dir, "--format", "md")
    assert result.exit_code == 0, result.output
    arms_table, tests = parse_markdown_tables(result.output)
    primary = [c for c in run.results["comparisons"] if c["metric"] == "accuracy"]
    assert len(tests) == len(primary) >= 1
    for row in tests:
        assert row["metric"] == "accuracy" and row["test"] == "McNemar exact" and row["p by"] == "exact"
        assert re.fullmatch(r"[+-]\d\.\d{3} \\?\[[+-]\d\.\d{3}, [+-]\d\.\d{3}\\?\]", row["difference [95% CI]"])
    assert "Statistically tied for first on accuracy" in result.output or "can be ranked" in result.output
    assert "sensitivity on sentiment" in result.output
    assert "exact McNemar power" in result.output or "normal approximation" in result.output
    only = report(run.run_dir, "--format", "md", "--table", "comparisons")
    assert len(parse_markdown_tables(only.output)) == 1 and "Pairwise tests" in only.output


def test_csv_export_of_the_comparisons_has_every_test(workdir, tmp_path):
    _, _, run = workdir
    target = tmp_path / "tests.csv"
    result = report(run.run_dir, "--format", "csv", "--table", "comparisons", "-o", str(target))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(target)
    assert len(frame) == len(run.results["comparisons"])
    for (_, row), c in zip(frame.iterrows(), run.results["comparisons"]):
        assert (row["a"], row["b"], row["metric"], row["p_method"]) == (c["a"], c["b"], c["metric"], c["p_method"])
        assert row["ci_low"] == pytest.approx(c["ci"][0]) and row["ci_high"] == pytest.approx(c["ci"][1])
    both = report(run.run_dir, "--format", "csv", "--table", "both")
    assert both.exit_code == 2 and "not one of arms or comparisons for --format csv" in both.output


def test_csv_export_round_trips_through_pandas(workdir, tmp_path):
    _, _, run = workdir
    target = tmp_path / "table.csv"
    result = report(run.run_dir, "--format", "csv", "-o", str(target))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(target)
    table = run.table().set_index("arm")
    assert list(frame["arm"]) == list(table.index)
    for column in ("accuracy", "accuracy_low", "accuracy_high", "latency_p50_ms", "trainable_params"):
        assert [_same(a, b) for a, b in zip(frame[column], table[column])] == [True] * len(frame), column
    flagged = {a["arm"]["name"] for a in run.arms if a.get("health")}
    best = frame.set_index("arm")["best"].fillna("")
    assert all(not best[name] for name in flagged)  # a diverged or collapsed arm is never best
    rankable = table[(table.status == "ok") & ~table.index.isin(flagged)]
    if len(rankable) >= 2:
        assert "latency_p50_ms" in best[rankable["latency_p50_ms"].idxmin()].split(";")
    assert pd.read_csv(io.StringIO(frame.to_csv(index=False))).equals(frame)


def test_latex_export_is_booktabs_escaped_and_compiles(workdir, tmp_path):
    _, _, run = workdir
    result = report(run.run_dir, "--format", "latex")
    assert result.exit_code == 0, result.output
    tex = result.output
    # Structure: one tabular, booktabs rules in order, a row per arm with as many cells as columns.
    # two tables: the arms, then the pairwise tests
    assert tex.count(r"\begin{tabular}") == 2 and tex.count(r"\end{tabular}") == 2
    assert "Pairwise tests" in tex and "McNemar exact" in tex
    tex_arms = tex[: tex.index(r"\end{tabular}")]
    assert tex_arms.index(r"\toprule") < tex_arms.index(r"\midrule") < tex_arms.index(r"\bottomrule")
    spec = re.search(r"\\begin\{tabular\}\{([lr]+)\}", tex_arms).group(1)
    body = tex_arms[tex_arms.index(r"\midrule") + len(r"\midrule") : tex_arms.index(r"\bottomrule")]
    rows = [r for r in body.split(r"\\") if r.strip()]
    assert len(rows) == len(run.arms)
    assert all(len(re.split(r"(?<!\\)&", r)) == len(spec) for r in rows)
    assert r"full\_ft" in tex and "full_ft" not in tex.replace(r"full\_ft", "")  # underscores escaped
    rankable = [a for a in run.arms if a["status"] == "ok" and not a.get("health")]  # flagged arms are never best
    assert (r"\bfseries" in tex) == bool(rankable) and r"$\uparrow$" in tex
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        pytest.skip(
            "no pdflatex here: the LaTeX was checked structurally only (apt-get install texlive-latex-recommended)"
        )
    (tmp_path / "table.tex").write_text(tex)
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n\\input{table.tex}\n\\end{document}\n"
    )
    done = subprocess.run(
        [pdflatex, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


def test_report_refuses_an_unknown_format_and_a_folder_without_results(workdir, tmp_path):
    _, _, run = workdir
    bad = report(run.run_dir, "--format", "docx")
    assert bad.exit_code == 2 and "--format 'docx' is not one of html, md, csv, latex" in bad.output
    missing = report(tmp_path, "--format", "md")
    assert missing.exit_code == 2 and "no results.json" in missing.output


def _same(a, b) -> bool:
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
        return (a is None or (isinstance(a, float) and math.isnan(a))) and (
            b is None or (isinstance(b, float) and math.isnan(b))
        )
    return float(a) == pytest.approx(float(b), rel=1e-9, abs=1e-12)


def test_latest_is_a_file_where_links_are_refused(workdir, tmp_path, monkeypatch):
    from harness.results.arm_result import point_latest

    _, _, run = workdir
    copy = tmp_path / "reports" / NAME / run.run_id
    shutil.copytree(run.run_dir, copy)

    def refuse(*args, **kwargs):
        raise OSError("symlinks not supported")

    monkeypatch.setattr(os, "symlink", refuse)
    point_latest(copy)
    latest = copy.parent / "latest"
    assert latest.is_file() and not latest.is_symlink() and latest.read_text().strip() == run.run_id
    assert harness.load_run(latest).table()["arm"].tolist() == run.table()["arm"].tolist()
    assert [r.run_id for r in harness.load_runs(str(copy.parent / "*"))] == [run.run_id]  # counted once
