"""MLflow tracking: one parent run per `harness run`, one nested child run per arm.

It lives in the runner's process only (the arm processes never import mlflow) and is a side
channel: results.json stays the record. Any MLflow failure (a bad URI, a server that is down)
prints one warning line and turns tracking off for the rest of the run; it never fails a run.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import math
import os
import re
import time
import urllib.error
import urllib.request
import warnings
from datetime import datetime
from pathlib import Path

from rich.console import Console

from harness.data import loaders, prepared
from harness.errors import safe
from harness.execution.provenance import git_commit
from harness.tracking.views import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, VIEW_TAG, arm_note, view_state
from harness.version import __version__

console = Console(stderr=True)

DB_FILE = "mlflow.db"
ARTIFACT_DIR = "mlruns"
MAX_TAG_CHARS = 5000  # MLflow keeps up to 8000 characters in a tag value
MAX_PARAM_CHARS = 6000  # and up to 6000 in a param value
BATCH = {"metrics": 1000, "params": 100, "tags": 100}  # log_batch's per-call limits


def resolve_store(uri: str | None = None) -> tuple[str, str | None]:
    """(tracking URI, artifact root for experiments harness creates).

    The URI given (tracking.uri in the YAML, `harness ui --uri`), else $MLFLOW_TRACKING_URI,
    else sqlite:///<cwd>/mlflow.db with artifacts in <cwd>/mlruns. MLflow 3.17 refuses a plain
    ./mlruns file store, hence SQLite. A server decides its own artifact root (None)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri is None:
        return f"sqlite:///{Path.cwd() / DB_FILE}", (Path.cwd() / ARTIFACT_DIR).as_uri()
    if uri.startswith("sqlite:///") and ":memory:" not in uri:
        # Artifacts next to the database file, so the two travel together.
        db = Path(uri.removeprefix("sqlite:///").split("?")[0])
        return uri, (db.resolve().parent / ARTIFACT_DIR).as_uri()
    return uri, None


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def import_mlflow():
    """Import mlflow quietly and offline: no telemetry, no INFO lines about database tables."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return mlflow


def _safely(hook):
    """A hook that turns tracking off (one warning) instead of raising."""

    @functools.wraps(hook)
    def wrapper(self, *args, **kwargs):
        if not self.enabled:
            return None
        try:
            return hook(self, *args, **kwargs)
        except Exception as err:  # noqa: BLE001 - tracking must never take a run down
            self._disable(err)
            return None

    return wrapper


class MlflowTracker:
    """The runner's tracker hooks: start_run, log_arm (after every arm), finish_run."""

    def __init__(self, uri: str | None = None, experiment_name: str | None = None):
        self.uri, self.artifact_root = resolve_store(uri)
        self.experiment_name = experiment_name
        self.enabled = True
        self.client = None
        self.experiment_id: str | None = None
        self.parent_id: str | None = None
        self.budget: dict = {}
        self.commit: str | None = None
        self._datasets: dict[str, list] = {}  # task key -> DatasetInputs, fingerprinted once

    # ------------------------------------------------------------------ hooks

    @_safely
    def start_run(self, experiment, run_dir: Path) -> None:
        if is_server(self.uri):
            _probe(self.uri)  # MLflow retries an unreachable server for minutes; fail in seconds
        elif self.uri.startswith("sqlite:///"):
            _probe_sqlite(self.uri)  # and a database it cannot open for ~100 s, with dozens of warnings
        mlflow = import_mlflow()
        self.client = mlflow.MlflowClient(tracking_uri=self.uri)
        self.experiment_id = self._experiment_id(self.experiment_name or experiment.name)
        self.budget = experiment.budget.model_dump()
        self.commit = git_commit()
        tags = {
            "harness.version": __version__,
            "harness.git_commit": self.commit,
            "harness.run_dir": str(Path(run_dir).resolve()),
            "harness.experiment_file": experiment.source_file and str(Path(experiment.source_file).resolve()),
            "mlflow.user": _user(),
            "mlflow.note.content": experiment.question or experiment.description,
        }
        run = self.client.create_run(
            self.experiment_id, run_name=f"{experiment.name} {Path(run_dir).name}", tags=_clean(tags)
        )
        self.parent_id = run.info.run_id
        atexit.register(self._abandon)  # Ctrl-C skips finish_run: mark the parent KILLED on exit
        params = {
            "experiment": experiment.name,
            "planned_arms": len(experiment.arms),
            **{f"budget.{k}": v for k, v in self.budget.items()},
        }
        self._log_batch(self.parent_id, params=params)

    @_safely
    def log_arm(self, result, arm_dir: Path) -> None:
        from mlflow.entities import Metric, RunStatus
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        arm, provenance, arm_dir = result.arm, result.provenance or {}, Path(arm_dir)
        tags = {
            MLFLOW_PARENT_RUN_ID: self.parent_id,
            "arm.hash": arm.get("hash"),
            "arm.status": result.status,
            "arm.method": arm.get("method"),
            "arm.model_key": arm.get("model_key"),
            "arm.task_key": arm.get("task_key"),
            "arm.reused_from": result.reused_from,
            "harness.version": (provenance.get("packages") or {}).get("harness") or _version(),
            "harness.git_commit": provenance.get("git_commit") or self.commit,
            "harness.device": provenance.get("device"),
            "error": result.error,
            "mlflow.user": _user(),
            "mlflow.note.content": arm_note(result),  # the run's description: arm and headline metrics
            "arm.health": "; ".join(getattr(result, "health", None) or []) or None,
        }
        run = self.client.create_run(
            self.experiment_id,
            start_time=_ms(result.started_at) or _ms(result.finished_at),
            run_name=arm.get("name"),
            tags=_clean(tags),
        )
        run_id = run.info.run_id
        params = {
            "method": arm.get("method"),
            "model": arm.get("model"),
            "model_key": arm.get("model_key"),
            "model_kind": arm.get("kind"),
            "task": arm.get("task_key"),
            "seed": arm.get("seed"),
            **{f"param.{k}": v for k, v in (arm.get("params") or {}).items()},
            **_stage_params(arm),
            **{f"budget.{k}": v for k, v in self._arm_budget(arm_dir).items()},
            **_evaluation_params(result),
        }
        stamp = _ms(result.finished_at) or int(time.time() * 1000)
        metrics = [Metric(k, float(v), stamp, 0) for k, v in result.metrics.items() if _number(v)]
        for name, points in result.curves.items():  # [[step, value], ...]; train_loss today
            metrics += [
                Metric(name, float(p[1]), stamp, int(p[0]))
                for p in points
                if isinstance(p, (list, tuple)) and len(p) == 2 and _number(p[1])
            ]
        self._log_batch(run_id, params=params, metrics=metrics)
        inputs = self._dataset_inputs(arm, arm_dir, provenance)
        if inputs:
            self.client.log_inputs(run_id, datasets=inputs)
        self._log_arm_files(run_id, result, arm_dir)
        status = {"ok": RunStatus.FINISHED, "failed": RunStatus.FAILED}.get(result.status, RunStatus.FINISHED)
        self.client.set_terminated(run_id, RunStatus.to_string(status), end_time=_ms(result.finished_at))

    @_safely
    def finish_run(self, run_dir: Path, results) -> None:
        from mlflow.entities import Metric

        run_dir, stamp = Path(run_dir), int(time.time() * 1000)
        counts = {status: sum(r.status == status for r in results) for status in ("ok", "failed", "skipped")}
        metrics = [Metric(f"arms_{k}", float(v), stamp, 0) for k, v in counts.items()]
        statistics = _read_json(run_dir / "results.json") or {}
        metrics += [Metric(k, float(v), stamp, 0) for k, v in comparison_metrics(statistics).items()]
        metrics += [Metric(k, float(v), stamp, 0) for k, v in judge_metrics(statistics).items()]
        self._log_batch(self.parent_id, metrics=metrics)
        if statistics.get("correction"):
            self._log_batch(self.parent_id, params={"statistics.correction": statistics["correction"]})
        table = comparison_table(statistics)
        if table:  # every pair: raw and adjusted p, in the UI's artifact view (and mlflow.load_table)
            self.client.log_table(self.parent_id, data=table, artifact_file="comparisons.json")
        pairs = judge_pairs_table(statistics)
        if pairs:  # the judge's arm-against-arm verdicts (budget.judge.mode pairwise_arms)
            self.client.log_table(self.parent_id, data=pairs, artifact_file="judge_pairs.json")
        for name in ("results.json", "index.html"):  # the HTML report, when one was written by now
            if (run_dir / name).is_file():
                self.client.log_artifact(self.parent_id, str(run_dir / name))
        # The runs table `harness ui` links to: this run's arms with their metrics (mlflow_views.py).
        state = json.dumps(view_state(results, self.parent_id))
        if len(state) <= MAX_TAG_CHARS:
            self.client.set_experiment_tag(self.experiment_id, VIEW_TAG, state)
        self.client.set_terminated(self.parent_id, "FINISHED")
        self.parent_id = None

    # ------------------------------------------------------------------ helpers

    def _disable(self, err: Exception) -> None:
        self.enabled = False
        first_line = (str(err).strip().splitlines() or [""])[0][:300]
        console.print(
            f"[yellow]warning:[/] MLflow tracking is off for this run ({safe(self.uri)}): "
            f"{type(err).__name__}: {safe(first_line)}",
            highlight=False,
            soft_wrap=True,
        )

    def _abandon(self) -> None:
        if self.enabled and self.parent_id:
            try:
                self.client.set_terminated(self.parent_id, "KILLED")
            except Exception:  # noqa: BLE001 - the process is exiting anyway
                pass

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                return self.client.create_experiment(
                    name, artifact_location=self.artifact_root, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
                )
            except Exception:  # another `harness run` created it a moment ago
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":  # deleted in the UI; runs would be refused
            self.client.restore_experiment(found.experiment_id)
        mark_experiment_kind(self.client, found.experiment_id, found.tags)
        return found.experiment_id

    def _log_batch(self, run_id: str, *, params: dict | None = None, metrics: list | None = None) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_text(v)) for k, v in (params or {}).items()]  # None is logged as null
        for i in range(0, len(items), BATCH["params"]):
            self.client.log_batch(run_id, params=items[i : i + BATCH["params"]])
        metrics = metrics or []
        for i in range(0, len(metrics), BATCH["metrics"]):
            self.client.log_batch(run_id, metrics=metrics[i : i + BATCH["metrics"]])

    def _arm_budget(self, arm_dir: Path) -> dict:
        planned = _read_json(arm_dir / "arm.json")
        return (planned or {}).get("budget") or self.budget

    def _dataset_inputs(self, arm: dict, arm_dir: Path, provenance: dict) -> list:
        """The task's data as MLflow datasets (name, location, fingerprint): metadata only, no rows."""
        key = arm.get("task_key") or "task"
        if key not in self._datasets:
            planned = _read_json(arm_dir / "arm.json")
            data = ((planned or {}).get("task") or {}).get("data") or {}
            try:
                self._datasets[key] = _datasets_of(key, data, provenance.get("data_fingerprint"))
            except Exception:  # noqa: BLE001 - a dataset record is a nicety; the arm is still logged
                self._datasets[key] = []
        return self._datasets[key]

    def _log_arm_files(self, run_id: str, result, arm_dir: Path) -> None:
        for name in ("result.json", "arm.json"):
            if (arm_dir / name).is_file():
                self.client.log_artifact(run_id, str(arm_dir / name))
        for rel in result.artifacts.values():  # predictions.jsonl, adapter/, traceback.txt, log.txt
            path = arm_dir / rel
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path=path.name)
            elif path.is_file():
                self.client.log_artifact(run_id, str(path))
        if result.error:
            self.client.log_text(run_id, result.error + "\n", "error.txt")


