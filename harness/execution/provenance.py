"""Where a result came from: package versions, Python, device, model folder, data fingerprint and
git commit. Written into every arm's result and onto the parent MLflow run."""

from __future__ import annotations

import json
from pathlib import Path

from harness.data import prepared
from harness.eval import precision
from harness.eval.profile import device_name
from harness.eval.scoring_rule import ScoringRule


def evaluation_provenance(kind: str, task: dict, eval_precision: str) -> dict:
    """How this arm was evaluated: its precision, and a decoder's label scoring rule."""
    out = {"eval_precision": eval_precision}
    on_cpu = precision.how_bf16_runs() if eval_precision == "bf16" else None
    if on_cpu:
        out["bf16_on_cpu"] = on_cpu
    if kind == "causal_lm":
        rule = ScoringRule.of_task(task)
        out["label_scoring"] = {**rule.as_dict(), "text": rule.describe()}
    return out


def provenance(model_dir: Path, task: dict) -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in (
        "harness",
        "torch",
        "transformers",
        "peft",
        "bitsandbytes",
        "trl",
        "scikit-learn",
        "rouge-score",
        "sacrebleu",
        "bert-score",
        "scipy",
    ):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    fingerprint = None
    if task["data"].get("prepared"):
        info = prepared.prepared_dir(task["data"]["prepared"]) / "fingerprint.json"
        fingerprint = json.loads(info.read_text()).get("sha256") if info.is_file() else None
    return {
        "packages": packages,
        "python": platform.python_version(),
        "device": device_name(),
        "model_dir": str(model_dir),
        "data_fingerprint": fingerprint,
        "git_commit": git_commit(),
        "placement": placement(),
    }


def placement() -> dict:
    """Where the arm ran: the executor, the machine, the devices it was pinned to, its threads, the
    folder it wrote (a scratch folder on a Ray worker, returned to the driver), how many processes
    trained it and how (ddp/fsdp; none for one), and the attempt (a Ray retry or a resumed rerun:
    the executor fills it in when it counts them)."""
    import os
    import platform

    import torch

    from harness.training.distributed import world_size

    world = world_size()
    attempt = os.environ.get("HARNESS_ATTEMPT")
    return {
        "executor": os.environ.get("HARNESS_EXECUTOR", "local"),
        "node": os.environ.get("HARNESS_NODE") or platform.node(),
        "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "threads": torch.get_num_threads(),
        "arm_dir": os.environ.get("HARNESS_ARM_DIR"),
        "world_size": world,
        "nodes": world // int(os.environ.get("LOCAL_WORLD_SIZE") or world),
        "strategy": os.environ.get("HARNESS_STRATEGY") if world > 1 else None,
        "attempt": int(attempt) if attempt and attempt.isdigit() else None,
    }


def git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
