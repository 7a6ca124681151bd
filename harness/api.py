"""The Python API: run an experiment as `harness run` does, and read finished runs as pandas tables.

    import harness
    run = harness.run("experiments/encoder_vs_decoder.yaml", overrides=["budget.max_steps=4"])
    run.table()                       # one row per arm: metrics, their CIs, status, method, model...
    harness.load_run("reports/encoder_vs_decoder/latest").comparisons()
    harness.load_runs("reports/*/2026*").table()   # a sweep across runs in one frame

Everything here reads results.json and the arms' predictions.jsonl; nothing is recomputed, so
the numbers are the ones the console, the HTML page, MLflow and the gate show.
"""

from __future__ import annotations

import glob as globbing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from harness.errors import HarnessError
from harness.results.arm_folder import arm_predictions, golden_rows
from harness.results.arm_result import LATEST

if TYPE_CHECKING:  # pandas loads in ~0.5 s: only when a table is asked for
    import pandas as pd

ARM_COLUMNS = [
    "experiment",
    "run_id",
    "arm",
    "task",
    "method",
    "model",
    "model_path",
    "kind",
    "seed",
    "status",
    "error",
    "trainable_params",
]


# ----------------------------------------------------------------------------- running


def run(
    path_or_experiment,
    overrides: list[str] | None = None,
    jobs: int | None = None,
    track: bool = True,
    *,
    force: bool = False,
    only: list[str] | None = None,
    executor: str | None = None,
    address: str | None = None,
    reporter: Callable[[Path], None] | None = None,
) -> "Run":
    """Plan, train and evaluate every arm, as `harness run FILE --set ...` does; returns the finished Run.

    path_or_experiment: an experiment YAML path or an already loaded `harness.config.schema.Experiment`.
    overrides: `--set` items such as "budget.max_steps=10" (only with a path).
    jobs: arms at once on this machine (default: one per visible GPU, 1 on CPU).
    executor: "local" or "ray" (default: the YAML's `executor:`); address: the Ray cluster.
    track: log to MLflow as the YAML's `tracking:` says (False: never).
    reporter: called with the run folder to write the HTML page (default: write it, warn on failure).
    A failed arm does not raise: it is a row with status "failed". Bad input raises HarnessError."""
    from harness.execution.executors import make_executor
    from harness.execution.runner import Runner
    from harness.planning.plan import plan

    experiment = _experiment(path_or_experiment, overrides)
    arms = plan(experiment)
    if only:
        arms = [a for a in arms if any(o in a.name for o in only)]
        if not arms:
            raise HarnessError(f"--only {only} matches no arm", fix="see `harness validate` for the arm names")
    runner = Runner(
        experiment,
        arms,
        output_root=Path(experiment.output_dir),
        force=force,
        tracker=tracker_for(experiment, track),
        reporter=reporter or _write_html_quietly,
        executor=make_executor(experiment, name=executor, jobs=jobs, address=address, fresh=force),
    )
    return load_run(runner.run())


def _experiment(path_or_experiment, overrides):
    from harness.config.schema import Experiment
    from harness.planning.experiment_loader import load_experiment

    if isinstance(path_or_experiment, Experiment):
        if overrides:
            raise HarnessError(
                "overrides apply to an experiment file, not to a loaded Experiment",
                fix="pass the YAML path, or change the Experiment with model_copy(update=...)",
            )
        return path_or_experiment
    return load_experiment(Path(path_or_experiment), overrides)


def tracker_for(experiment, track: bool = True):
    """MLflow tracking unless track=False or `tracking: {enabled: false}`; see harness/tracking/mlflow_tracker.py."""
    if not track or not experiment.tracking.enabled:
        return None
    from harness.tracking.mlflow_tracker import MlflowTracker

    return MlflowTracker(uri=experiment.tracking.uri, experiment_name=experiment.tracking.experiment_name)


def _write_html_quietly(run_dir: Path) -> None:
    from harness.report.html import write_html_report

    try:
        write_html_report(run_dir)
    except Exception as error:  # noqa: BLE001 - the page is a view; the run's results stand without it
        warnings.warn(f"could not write the HTML report of {run_dir} ({type(error).__name__}: {error})", stacklevel=2)


# ----------------------------------------------------------------------------- the latest run