def mark_experiment_kind(client, experiment_id: str, tags: dict | None = None) -> None:
    """Tag a harness experiment as model training, so the UI opens on its runs table; an
    experiment the user already gave a kind keeps it."""
    if tags is None:
        tags = client.get_experiment(experiment_id).tags
    if not tags.get(EXPERIMENT_KIND_TAG):
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def _datasets_of(task_key: str, data: dict, prepared_fingerprint: str | None) -> list:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    splits = {"train": "training", "validation": "validation", "test": "evaluation"}
    inputs = []
    if data.get("prepared"):
        location = prepared.prepared_dir(data["prepared"], prepare_if_missing=False)
        entries = [(f"{task_key} ({data['prepared']})", location, prepared_fingerprint, "training")]
    else:
        entries = [
            (f"{task_key} {split}", Path(data[split]), None, context)
            for split, context in splits.items()
            if data.get(split) and Path(data[split]).is_file()
        ]
    for name, location, digest, context in entries:
        digest = digest or (loaders.fingerprint_files([location]) if location.is_file() else None)
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": both mean a local path
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(str(location))
        dataset = MetaDataset(source, name=name, digest=digest[:36] if digest else None)
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    return inputs


def comparison_metrics(results: dict) -> dict[str, float]:
    """Run-level figures of the pairwise tests for the parent run: how many were run, how many
    are significant before and after the correction, the smallest adjusted p, and each task's
    minimum detectable difference of its primary metric."""
    from harness.eval.compare import adjusted_p, significance_counts

    found = results.get("comparisons") or []
    out: dict[str, float] = {}
    if found:
        counts = significance_counts(results)
        out.update(
            comparisons_tested=counts["tested"],
            comparisons_significant_raw=counts["raw"],
            comparisons_significant=counts["corrected"],
            min_p_adjusted=min(adjusted_p(c) for c in found),
        )
    for task, s in (results.get("sensitivity") or {}).items():
        out[f"mdd.{task}.{s['metric']}"] = s["mdd"]
    return out


