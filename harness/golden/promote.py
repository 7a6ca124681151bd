"""`harness gate ... --register NAME`: a candidate that passes the gate becomes a new version of
NAME in the MLflow Model Registry of the tracking store; one that fails registers nothing.

What is registered is the folder a deployment loads: the arm's peft adapter (its
adapter_config.json names the base model) or a model folder given as the candidate. It is
logged as artifacts of a run in the `harness-gate` experiment (or, for an `mlflow:<run id>`
candidate, used where the arm's run already holds it), and the version's source points there, so
`mlflow.artifacts.download_artifacts(version.source)` gives the same folder back. The verdict,
golden set version, baseline, harness run id and the arm's metrics go into the version's tags
and description.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError

GATE_EXPERIMENT = "harness-gate"


@dataclass
class Registrable:
    """What a passing candidate would register: a local folder, or a folder already in MLflow."""

    kind: str  # "adapter" or "model": also the artifact folder's name
    local_dir: Path | None = None
    mlflow_run_id: str | None = None  # the candidate is this run's `adapter` artifact
    tags: dict = field(default_factory=dict)  # harness run id, arm name and hash, arm metrics


def registrable(spec: str, golden, *, arm: str | None = None) -> Registrable:
    """Find what `spec` (the gate's --candidate) would register, before the gate runs, so a
    candidate with nothing to register is a usage error (exit 2), not a surprise after a pass."""
    from harness.golden import gate

    if spec.startswith("packaged:"):
        raise HarnessError(
            f"--register: the candidate {spec} is a packaged base model, not something trained",
            fix="register an adapter or model folder, or a run whose arm saved an adapter",
        )
    if spec.startswith(gate.MLFLOW_PREFIXES):
        return _from_mlflow(spec.split(":", 1)[1].strip("/").split("/")[0])
    path = Path(spec)
    if (path / "results.json").is_file():
        results = json.loads((path / "results.json").read_text(encoding="utf-8"))
        chosen = gate.pick_scored_arm(path, results, golden, arm=arm, role="candidate")
        return _from_arm(path / "arms" / chosen["arm"].get("slug", ""), chosen, run_id=results.get("run_id"))
    if (path / "result.json").is_file():
        result = json.loads((path / "result.json").read_text(encoding="utf-8"))
        return _from_arm(path, result, run_id=path.parent.parent.name)
    if (path / "adapter_config.json").is_file():
        return Registrable("adapter", local_dir=path.resolve())
    if (path / "config.json").is_file():
        return Registrable("model", local_dir=path.resolve())
    raise HarnessError(
        f"--register: the candidate {spec} is neither a run, an arm, nor an adapter or model folder",
        fix="pass such a folder as --candidate",
    )


def _from_arm(arm_dir: Path, result: dict, *, run_id: str | None) -> Registrable:
    """What the arm kept: its adapter, or a full fine-tune's model (budget.save: full)."""
    artifacts = result.get("artifacts") or {}
    for kind in ("adapter", "model"):
        folder = artifacts.get(kind)
        if folder and (arm_dir / folder).is_dir():
            return Registrable(kind, local_dir=(arm_dir / folder).resolve(), tags=_arm_tags(result, run_id))
    raise HarnessError(
        f"--register: arm {result['arm'].get('name')!r} saved no adapter or model in {arm_dir} (prompting arms "
        "keep no weights; a full fine-tune keeps its model only with budget.save: full)",
        fix="gate an arm that trains an adapter, set budget.save: full, or pass a model folder as --candidate",
    )


def _from_mlflow(run_id: str) -> Registrable:
    client = _client(None)
    try:
        files = {f.path for f in client.list_artifacts(run_id)}
        result_dir = Path(tempfile.mkdtemp(prefix="harness-register-"))
        result = json.loads(Path(client.download_artifacts(run_id, "result.json", str(result_dir))).read_text())
    except Exception as err:  # noqa: BLE001 - an unknown run or a parent run: one sentence
        raise HarnessError(
            f"--register: MLflow run {run_id} has no result.json of an arm ({type(err).__name__})",
            fix="pass the run id of an arm's (child) run",
        ) from None
    if "adapter" not in files:
        raise HarnessError(
            f"--register: MLflow run {run_id} holds no adapter artifact", fix="gate an arm that trains an adapter"
        )
    return Registrable("adapter", mlflow_run_id=run_id, tags=_arm_tags(result, None))


def _arm_tags(result: dict, run_id: str | None) -> dict:
    arm = result.get("arm") or {}
    tags = {
        "harness.run_id": run_id,
        "harness.arm": arm.get("name"),
        "arm.hash": arm.get("hash"),
        "arm.method": arm.get("method"),
        "arm.model": arm.get("model"),
        "arm.task_key": arm.get("task_key"),
    }
    tags.update({f"metric.{k}": v for k, v in (result.get("metrics") or {}).items() if v is not None})
    return tags


def register(name: str, candidate: Registrable, verdict: dict, uri: str | None):
    """Register the candidate as a new version of `name`; returns the ModelVersion. Only call it
    for a verdict that passed."""
    from harness.tracking.mlflow_tracker import mark_experiment_kind, resolve_store

    if not verdict.get("passed"):
        raise ValueError("a candidate that failed the gate is never registered")
    uri, artifact_root = resolve_store(uri)
    client = _client(uri)
    tags = {
        **candidate.tags,
        "harness.gate": "passed",
        "golden_set": verdict["set"],
        "golden_version": verdict["version"],
        "gate.candidate": verdict["candidate"],
        "gate.baseline": verdict["baseline"],
        "gate.candidate_pass_rate": verdict["candidate_pass_rate"],
        "gate.baseline_pass_rate": verdict["baseline_pass_rate"],
        "gate.p_value": verdict["p_value"],
        "gate.pass_to_fail": len(verdict["pass_to_fail"]),
        "gate.fail_to_pass": len(verdict["fail_to_pass"]),
    }
    tags = {k: str(v)[:5000] for k, v in tags.items() if v is not None and v != ""}
    if candidate.mlflow_run_id:
        run_id = candidate.mlflow_run_id
    else:
        experiment = client.get_experiment_by_name(GATE_EXPERIMENT)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else client.create_experiment(GATE_EXPERIMENT, artifact_location=artifact_root)
        )
        mark_experiment_kind(client, experiment_id)
        run_id = client.create_run(
            experiment_id, run_name=f"register {name} ({verdict['set']}@{verdict['version']})", tags=tags
        ).info.run_id
        client.log_artifacts(run_id, str(candidate.local_dir), artifact_path=candidate.kind)
        client.log_text(run_id, json.dumps(verdict, indent=2, ensure_ascii=False), "gate_verdict.json")
        client.set_terminated(run_id, "FINISHED")
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{candidate.kind}"
    if not _exists(client, name):
        client.create_registered_model(
            name,
            description="Versions registered by `harness gate --register` when a candidate passes its golden-set gate.",
        )
    return client.create_model_version(name, source, run_id=run_id, tags=tags, description=describe(verdict, tags))


