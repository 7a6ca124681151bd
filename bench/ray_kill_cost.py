"""What a killed Ray worker costs an arm: with `executor.storage` (the retry resumes from the newest
stored checkpoint) against without it (the retry starts at step 0), on the tests' tiny Llama.

    python bench/ray_kill_cost.py [--steps 2000] [--every 100] [--kill-at 1000] [--rounds 1] [--fsdp]

One two-node local cluster (1 CPU per node; 2 with --fsdp); each scenario is a fresh driver running
one LoRA arm of `--steps` steps with a checkpoint every `--every` (with --fsdp: a full fine-tune on
two ranks of one node under FSDP, whose checkpoints are DCP folders, stored with a COMPLETE marker):

- uninterrupted (with storage);
- killed, storage: the Ray worker running the arm is SIGKILLed once checkpoint `--kill-at` is stored;
- killed, no storage: killed once the same checkpoint is in the arm's scratch folder (today).

Seconds lost to the kill: from the kill until the retry is one checkpoint interval (`--every` steps)
past the step it was killed at, minus the time of those `--every` steps: the new worker's start-up,
the arm's load and resume, and the steps done again (none with storage; every step without). The
drivers' wall times are printed too, with the load average beside every figure (on a shared machine
they differ by more than the kill costs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import experiment_dict, sentiment_rows  # noqa: E402
from tests.tiny_models import build_tiny_models  # noqa: E402


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def write_inputs(folder: Path, steps: int, every: int, storage: Path | None, fsdp: bool) -> Path:
    models = build_tiny_models(folder / "models")
    data = folder / "data"
    data.mkdir()
    for split, n, seed in (("train", 64, 1), ("test", 16, 2)):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentiment_rows(n, seed)))
    budget = {"max_steps": steps, "checkpoint_every": every, "eval_precision": "fp32"}
    arm = {"method": "lora", "model": "llama", "lr": 1e-3}
    if fsdp:
        arm, budget = {**arm, "method": "full_ft"}, {**budget, "devices": 2, "strategy": "fsdp"}
    experiment = experiment_dict(models, data, [arm], budget=budget)
    experiment["executor"] = {"name": "ray", **({"storage": str(storage)} if storage else {})}
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment, sort_keys=False))
    return path


def arm_process(scratch: list[Path]) -> psutil.Process | None:
    """The arm's process started by the Ray worker: the arm process, or the torchrun of its ranks."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if "harness.execution.arm_process" in line and any(str(s) in line for s in scratch):
            found.append((proc, "torch.distributed.run" in line))
    return next((p for p, torchrun in found if torchrun), found[0][0] if found else None)


def checkpoint_name(step: int, fsdp: bool, stored: bool) -> str:
    """What says checkpoint `step` is complete: its file; for a DCP folder, its COMPLETE marker in the
    storage (uploaded last), its loop.pt in a scratch folder (renamed from its temporary name whole)."""
    if not fsdp:
        return f"step-{step:08d}.pt"
    return f"step-{step:08d}/{'COMPLETE' if stored else 'loop.pt'}"


def wait_for_checkpoint(watch: list[Path], step: int, driver: subprocess.Popen, fsdp: bool, stored: bool) -> None:
    name = checkpoint_name(step, fsdp, stored)
    while not any(next(folder.glob(f"**/checkpoints/{name}"), None) for folder in watch):
        if driver.poll() is not None:
            sys.exit(f"the arm ended before checkpoint {step}; raise --steps or lower --kill-at")
        time.sleep(0.02)


def scenario(
    path: Path,
    address: str,
    watch: list[Path] | None,
    scratch: list[Path],
    kill_at: int,
    every: int,
    fsdp: bool,
    stored: bool,
) -> dict:
    before = load()
    start = time.perf_counter()
    driver = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", str(path), "--address", address, "--no-track", "--force"],
        cwd=path.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    killed_after = regained = None
    if watch is not None:
        wait_for_checkpoint(watch, kill_at, driver, fsdp, stored)
        proc = arm_process(scratch)
        if proc is None:
            sys.exit("the arm ended before the kill; raise --steps or lower --kill-at")
        killed = time.perf_counter()
        killed_after = round(killed - start, 1)
        os.kill(proc.ppid(), signal.SIGKILL)
        wait_for_checkpoint(watch, kill_at + every, driver, fsdp, stored)  # the retry is one interval past the kill
        regained = round(time.perf_counter() - killed, 1)
    output, _ = driver.communicate()
    wall = time.perf_counter() - start
    if driver.returncode != 0:
        sys.exit(f"harness run failed ({driver.returncode}):\n{output[-3000:]}")
    run_dir = sorted(p for p in (path.parent / "reports" / "tiny").iterdir() if p.name != "latest")[-1]
    (arm,) = json.loads((run_dir / "results.json").read_text())["arms"]
    return {
        "wall_s": round(wall, 1),
        "killed_after_s": killed_after,
        "kill_to_one_interval_past_it_s": regained,
        "resumed_from_step": (arm["consumed"]["extra"] or {}).get("resumed_from_step"),
        "attempt": arm["provenance"]["placement"].get("attempt"),
        "train_s": arm["consumed"]["seconds"],
        "load_before": before,
        "load_after": load(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--kill-at", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--fsdp", action="store_true", help="a full fine-tune on 2 ranks under FSDP")
    options = parser.parse_args()
    cpus = 2 if options.fsdp else 1

    from ray.cluster_utils import Cluster

    work = Path(tempfile.mkdtemp(prefix="kill-cost-"))
    session = tempfile.mkdtemp(prefix="rk", dir="/tmp")
    os.makedirs(os.path.join(tempfile.gettempdir(), "ray"), exist_ok=True)
    scratch = [work / "scratch-head", work / "scratch-worker"]
    for folder in scratch:
        folder.mkdir()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": cpus,
            "include_dashboard": False,
            "temp_dir": session,
            "env_vars": {"HARNESS_SCRATCH": str(scratch[0])},
        },
    )
    cluster.add_node(num_cpus=cpus, temp_dir=session, env_vars={"HARNESS_SCRATCH": str(scratch[1])})
    cluster.wait_for_nodes(timeout=300)
    storage = work / "shared"
    with_storage = write_inputs(work / "with", options.steps, options.every, storage, options.fsdp)
    without = write_inputs(work / "without", options.steps, options.every, None, options.fsdp)
    rows = []
    try:
        for round_ in range(options.rounds):
            for name, path, watch, stored in (
                ("uninterrupted", with_storage, None, False),
                ("killed, storage", with_storage, [storage], True),
                ("killed, no storage (before)", without, scratch, False),
            ):
                row = {
                    "round": round_,
                    "scenario": name,
                    **scenario(
                        path, cluster.address, watch, scratch, options.kill_at, options.every, options.fsdp, stored
                    ),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        cluster.shutdown()
        shutil.rmtree(session, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    for round_ in range(options.rounds):
        mine = [r for r in rows if r["round"] == round_]
        base = next(r for r in mine if r["scenario"] == "uninterrupted")
        interval_s = base["train_s"] * options.every / options.steps  # `--every` steps, uninterrupted
        summary = {
            r["scenario"]: {
                "seconds_lost": round(r["kill_to_one_interval_past_it_s"] - interval_s, 1),
                "wall_minus_uninterrupted_s": round(r["wall_s"] - base["wall_s"], 1),
            }
            for r in mine
            if r["killed_after_s"]
        }
        print(json.dumps({"round": round_, "interval_s": round(interval_s, 1), **summary}))


if __name__ == "__main__":
    main()