def _metric_key(text: str) -> str:
    """MLflow metric keys allow letters, digits and _-. :/ only; an arm name may hold more."""
    return re.sub(r"[^\w\-. :/]", "_", text, flags=re.ASCII)


def judge_metrics(results: dict) -> dict[str, float]:
    """The judge's run-level figures for the parent run: each ranked arm's Bradley-Terry strength
    and CI (not when withheld: then `judge.withheld` is 1), its reliability, its calibration."""
    pairwise, out = results.get("judge_pairwise") or {}, {}
    reliability = pairwise.get("reliability") or {}
    if reliability:
        out["judge.withheld"] = float(bool(reliability.get("withheld")))
        for key in ("failure_rate", "position_consistency"):
            if reliability.get(key) is not None:
                out[f"judge.{key}"] = reliability[key]
    for task, ranking in (pairwise.get("ranking") or {}).items():
        if reliability.get("withheld"):
            break
        for r in ranking:
            name = _metric_key(f"judge.strength.{task}.{r['arm']}")
            out[name] = r["strength"]
            if r["strength_ci"]:
                out[name + ".low"], out[name + ".high"] = r["strength_ci"]
    calibration = results.get("judge_calibration") or {}
    for key in ("accuracy", "kappa"):
        if calibration.get(key) is not None:
            out[f"judge.calibration.{key}"] = calibration[key]
    return out


