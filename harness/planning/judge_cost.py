"""What a run's LLM judge will cost, printed by `harness plan` before anything is spent: the
number of judge calls from the arms of each generation task (harness.eval.judge_pairs.judge_calls)."""

from __future__ import annotations

from harness.eval.judge_calibration import read_jsonl
from harness.eval.judge_pairs import judge_calls
from harness.planning.plan import plan


def plan_notes(experiment) -> list[str]:
    """The judge's cost, printed by `harness plan` before anything is spent."""
    spec = experiment.budget.judge
    if spec is None:
        return []
    arms: dict[str, set] = {}
    for arm in plan(experiment):
        for key, task in arm.task_specs.items():
            if task.type == "generation":
                arms.setdefault(key, set()).add(arm.name)
    if not arms:
        return ["judge: no generation task, so no judge calls"]
    n = experiment.budget.eval_examples or 0
    counts = {k: len(v) for k, v in arms.items()}
    golden = experiment.base_dir / spec.calibration if spec.calibration else None
    calibration = len(read_jsonl(golden)) if golden and golden.is_file() else 0
    total = judge_calls(spec, counts, n, calibration)
    formula = {
        "grade": "n items x k arms",
        "pairwise_reference": "2 orders x n items x k arms",
        "pairwise_arms": "2 orders x n items x " + ("(k-1) pairs" if spec.vs else "k(k-1)/2 pairs"),
    }[spec.mode]
    return [
        f"judge ({spec.mode}): at most {total:,} judge calls ({formula}; k = "
        + ", ".join(f"{v} on {k}" for k, v in counts.items())
        + f"; n = {n}"
        + (f"; plus {calibration} calibration items" if calibration else "")
        + "); cached replies cost none"
    ]
