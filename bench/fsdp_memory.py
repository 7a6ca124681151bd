"""What one rank of an FSDP full fine-tune holds, at one device and at two (CPU, gloo): the arm's own
per-rank report (weights + gradients + AdamW state of its shards, the MB of weights it read from
disk, its peak RSS by the end of training) beside the RSS of a process that only imported the
stack, so the part the arm added can be read off.

    python bench/fsdp_memory.py [--model packaged:smollm2-135m-instruct] [--steps 2]

Runs `harness run` on a generated experiment with two arms of the same full fine-tune, `devices: 1`
and `devices: 2`, both `strategy: fsdp` (world size 1 takes the same sharded code path, unsplit).
Prints a markdown table, with the load average beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

IMPORTS_ONLY = (
    "import resource, harness.execution.arm_process, harness.training.loop, transformers, peft, accelerate;"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
)


def experiment(model: str, steps: int) -> dict:
    return {
        "name": "fsdp_memory",
        "tasks": yaml.safe_load((ROOT / "experiments" / "encoder_vs_decoder.yaml").read_text())["tasks"],
        "models": {"m": {"source": model}},
        "budget": {
            "max_steps": steps,
            "batch_size": 4,
            "max_seq_len": 64,
            "eval_examples": 8,
            "eval_batch_size": 8,
            "latency_examples": 0,
            "strategy": "fsdp",
            "forgetting_text": None,
        },
        "arms": [
            {"name": "fsdp x1", "method": "full_ft", "model": "m", "lr": 1e-5, "devices": 1},
            {"name": "fsdp x2", "method": "full_ft", "model": "m", "lr": 1e-5, "devices": 2},
        ],
    }


def _mb(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    imports_only = subprocess.run([sys.executable, "-c", IMPORTS_ONLY], capture_output=True, text=True, check=True)
    base = float(imports_only.stdout)
    with tempfile.TemporaryDirectory(prefix="fsdp-memory-") as tmp:
        path = Path(tmp) / "fsdp_memory.yaml"
        path.write_text(yaml.safe_dump(experiment(args.model, args.steps)))
        env = {**os.environ, "HARNESS_THREADS": os.environ.get("HARNESS_THREADS", "2")}
        load_before = os.getloadavg()[0]
        subprocess.run(
            [sys.executable, "-m", "harness", "run", str(path), "--no-track"],
            cwd=tmp,  # reports/ is written here
            env=env,
            check=False,
        )
        load_after = os.getloadavg()[0]
        results = next(p for p in Path(tmp, "reports").glob("*/*/results.json") if not p.parent.is_symlink())
        arms = json.loads(results.read_text())["arms"]
    print(f"\nmodel {args.model}; a process that only imported the stack: {base:.0f} MB RSS")
    print(f"load average {load_before:.1f} before, {load_after:.1f} after\n")
    print("| arm | rank | weights+grads+AdamW MB | read from disk MB | peak RSS MB | RSS above imports MB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for arm in arms:
        if arm["status"] != "ok":
            print(f"| {arm['arm']['name']} | failed: {arm.get('error')} | | | | |")
            continue
        for i, rank in enumerate(arm["consumed"]["extra"]["devices"]["ranks"]):
            figures = [rank["state_mb"], rank["loaded_mb"], rank["peak_rss_mb"], rank["peak_rss_mb"] - base]
            print(f"| {arm['arm']['name']} | {i} | " + " | ".join(_mb(v) for v in figures) + " |")


if __name__ == "__main__":
    main()