def judge_pairs_table(results: dict) -> dict[str, list] | None:
    pairs = (results.get("judge_pairwise") or {}).get("pairs")
    if not pairs:
        return None
    columns = ("task", "arm_a", "arm_b", "judged", "a_wins", "b_wins", "ties", "failed", "win_rate_a")
    columns += ("position_consistency", "p_value", "p_adjusted", "winner")
    table = {col: [p.get(col) for p in pairs] for col in columns}
    for side, name in enumerate(("win_rate_a_low", "win_rate_a_high")):
        table[name] = [(p.get("win_rate_a_ci") or [None, None])[side] for p in pairs]
    return table


def comparison_table(results: dict) -> dict[str, list] | None:
    """The comparisons as columns (MLflow's log_table shape), or None when there are none."""
    found = results.get("comparisons") or []
    if not found:
        return None
    columns = [
        "task",
        "metric",
        "a",
        "b",
        "difference",
        "p_value",
        "p_adjusted",
        "significant",
        "better",
        "test",
        "correction",
        "family_size",
        "n",
    ]
    return {col: [c.get(col) for c in found] for col in columns}


def _probe(uri: str, timeout_s: float = 5.0) -> None:
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        pass  # it answers: a server behind a proxy may not expose /health
    except OSError as err:
        raise ConnectionError(f"no MLflow server answers at {uri} ({getattr(err, 'reason', err)})") from None


def _probe_sqlite(uri: str) -> None:
    """Open the SQLite store for writing once, in milliseconds: a read-only folder, a path that is
    a folder or a file that is no database fails here, before MLflow's retry loop."""
    import sqlite3

    path = uri.removeprefix("sqlite:///").split("?")[0]
    if not path or ":memory:" in path:
        return
    if not Path(path).parent.is_dir():
        raise ConnectionError(f"the folder of the tracking database {path} does not exist")
    try:
        conn = sqlite3.connect(path, timeout=2)
        try:
            conn.execute("BEGIN IMMEDIATE")  # takes the write lock: fails on a read-only file or folder
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # fails on a non-database file
            conn.rollback()
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise ConnectionError(f"cannot write the tracking database {path} ({err})") from None


def _clean(tags: dict) -> dict:
    return {k: str(v)[:MAX_TAG_CHARS] for k, v in tags.items() if v is not None and v != ""}


def _param_text(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_PARAM_CHARS]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _ms(iso: str | None) -> int | None:
    if not iso:
        return None
    try:
        return int(datetime.fromisoformat(iso).timestamp() * 1000)
    except ValueError:
        return None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _user() -> str | None:
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return None


def _version() -> str:
    return __version__


def _evaluation_params(result) -> dict:
    """How the arm was evaluated: a decoder's label scoring rule, the precision, and whether its
    cost metrics were measured on a busy machine (harness.eval.machine_load)."""
    provenance, detail = result.provenance or {}, result.metrics_detail or {}
    rule = provenance.get("label_scoring") or {}
    out = {f"label_scoring.{k}": rule[k] for k in ("end_of_turn", "normalize") if k in rule}
    if provenance.get("eval_precision"):
        out["eval_precision"] = provenance["eval_precision"]
    conditions = detail.get("cost_conditions") or {}
    if "contended" in conditions:
        out["cost.contended"] = conditions["contended"]
        out["cost.load_avg_1m"] = conditions.get("load_avg_1m")
    return out


def _stage_params(arm: dict) -> dict:
    """An arm with stages: `stages` = 'sft+dpo' and each stage's params as stage.<name>.<param>."""
    stages = arm.get("stages") or []
    if not stages:
        return {}
    out = {"stages": "+".join(s["name"] for s in stages)}
    for s in stages:
        out.update({f"stage.{s['name']}.{k}": v for k, v in s["params"].items()})
    return out