def resolve_run_dir(run_dir) -> Path:
    """A run folder, or reports/<experiment>/latest (link or file), or a results.json path."""
    path = Path(run_dir)
    if path.name == "results.json" and path.is_file():
        path = path.parent
    if path.is_file() and path.name == LATEST:
        path = path.parent / path.read_text(encoding="utf-8").strip()
    if not (path / "results.json").is_file():
        raise HarnessError(
            f"no results.json in {run_dir}",
            fix="pass a reports/<experiment>/<run-id> folder or reports/<experiment>/latest",
        )
    return path.resolve()


# ----------------------------------------------------------------------------- reading runs


def load_run(run_dir) -> "Run":
    """The run in a reports/<experiment>/<run-id> folder (or .../latest)."""
    from harness.results.arm_result import read_run_results

    path = resolve_run_dir(run_dir)
    # the checked reader: a truncated or malformed results.json is one sentence (exit 2), not a traceback
    return Run(path, read_run_results(path, needs=("name", "task_key")))


def load_runs(pattern: str) -> "Runs":
    """Every run whose folder (or results.json) matches the glob, oldest first; a `latest` link
    and the run it names count once."""
    seen, runs = set(), []
    for match in sorted(globbing.glob(str(pattern))):
        path = Path(match)
        if path.name == "results.json":
            path = path.parent
        if not (path / "results.json").is_file() and not (path.name == LATEST and path.is_file()):
            continue
        resolved = resolve_run_dir(path)
        if resolved not in seen:
            seen.add(resolved)
            runs.append(load_run(resolved))
    if not runs:
        raise HarnessError(f"no run folder matches {pattern}", fix="use a glob such as reports/<experiment>/*")
    return Runs(runs)


