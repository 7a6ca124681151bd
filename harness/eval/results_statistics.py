"""The statistics block of a run's results.json (comparisons, their correction, sensitivity, the
seed summary: harness.eval.compare), computed when the runner writes results.json and recomputed
on demand (`harness report --recompute`) from the arm folders, without retraining."""

from __future__ import annotations

import json
from pathlib import Path

from harness.eval.compare import run_statistics
from harness.paths import atomic_write_text
from harness.results.arm_result import ArmResult, now


def statistics_or_error(run_dir: Path, experiment: dict, results: list[ArmResult]) -> dict:
    """Pairwise comparisons and the seed summary; a failure there is recorded, never allowed to
    lose the arms' results."""

    try:
        return run_statistics(run_dir, results, (experiment or {}).get("budget") or {}, (experiment or {}).get("tasks"))
    except Exception as err:  # noqa: BLE001 - the results must be written whatever happens here
        return {"comparisons": [], "seed_summary": [], "statistics_error": f"{type(err).__name__}: {err}"}


def recompute_statistics(run_dir: Path, correction: str | None = None) -> Path:
    """Rewrite the statistics of a finished run's results.json from its arm folders (no
    retraining): comparisons, their correction, sensitivity and seed summary, with today's
    tests. `correction` overrides the run's budget.correction (holm, bh or none)."""
    from harness.errors import HarnessError
    from harness.eval.stats import CORRECTIONS

    if correction is not None and correction not in CORRECTIONS:
        raise HarnessError(
            f"--correction {correction!r} is not one of {', '.join(CORRECTIONS)}",
            fix="use holm (family-wise error), bh (false discovery rate) or none",
        )
    path = Path(run_dir) / "results.json"
    payload = json.loads(path.read_text(encoding="utf-8"))
    experiment = payload.get("experiment") or {}
    budget = dict(experiment.get("budget") or {})
    if correction is not None:
        budget["correction"] = correction
    arms = [ArmResult.model_validate(a) for a in payload.get("arms", [])]
    payload.pop("statistics_error", None)
    payload.update(run_statistics(Path(run_dir), arms, budget, experiment.get("tasks")))
    payload["statistics_recomputed_at"] = now()
    atomic_write_text(path, json.dumps(payload, indent=2, default=str))
    return path
