"""What a person sees when they open a harness experiment in the MLflow UI (3.17).

Left alone, the UI opens an experiment on its GenAI overview (traces, token usage: empty here),
and the runs table shows no metric until columns are picked by hand. Two things fix that with
MLflow's own features, no patching:
- the URL's `workflowType=machine_learning` opens the model-training side (the runs table); the
  experiment also carries `mlflow.experimentKind` (tracking.py) for UIs that read the tag;
- a *shared view*: the UI's "share view" stores its table state as the experiment tag
  `mlflow.sharedViewState.<key>` and opens it from `?viewStateShareKey=<key>`. After every run
  harness writes that state (the quality metrics and the cost that matter, method, model and task
  columns; sorted by the primary metric), so the printed link lands on the arms with their numbers.
The links `harness ui` prints are built here and listed by ui.experiment_links.
"""

from __future__ import annotations

import json
import urllib.parse

from harness.eval.metrics import METRICS

# MLflow 3 opens an experiment on the page its kind calls for; without this tag it guesses GenAI
# and lands on traces and token usage. "finetuning" is one of the machine-learning kinds the UI
# knows (with the workflow toggle it also needs workflowType in the URL, below).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "finetuning"
VIEW_KEY = "harness"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
COSTS = ["peak_memory_mb", "train_seconds", "latency_p50_ms"]
MAX_QUALITY = 4  # a table a person reads at a glance


def column(kind: str, name: str) -> str:
    """The UI's column key, e.g. metrics.`accuracy` (backquotes as the UI writes them)."""
    return f"{kind}.`{name}`"


def view_state(results: list, parent_run_id: str | None) -> dict:
    """The runs-table state for a run's arms (ArmResult objects): columns, sort, expanded parent."""
    reported = [name for name in METRICS if any(r.metrics.get(name) is not None for r in results)]
    quality = [n for n in reported if METRICS[n].kind == "quality"][:MAX_QUALITY]
    costs = [n for n in COSTS if n in reported]
    tasks = {r.arm.get("task_key") for r in results}
    params = ["method", "model_key"] + (["task"] if len(tasks) > 1 else [])
    state = {
        "selectedColumns": [column("metrics", n) for n in quality + costs] + [column("params", p) for p in params],
        "runsExpanded": {parent_run_id: True} if parent_run_id else {},
    }
    if quality:  # the arms in order of the primary metric, best first
        state.update(orderByKey=column("metrics", quality[0]), orderByAsc=not METRICS[quality[0]].higher_is_better)
    return state


def arm_note(result) -> str:
    """The child run's description: what the arm is and its headline numbers, in one line."""
    arm = result.arm
    head = f"{arm.get('method')} on {arm.get('model_key')} ({arm.get('task_key')})"
    if result.status != "ok":
        return f"{head}: {result.status}" + (f" — {result.error}" if result.error else "")
    parts = []
    for name in [n for n in METRICS if METRICS[n].kind == "quality" and result.metrics.get(n) is not None][:3]:
        text = f"{name} {result.metrics[name]:.3f}"
        low_high = result.ci.get(name)
        if low_high:
            text += f" [{low_high[0]:.3f}, {low_high[1]:.3f}]"
        parts.append(text)
    return head + (": " + ", ".join(parts) if parts else "")


def runs_url(base: str, experiment_id: str, *, shared_view: bool = True) -> str:
    query = {"workflowType": "machine_learning"}
    if shared_view:
        query["viewStateShareKey"] = VIEW_KEY
    return f"{base}/#/experiments/{experiment_id}/runs?{urllib.parse.urlencode(query)}"


def compare_url(base: str, experiment_id: str, run_ids: list[str]) -> str:
    """The UI's compare view of the given runs (its route takes JSON lists in the query)."""
    query = urllib.parse.urlencode(
        {"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id]), "workflowType": "machine_learning"}
    )
    return f"{base}/#/compare-runs?{query}"