@dataclass
class Run:
    """One finished (or interrupted) run: its folder and its results.json."""

    run_dir: Path
    results: dict

    @property
    def run_id(self) -> str:
        return self.results.get("run_id") or self.run_dir.name

    @property
    def experiment(self) -> str:
        return (self.results.get("experiment") or {}).get("name", "")

    @property
    def arms(self) -> list[dict]:
        return self.results.get("arms", [])

    def __repr__(self) -> str:
        return f"Run({self.experiment!r}, {self.run_id!r}, {len(self.arms)} arm(s))"

    def table(self) -> "pd.DataFrame":
        """One row per arm: who it is (method, model, task, seed, status), then each metric with
        `<metric>_low`/`<metric>_high` from its 95% bootstrap CI where one was computed."""
        import pandas as pd

        from harness.eval.metrics import METRICS

        rows = []
        for arm in self.arms:
            row = self._identity(arm)
            row["trainable_params"] = arm["metrics"].get("trainable_params")
            for name, value in arm["metrics"].items():
                row[name] = value
                low_high = (arm.get("ci") or {}).get(name)
                if low_high:
                    row[f"{name}_low"], row[f"{name}_high"] = low_high
            rows.append(row)
        frame = pd.DataFrame(rows, columns=_ordered(rows, ARM_COLUMNS))
        known = [n for n in METRICS if n in frame.columns]
        metric_cols = [
            c
            for n in known + sorted(set(frame.columns) - set(ARM_COLUMNS) - set(METRICS) - _ci_cols(frame))
            for c in (n, f"{n}_low", f"{n}_high")
            if c in frame.columns
        ]
        return frame[ARM_COLUMNS + [c for c in metric_cols if c not in ARM_COLUMNS]]

    def comparisons(self) -> "pd.DataFrame":
        """The paired tests of results.json, one row per metric and pair of arms: difference,
        p_value (and the adjusted p-value and correction when the run recorded them), significant."""
        import pandas as pd

        rows = [
            {"experiment": self.experiment, "run_id": self.run_id, **c} for c in self.results.get("comparisons", [])
        ]
        return pd.DataFrame(
            rows,
            columns=_ordered(
                rows, ["experiment", "run_id", "metric", "a", "b", "difference", "p_value", "significant"]
            ),
        )

    def predictions(self, arm: str | None = None) -> "pd.DataFrame":
        """One row per test item and arm: id, input, prediction, reference and each per-item score
        (e.g. accuracy 0/1) as a column. `arm` keeps the arms whose name, slug or hash it names
        (a part of the name is enough when it matches one arm)."""
        import pandas as pd

        rows = []
        for entry in self._select(arm):
            identity = {
                k: v
                for k, v in self._identity(entry).items()
                if k in ("experiment", "run_id", "arm", "task", "method", "model", "seed")
            }
            for item in arm_predictions(self.run_dir, entry):
                scores = item.pop("scores", None) or {}
                rows.append({**identity, **item, **scores})
        return pd.DataFrame(
            rows,
            columns=_ordered(
                rows,
                [
                    "experiment",
                    "run_id",
                    "arm",
                    "task",
                    "method",
                    "model",
                    "seed",
                    "id",
                    "input",
                    "prediction",
                    "reference",
                ],
            ),
        )

    def consumed(self) -> "pd.DataFrame":
        """The budget audit: per arm what it consumed (steps, examples, tokens, seconds, the hash
        of its example order) and whether the audit flagged it, with the reasons."""
        import pandas as pd

        flags = (self.results.get("budget_audit") or {}).get("flags") or {}
        rows = []
        for arm in self.arms:
            consumed = dict(arm.get("consumed") or {})
            extra = consumed.pop("extra", None) or {}
            reasons = flags.get(arm["arm"]["name"]) or []
            rows.append(
                {
                    **self._identity(arm),
                    **consumed,
                    **{f"extra.{k}": v for k, v in extra.items()},
                    "flagged": bool(reasons),
                    "flag_reasons": "; ".join(reasons),
                }
            )
        base = [
            "experiment",
            "run_id",
            "arm",
            "task",
            "method",
            "model",
            "seed",
            "status",
            "steps",
            "examples",
            "tokens",
            "seconds",
            "order_hash",
            "flagged",
            "flag_reasons",
        ]
        return pd.DataFrame(rows, columns=_ordered(rows, base))

    def golden(self) -> "pd.DataFrame":
        """One row per golden-set item and arm: set, version, item id, passed, must, expected, actual, failures."""
        import pandas as pd

        rows = []
        for arm in self.arms:
            identity = self._identity(arm)
            who = {key: identity[key] for key in ("experiment", "run_id", "arm")}
            rows.extend(who | row for row in golden_rows(arm))
        return pd.DataFrame(
            rows,
            columns=_ordered(
                rows,
                [
                    "experiment",
                    "run_id",
                    "arm",
                    "set",
                    "version",
                    "item_id",
                    "passed",
                    "must",
                    "expected",
                    "actual",
                    "failures",
                ],
            ),
        )

    # ------------------------------------------------------------------ helpers

    def _identity(self, arm: dict) -> dict:
        a = arm["arm"]
        return {
            "experiment": self.experiment,
            "run_id": self.run_id,
            "arm": a.get("name"),
            "task": a.get("task_key"),
            "method": a.get("method"),
            "model": a.get("model_key"),
            "model_path": a.get("model"),
            "kind": a.get("kind"),
            "seed": a.get("seed"),
            "status": arm.get("status"),
            "error": arm.get("error"),
        }

    def _select(self, ref: str | None) -> list[dict]:
        if ref is None:
            return self.arms
        exact = [a for a in self.arms if ref in (a["arm"].get("name"), a["arm"].get("slug"), a["arm"].get("hash"))]
        partial = [a for a in self.arms if ref in a["arm"].get("name", "")]
        chosen = exact or partial
        if not chosen or (not exact and len({a["arm"]["name"] for a in partial}) > 1):
            names = ", ".join(repr(a["arm"]["name"]) for a in self.arms)
            what = "matches no" if not chosen else "matches several"
            raise HarnessError(f"arm {ref!r} {what} arm of run {self.run_dir}", fix=f"choose one of: {names}")
        return chosen


class Runs(list):
    """Several runs whose tables concatenate: `load_runs(...).table()` is one frame over all of them."""

    def _concat(self, method: str, *args) -> "pd.DataFrame":
        import pandas as pd

        frames = [getattr(r, method)(*args) for r in self]
        frames = [f for f in frames if not f.empty] or frames[:1]
        return pd.concat(frames, ignore_index=True, sort=False)

    def table(self):
        return self._concat("table")

    def comparisons(self):
        return self._concat("comparisons")

    def predictions(self, arm: str | None = None):
        return self._concat("predictions", arm)

    def consumed(self):
        return self._concat("consumed")

    def golden(self):
        return self._concat("golden")


def _ordered(rows: list[dict], first: list[str]) -> list[str]:
    """The named columns first (always present, so an empty run still has them), then the rest in first-seen order."""
    rest = dict.fromkeys(k for row in rows for k in row if k not in first)
    return first + list(rest)


def _ci_cols(frame) -> set[str]:
    return {c for c in frame.columns if c.endswith(("_low", "_high")) and c.rsplit("_", 1)[0] in frame.columns}
