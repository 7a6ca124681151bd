"""The release gate: a candidate's golden-set results against a baseline's -> a verdict.

A side (candidate or baseline) is a run folder (results.json, pick an arm with --arm), an arm
folder (result.json), a baseline file recorded earlier (--record), or a model/adapter to score
now (a local Hugging Face folder, a peft adapter folder, or packaged:<name>).

A regression is any of: a `must` item failing; the pass rate dropping by more than max_drop;
pass->fail flips outnumbering fail->pass flips significantly (exact McNemar test at alpha on
the discordant pairs), so noise alone does not fail a build and a real drop does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness import models
from harness.config.golden_set import GoldenSet
from harness.errors import HarnessError
from harness.eval.bertscore import DEFAULT_MODEL, BertScore
from harness.eval.golden_scoring import score_golden, summarize, uses_bertscore
from harness.paths import atomic_write_text, read_json_file
from harness.results.arm_result import RERUN_FIX, check_arm_result, now, read_run_results
from harness.tracking.mlflow_tracker import import_mlflow, resolve_store

BASELINE_KIND = "harness-golden-baseline"
EPSILON = 1e-9  # pass rates are ratios of small integers; compare drops with a tolerance


@dataclass
class Side:
    label: str  # what the user named, for messages
    source: str  # where the results came from (file, arm, model)
    version: str | None  # the golden set version the results were made with
    items: list[dict]  # per-item rows: id, passed, must, expected, actual, failures


# ---------------------------------------------------------------- reading a side


def baseline_path(golden: GoldenSet, golden_path: Path) -> Path:
    """Where --record stores a set's baseline: next to the set, one file per set version."""
    return Path(golden_path).parent / "baselines" / f"{golden.name}@{golden.version}.json"


def resolve_side(spec: str, golden: GoldenSet, *, arm: str | None = None, role: str = "candidate") -> Side:
    """Read or compute one side's golden results; HarnessError (exit 2) when it cannot."""
    path = Path(spec)
    if spec.startswith("packaged:"):
        return _score_now(spec, golden, label=spec)
    if spec.startswith(MLFLOW_PREFIXES):
        path = _download_mlflow_run(spec, role)
    if not path.exists():
        raise HarnessError(
            f"{role} '{spec}' does not exist",
            fix="pass a run folder, an arm folder, a baseline .json file, or a model/adapter folder",
        )
    if path.is_file():
        return _from_json_file(path, golden, arm=arm, role=role)
    if (path / "results.json").is_file():
        return _from_run(path, read_run_results(path), golden, arm=arm, role=role)
    if (path / "result.json").is_file():
        result = read_json_file(path / "result.json", what=f"{role} result file", fix=RERUN_FIX)
        check_arm_result(result, str(path / "result.json"))
        return _from_arm_result(result, golden, label=str(path), role=role)
    if (path / "adapter_config.json").is_file() or (path / "config.json").is_file():
        return _score_now(str(path), golden, label=str(path))
    raise HarnessError(
        f"{role} folder '{spec}' has no results.json, result.json, adapter_config.json or config.json",
        fix="pass a reports/<experiment>/<run-id> folder, a baseline file, or a model/adapter folder",
    )


MLFLOW_PREFIXES = ("mlflow:", "runs:/")


def _download_mlflow_run(spec: str, role: str) -> Path:
    """`mlflow:<run id>` (or runs:/<run id>): the run's results.json (a parent run of `harness run`)
    or result.json (an arm's child run), fetched from the tracking store into a temp folder."""
    import tempfile

    run_id = spec.split(":", 1)[1].strip("/").split("/")[0]
    uri, _ = resolve_store(None)
    # A client bound to this store: MLflow's module-level tracking URI is process-wide state.
    client = import_mlflow().tracking.MlflowClient(tracking_uri=uri)
    folder = Path(tempfile.mkdtemp(prefix="harness-gate-"))
    reason = ""
    for name in ("results.json", "result.json"):
        try:
            client.download_artifacts(run_id, name, str(folder))
            return folder
        except Exception as err:  # noqa: BLE001 - absent artifact or unknown run: try the other, then explain
            reason = f" ({type(err).__name__}: {str(err).splitlines()[0][:200]})" if str(err) else ""
    raise HarnessError(
        f"{role} MLflow run '{run_id}' was not found in {uri}, or has no results.json/result.json{reason}",
        fix="check the run id in `harness ui`, and MLFLOW_TRACKING_URI",
    )


def _from_json_file(path: Path, golden: GoldenSet, *, arm, role) -> Side:
    data = read_json_file(path, what=f"{role} file", fix="pass a baseline written by --record, or a results.json")
    if isinstance(data, dict) and data.get("kind") == BASELINE_KIND:
        if data.get("set") != golden.name:
            raise HarnessError(
                f"{role} file {path} is a baseline of golden set '{data.get('set')}', not '{golden.name}'",
                fix="pass the baseline of this golden set",
            )
        return Side(
            label=str(path),
            source=data.get("source", str(path)),
            version=str(data.get("version")),
            items=_checked_items(data.get("items"), str(path), role),
        )
    if isinstance(data, dict) and "arms" in data:
        if path.name == "results.json":
            data = read_run_results(path.parent)  # its shape checked, one sentence if broken
        else:
            for i, one in enumerate(data["arms"] if isinstance(data["arms"], list) else [None]):
                check_arm_result(one, str(path), f"arms[{i}]")
        return _from_run(path.parent, data, golden, arm=arm, role=role)
    raise HarnessError(
        f"{role} file {path} is neither a recorded baseline nor a results.json",
        fix="record a baseline with `harness gate --record`",
    )


