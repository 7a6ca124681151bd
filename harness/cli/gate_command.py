"""`harness gate`: resolve both sides, compare, write the outputs, record, return the exit code."""

from __future__ import annotations

import json
import os
from pathlib import Path

from harness.errors import HarnessError, safe

PASS, REGRESSION = 0, 1


def run_gate(
    out,
    err,
    *,
    golden: Path,
    candidate: str,
    baseline: str | None,
    arm: str | None,
    baseline_arm: str | None,
    max_drop: float,
    alpha: float,
    junit: Path | None,
    markdown: Path | None,
    record: bool,
    mlflow_uri: str | None,
    json_out: Path | None = None,
    register: str | None = None,
) -> int:
    from harness.config.golden_set import load_golden
    from harness.golden import gate, outputs, promote
    from harness.paths import atomic_write_text

    if not 0 <= max_drop <= 1:
        raise HarnessError(f"--max-drop {max_drop} is not a fraction between 0 and 1", fix="for two points write 0.02")
    if not 0 < alpha < 1:
        raise HarnessError(f"--alpha {alpha} is not between 0 and 1", fix="the usual value is 0.05")
    golden_set = load_golden(golden)
    recorded = gate.baseline_path(golden_set, golden)
    if baseline is None and not recorded.is_file():
        if not record:
            raise HarnessError(
                f"no baseline given and none recorded for {golden_set.name}@{golden_set.version} ({recorded})",
                fix="pass --baseline, or record one with --record",
            )
        side = gate.resolve_side(candidate, golden_set, arm=arm, role="candidate")
        path = gate.record_baseline(golden_set, golden, side)
        out.print(
            f"recorded baseline {safe(path)} (first baseline of {safe(golden_set.name)}@{safe(golden_set.version)}; "
            "nothing to compare)",
            highlight=False,
        )
        must_failed = [i.id for i in golden_set.items if i.must and not _passed(side, i.id)]
        if must_failed:
            err.print(
                f"[yellow]note[/]: the recorded candidate fails must item(s) {safe(', '.join(must_failed))}; "
                "every later gate fails until they pass"
            )
        return PASS
    # What --register would register is found first: nothing to register is a usage error (exit 2).
    to_register = promote.registrable(candidate, golden_set, arm=arm) if register else None
    base_spec = baseline or str(recorded)
    base_side = gate.resolve_side(base_spec, golden_set, arm=baseline_arm or arm, role="baseline")
    cand_side = gate.resolve_side(candidate, golden_set, arm=arm, role="candidate")
    verdict = gate.compare(golden_set, cand_side, base_side, max_drop=max_drop, alpha=alpha)

    for i, line in enumerate(outputs.console_lines(verdict)):
        colour = ("green" if verdict["passed"] else "red") if i == 0 else "default"
        out.print(f"[{colour}]{safe(line)}[/]", highlight=False, soft_wrap=True)
    if junit:
        atomic_write_text(junit, outputs.to_junit(verdict))
        out.print(f"junit: {safe(junit)}", highlight=False)
    if markdown:
        atomic_write_text(markdown, outputs.to_markdown(verdict))
        out.print(f"markdown: {safe(markdown)}", highlight=False)
    if json_out:
        atomic_write_text(json_out, json.dumps(verdict, indent=2, ensure_ascii=False) + "\n")
        out.print(f"verdict: {safe(json_out)}", highlight=False)
    uri = mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        run_id = outputs.log_verdict_to_mlflow(verdict, uri)
        out.print(
            f"mlflow run: {safe(run_id)}"
            if run_id
            else "[yellow]could not log the verdict to MLflow[/] (the gate stands)"
        )
    if register:
        if verdict["passed"]:
            try:
                version = promote.register(register, to_register, verdict, mlflow_uri)
            except Exception as error:  # noqa: BLE001 - the store's own message, as one sentence
                raise HarnessError(
                    f"--register {register}: the gate passed but MLflow refused the version "
                    f"({type(error).__name__}: {str(error).splitlines()[0][:300]})",
                    fix="check the tracking URI (--mlflow or MLFLOW_TRACKING_URI)",
                ) from None
            out.print(
                f"registered {safe(register)} version {version.version} ({safe(version.source)})", highlight=False
            )
        else:
            err.print(
                "[yellow]not registered[/]: a candidate that fails the gate does not become a version of "
                f"{safe(register)}"
            )
    if record:
        if verdict["passed"]:
            path = gate.record_baseline(golden_set, golden, cand_side)
            out.print(f"recorded baseline {safe(path)}", highlight=False)
        else:
            err.print("[yellow]not recorded[/]: a candidate that regresses does not become the baseline")
    return PASS if verdict["passed"] else REGRESSION


def _passed(side, item_id: str) -> bool:
    return any(r["id"] == item_id and r["passed"] for r in side.items)