def describe(verdict: dict, tags: dict) -> str:
    arm = tags.get("harness.arm")
    metrics = ", ".join(
        f"{k.removeprefix('metric.')} {float(v):.4g}"
        for k, v in tags.items()
        if k.startswith("metric.")
        and k.removeprefix("metric.") in ("accuracy", "macro_f1", "rouge_l", "exact_match", "token_f1")
    )
    return (
        f"Passed golden gate {verdict['set']}@{verdict['version']}: candidate {verdict['candidate_passed']}/"
        f"{verdict['total']} ({verdict['candidate_pass_rate']:.1%}) vs baseline {verdict['baseline_passed']}/"
        f"{verdict['total']} ({verdict['baseline_pass_rate']:.1%}), McNemar p = {verdict['p_value']:.3g}."
        + (f" Arm {arm} of harness run {tags.get('harness.run_id')}." if arm else "")
        + (f" Test metrics: {metrics}." if metrics else "")
        + f" Baseline: {verdict['baseline']}."
    )


def _exists(client, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return True
    except MlflowException:
        return False


def _client(uri: str | None):
    """A client bound to one store: MLflow's module-level tracking URI is process-wide state."""
    from harness.tracking.mlflow_tracker import import_mlflow, resolve_store

    uri = resolve_store(uri)[0]
    return import_mlflow().MlflowClient(tracking_uri=uri, registry_uri=uri)