def _from_run(run_dir: Path, results: dict, golden: GoldenSet, *, arm, role) -> Side:
    chosen = pick_scored_arm(run_dir, results, golden, arm=arm, role=role)
    return _from_arm_result(chosen, golden, label=f"{run_dir} [{chosen['arm']['name']}]", role=role)


def pick_scored_arm(run_dir: Path, results: dict, golden: GoldenSet, *, arm: str | None, role: str) -> dict:
    """The one ok arm of a run scored on the golden set (named by --arm when there are several)."""
    arms = [a for a in results.get("arms", []) if a.get("status") == "ok"]
    scored = [a for a in arms if golden.name in (a.get("golden") or {})]
    if not scored:
        raise HarnessError(
            f"no arm of run {run_dir} was scored on golden set '{golden.name}'",
            fix="add the set to the experiment's `golden_sets:` and rerun, or pass a model folder",
        )
    if arm is not None:
        chosen = [a for a in scored if a["arm"]["name"] == arm] or [
            a for a in scored if arm in a["arm"]["name"] or arm in a["arm"].get("slug", "")
        ]
        if len(chosen) != 1:
            names = ", ".join(repr(a["arm"]["name"]) for a in scored)
            what = "matches no" if not chosen else "matches several"
            raise HarnessError(f"--arm {arm!r} {what} arm of run {run_dir}", fix=f"choose one of: {names}")
        scored = chosen
    if len(scored) > 1:
        names = ", ".join(repr(a["arm"]["name"]) for a in scored)
        raise HarnessError(
            f"run {run_dir} has {len(scored)} arms scored on '{golden.name}'",
            fix=f"pick one with --arm (for the {role}): {names}",
        )
    return scored[0]


def _from_arm_result(result: dict, golden: GoldenSet, *, label: str, role: str) -> Side:
    entry = (result.get("golden") or {}).get(golden.name)
    if not entry:
        raise HarnessError(
            f"{role} {label} has no results for golden set '{golden.name}'",
            fix="add the set to the experiment's `golden_sets:` and rerun",
        )
    if entry.get("error"):
        raise HarnessError(f"{role} {label} failed to score golden set '{golden.name}': {entry['error']}")
    return Side(
        label=label,
        source=label,
        version=str(entry.get("version")),
        items=_checked_items(entry.get("items"), label, role),
    )


def _checked_items(items, where: str, role: str) -> list[dict]:
    """Golden item results as the comparison reads them: a list of {id, passed, ...}."""
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("id"), str) and isinstance(i.get("passed"), bool) for i in items
    ):
        raise HarnessError(
            f"{role} {where} has golden items without an `id` and a true/false `passed`",
            fix=f"record the baseline again (`harness gate --record`), or {RERUN_FIX}",
        )
    return items


def _score_now(source: str, golden: GoldenSet, *, label: str) -> Side:
    model, tokenizer, kind, head_labels = load_for_scoring(source)
    # no experiment here: the default scorer every experiment's budget starts from
    scorer = BertScore(DEFAULT_MODEL) if uses_bertscore(golden) else None
    rows = score_golden(golden, model, tokenizer, kind=kind, head_labels=head_labels, bertscore=scorer)
    return Side(label=label, source=source, version=golden.version, items=rows)


def load_for_scoring(source: str):
    """(model, tokenizer, kind, head labels) for a local folder, packaged model or peft adapter."""

    folder = Path(source)
    adapter = folder.is_dir() and (folder / "adapter_config.json").is_file()
    base = source
    if adapter:
        config = read_json_file(
            folder / "adapter_config.json", what="adapter config", fix="point at a saved peft adapter folder"
        )
        base = config.get("base_model_name_or_path")
        if not base:
            raise HarnessError(
                f"adapter {folder} does not name its base model",
                fix="set base_model_name_or_path in its adapter_config.json",
            )
    model_dir = models.resolve_model_dir(base, base_dir=folder if adapter else None)
    kind = models.infer_kind(str(model_dir))
    if kind is None:
        raise HarnessError(f"cannot tell whether {model_dir} is a decoder or an encoder", fix="check its config.json")
    tokenizer = models.load_tokenizer(model_dir)
    head_labels = None
    if kind == "encoder":
        # Only an encoder that already has a classification head can answer a golden item.
        config = read_json_file(
            model_dir / "config.json", what="model config", fix="point at a transformers checkpoint folder"
        )
        id2label = (config.get("id2label") if isinstance(config, dict) else None) or {}
        head_labels = [id2label[k] for k in sorted(id2label, key=int)]
        if not head_labels or all(lbl.startswith("LABEL_") for lbl in head_labels):
            raise HarnessError(
                f"encoder {model_dir} has no trained classification head to score golden items",
                fix="score it inside an experiment run (golden_sets:) and pass the run folder",
            )
        model = models.load_model(model_dir, kind, id2label=dict(enumerate(head_labels)), tokenizer=tokenizer)
    else:
        model = models.load_model(model_dir, kind, tokenizer=tokenizer)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(folder))
    model.eval()
    return model, tokenizer, kind, head_labels


