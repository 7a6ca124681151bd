"""One arm on two CPU processes (torchrun, gloo) and an arm killed after a checkpoint that resumes
(issue 13). Both start real arm processes: seconds each, so few of them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_runner import results_of, run_cli

TIMINGS = {
    "train_seconds",
    "train_tokens_per_s",
    "load_seconds",
    "peak_memory_mb",
    "peak_rss_mb",
    "eval_seconds",
    "latency_p50_ms",
    "latency_p95_ms",
    "examples_per_s",
    "saved_mb",
}


def _quality(metrics: dict) -> dict:
    """Metrics that depend on what was learned, not on how fast or where."""
    return {
        k: v
        for k, v in metrics.items()
        if k not in TIMINGS and "seconds" not in k and "memory" not in k and "latency" not in k and "_per_s" not in k
    }


@pytest.mark.slow
def test_an_arm_on_two_cpu_processes_matches_one_under_ddp_and_fsdp(write_experiment, tmp_path):
    # No dropout: its masks are drawn per rank, for a rank's share of the batch, so they cannot
    # match a one-device run's (any DDP run has this); everything else must.
    lora = {"method": "lora", "model": "llama", "lr": 1e-3, "params": {"dropout": 0.0}}
    # FSDP runs on CPU too (torch 2.13, gloo): a full fine-tune sharded over two processes.
    full = {"method": "full_ft", "model": "llama", "lr": 1e-3}
    arms = [
        {**lora, "name": "lora one"},
        {**lora, "name": "lora ddp", "devices": 2},
        {**full, "name": "full one"},
        {**full, "name": "full fsdp", "devices": 2, "strategy": "fsdp"},
    ]
    path = write_experiment(arms, budget={"max_steps": 3, "batch_size": 4, "grad_accum": 2})
    result = run_cli(path, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run_dir, results = results_of(tmp_path)
    assert [a["status"] for a in results["arms"]] == ["ok"] * 4, [a.get("error") for a in results["arms"]]
    assert results["budget_audit"]["identical"] is True
    for one, two in (results["arms"][:2], results["arms"][2:]):
        for key in ("steps", "examples", "tokens", "order_hash"):
            assert one["consumed"][key] == two["consumed"][key], key
        for (s1, l1), (s2, l2) in zip(one["curves"]["train_loss"], two["curves"]["train_loss"], strict=True):
            assert s1 == s2 and abs(l1 - l2) <= 1e-4
        # what rank 0 evaluated alone after training is the trained model, as on one device
        assert abs(one["metrics"]["forgetting"] - two["metrics"]["forgetting"]) <= 1e-4
        # rank 0 alone evaluated and wrote: the same files as the one-device arm, one result
        folder = run_dir / "arms" / two["arm"]["slug"]
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            p.name for p in (run_dir / "arms" / one["arm"]["slug"]).iterdir()
        )
        assert len((folder / "predictions.jsonl").read_text().splitlines()) == 8
        assert "Traceback" not in (folder / "log.txt").read_text()


BLOCK_AFTER_FIRST_CHECKPOINT = """
import sys, time
from harness.training import checkpoint
real_save = checkpoint.save
def save_then_wait(folder, step, payload):
    path = real_save(folder, step, payload)
    print("checkpoint written", step, flush=True)
    time.sleep(3600)  # the test kills this process now, as a preemption or an OOM kill would
checkpoint.save = save_then_wait
from harness.execution.arm_process import main
sys.exit(main(sys.argv[1:]))
"""


def _arm_json(write_experiment, tmp_path: Path) -> Path:
    from harness.config.load import load_experiment
    from harness.planning.plan import plan

    arms = [{"method": "full_ft", "model": "llama", "lr": 1e-3}]
    arm = plan(load_experiment(write_experiment(arms, budget={"max_steps": 6, "checkpoint_every": 2})))[0]
    path = tmp_path / "arm.json"
    path.write_text(arm.to_json())
    return path


def _run_arm(arm_json: Path, out_dir: Path, *prefix: str) -> subprocess.Popen:
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, *(prefix or ("-m", "harness.execution.arm_process")), str(arm_json), str(out_dir)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_an_arm_killed_after_a_checkpoint_resumes_and_ends_as_if_uninterrupted(write_experiment, tmp_path):
    arm_json = _arm_json(write_experiment, tmp_path)
    whole = _run_arm(arm_json, tmp_path / "whole")
    killed = _run_arm(arm_json, tmp_path / "killed", "-c", BLOCK_AFTER_FIRST_CHECKPOINT)
    for line in killed.stdout:  # wait for the checkpoint, however long the machine takes
        if line.startswith("checkpoint written"):
            break
    else:
        pytest.fail(f"the arm ended without writing a checkpoint (exit {killed.wait()})")
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "result.json").exists()
    assert [p.name for p in (tmp_path / "killed" / "checkpoints").glob("step-*.pt")] == ["step-00000002.pt"]

    resumed = _run_arm(arm_json, tmp_path / "killed")
    output = resumed.communicate()[0]
    assert resumed.returncode == 0, output
    assert whole.wait() == 0, whole.stdout.read()
    a = json.loads((tmp_path / "whole" / "result.json").read_text())
    b = json.loads((tmp_path / "killed" / "result.json").read_text())
    assert (a["status"], b["status"]) == ("ok", "ok"), b.get("error")
    assert b["consumed"]["extra"] == {"resumed_from_step": 2} and "resumed_from_step" not in a["consumed"]["extra"]
    for key in ("steps", "examples", "tokens", "order_hash"):
        assert a["consumed"][key] == b["consumed"][key], key
    assert a["curves"]["train_loss"] == b["curves"]["train_loss"]  # to the digit, fp32 on CPU
    assert _quality(a["metrics"]) == _quality(b["metrics"]) and "accuracy" in _quality(b["metrics"])
    assert not (tmp_path / "killed" / "checkpoints").exists()  # a finished arm keeps none


def test_the_runner_hands_a_killed_runs_checkpoints_to_the_rerun(tmp_path):
    from harness.execution.runner import take_over_checkpoints

    class Arm:
        hash = "abcdef0123456789"

    old = tmp_path / "exp" / "20260101-000000" / "arms" / "lora-x-abcdef01" / "checkpoints"
    old.mkdir(parents=True)
    (old / "step-00000010.pt").write_bytes(b"x")
    (tmp_path / "exp" / "latest").symlink_to("20260101-000000")  # found by the glob too: named by its id
    new_arm = tmp_path / "exp" / "20260101-000100" / "arms" / "lora-x-abcdef01"
    new_arm.mkdir(parents=True)
    assert take_over_checkpoints(tmp_path / "exp", Arm(), new_arm) == "20260101-000000"
    assert (new_arm / "checkpoints" / "step-00000010.pt").is_file() and not old.exists()
    other = tmp_path / "exp" / "20260101-000200" / "arms" / "lora-x-99999999"
    other.mkdir(parents=True)
    Arm.hash = "9999999900000000"
    assert take_over_checkpoints(tmp_path / "exp", Arm(), other) is None  # another arm's are not taken