# ---------------------------------------------------------------- the comparison


def _check_coverage(side: Side, golden: GoldenSet, role: str) -> dict[str, dict]:
    if side.version is not None and side.version != golden.version:
        raise HarnessError(
            f"the {role} ({side.label}) was scored on version {side.version} of golden set "
            f"'{golden.name}', which is now version {golden.version}",
            fix="rescore it on the current set (and record a new baseline with --record)",
        )
    rows = {r["id"]: r for r in side.items}
    missing = [item.id for item in golden.items if item.id not in rows]
    if missing:
        raise HarnessError(
            f"the {role} ({side.label}) has no result for golden item(s) {', '.join(missing[:5])}",
            fix="rescore it on the current golden set",
        )
    return rows


def compare(golden: GoldenSet, candidate: Side, baseline: Side, *, max_drop: float = 0.02, alpha: float = 0.05) -> dict:
    """The verdict: passed or not, why, and every item side by side."""
    from scipy.stats import binomtest

    cand = _check_coverage(candidate, golden, "candidate")
    base = _check_coverage(baseline, golden, "baseline")
    items, pass_to_fail, fail_to_pass = [], [], []
    for item in golden.items:
        now, before = cand[item.id], base[item.id]
        if before["passed"] and not now["passed"]:
            pass_to_fail.append(item.id)
        elif now["passed"] and not before["passed"]:
            fail_to_pass.append(item.id)
        items.append(
            {
                "id": item.id,
                "must": item.must,
                "tags": item.tags,
                "baseline_passed": before["passed"],
                "passed": now["passed"],
                "expected": now.get("expected", ""),
                "actual": now.get("actual"),
                "baseline_actual": before.get("actual"),
                "failures": now.get("failures", []),
                "latency_ms": now.get("latency_ms"),
            }
        )
    ordered_cand = [cand[i.id] for i in golden.items]
    ordered_base = [base[i.id] for i in golden.items]
    c_sum, b_sum = summarize(ordered_cand), summarize(ordered_base)
    # The `must` flag is the golden set's, not what an older result recorded.
    must_failed = [i["id"] for i in items if i["must"] and not i["passed"]]
    drop = b_sum["pass_rate"] - c_sum["pass_rate"]
    discordant = len(pass_to_fail) + len(fail_to_pass)
    # Exact McNemar: under "no change" each discordant item flips either way with p = 1/2.
    p_value = binomtest(len(pass_to_fail), discordant, 0.5, alternative="greater").pvalue if discordant else 1.0
    reasons = []
    if must_failed:
        reasons.append(f"must item(s) failing: {', '.join(must_failed)}")
    if drop > max_drop + EPSILON:
        reasons.append(
            f"pass rate dropped by {drop:.1%} ({b_sum['pass_rate']:.1%} -> {c_sum['pass_rate']:.1%}), "
            f"more than the allowed {max_drop:.1%}"
        )
    if len(pass_to_fail) > len(fail_to_pass) and p_value < alpha:
        reasons.append(
            f"{len(pass_to_fail)} item(s) flipped pass->fail against {len(fail_to_pass)} fail->pass "
            f"(McNemar exact p = {p_value:.3g} < alpha {alpha})"
        )
    return {
        "set": golden.name,
        "version": golden.version,
        "passed": not reasons,
        "reasons": reasons,
        "candidate": candidate.label,
        "baseline": baseline.label,
        "candidate_pass_rate": c_sum["pass_rate"],
        "baseline_pass_rate": b_sum["pass_rate"],
        "candidate_passed": c_sum["passed"],
        "baseline_passed": b_sum["passed"],
        "total": c_sum["total"],
        "drop": round(drop, 6),
        "max_drop": max_drop,
        "alpha": alpha,
        "p_value": round(p_value, 6),
        "pass_to_fail": pass_to_fail,
        "fail_to_pass": fail_to_pass,
        "must_failed": must_failed,
        "same_source": Path(candidate.source).resolve() == Path(baseline.source).resolve()
        if candidate.source and baseline.source
        else False,
        "items": items,
    }


def record_baseline(golden: GoldenSet, golden_path: Path, side: Side, *, target: Path | None = None) -> Path:
    target = target or baseline_path(golden, golden_path)
    _check_coverage(side, golden, "candidate")
    payload = {
        "kind": BASELINE_KIND,
        "set": golden.name,
        "version": golden.version,
        "source": side.source,
        "recorded_at": now(),
        **summarize(side.items),
        "items": side.items,
    }
    atomic_write_text(target, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return target


# ---------------------------------------------------------------- outputs
