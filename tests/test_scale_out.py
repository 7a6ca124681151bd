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


def _same_training(one: dict, two: dict, run_dir: Path) -> None:
    """Two arms trained alike: same consumed budget, losses within 1e-4 (fp32 on CPU; reductions
    over ranks add in another order), what rank 0 evaluated is the trained model, and rank 0 alone
    wrote the same files as the one-device arm."""
    for key in ("steps", "examples", "tokens", "order_hash"):
        assert one["consumed"][key] == two["consumed"][key], key
    for (s1, l1), (s2, l2) in zip(one["curves"]["train_loss"], two["curves"]["train_loss"], strict=True):
        assert s1 == s2 and abs(l1 - l2) <= 1e-4
    assert abs(one["metrics"]["forgetting"] - two["metrics"]["forgetting"]) <= 1e-4
    assert one["metrics"]["accuracy"] == two["metrics"]["accuracy"]
    folder = run_dir / "arms" / two["arm"]["slug"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in (run_dir / "arms" / one["arm"]["slug"]).iterdir()
    )
    assert len((folder / "predictions.jsonl").read_text().splitlines()) == 8
    assert "Traceback" not in (folder / "log.txt").read_text()


def _assert_sharded(arm: dict, world: int) -> list[dict]:
    """FSDP really split every parameter: each rank reports DTensor local shards of ~1/world of each
    parameter, and none left whole. Fails if the arm fell back to DDP (no DTensors, fraction 1)."""
    record = arm["consumed"]["extra"]["devices"]
    assert (record["world_size"], record["strategy"], len(record["ranks"])) == (world, "fsdp", world)
    for rank in record["ranks"]:
        assert rank["blocks"] == 2  # the tiny Llama's two decoder layers, each its own FSDP unit
        assert rank["sharded_params"] > 0 and rank["unsharded_params"] == 0
        assert 1 / world - 0.05 <= rank["min_fraction"] <= rank["max_fraction"] <= 1 / world + 0.05
    assert sum(r["local_numel"] for r in record["ranks"]) == record["ranks"][0]["full_numel"]
    # Rank 0 alone read the weights; the others built the model on meta and received their shards.
    first, *others = record["ranks"]
    assert first["loaded_mb"] >= 4 * first["full_numel"] / 2**20 * 0.99  # the whole model, fp32
    assert [r["loaded_mb"] for r in others] == [0.0] * (world - 1)
    return record["ranks"]


def _run_three(arms: list[dict], write_experiment, tmp_path: Path, **budget) -> tuple[Path, list[dict]]:
    """`harness run` of three arms (3 steps, 2 micro-batches, fp32 evaluation): all ok, same budget."""
    budget = {"max_steps": 3, "batch_size": 4, "grad_accum": 2, "eval_precision": "fp32", **budget}
    result = run_cli(write_experiment(arms, budget=budget), cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run_dir, results = results_of(tmp_path)
    assert [a["status"] for a in results["arms"]] == ["ok"] * 3, [a.get("error") for a in results["arms"]]
    assert results["budget_audit"]["identical"] is True
    return run_dir, results["arms"]


@pytest.mark.slow
def test_a_lora_arm_on_two_cpu_processes_matches_one_under_ddp_and_fsdp(write_experiment, tmp_path):
    # No dropout: its masks are drawn per rank, for a rank's share of the batch, so they cannot
    # match a one-device run's (any DDP run has this); everything else must.
    lora = {"method": "lora", "model": "llama", "lr": 1e-3, "params": {"dropout": 0.0}}
    arms = [
        {**lora, "name": "lora one"},
        {**lora, "name": "lora ddp", "devices": 2},
        {**lora, "name": "lora fsdp", "devices": 2, "strategy": "fsdp"},  # the frozen base sharded too
    ]
    run_dir, (one, ddp, fsdp) = _run_three(arms, write_experiment, tmp_path)
    _same_training(one, ddp, run_dir)
    _same_training(one, fsdp, run_dir)
    assert ddp["consumed"]["extra"]["devices"]["strategy"] == "ddp"
    _assert_sharded(fsdp, 2)


@pytest.mark.slow
def test_a_full_fine_tune_under_fsdp_shards_over_two_cpu_processes_and_evaluates_as_on_one(write_experiment, tmp_path):
    # Real FSDP2 on CPU (torch 2.13, gloo): the same budget consumed, the same metrics, and each of
    # the two ranks holds half of the weights, gradients and AdamW state that one device holds.
    full = {"method": "full_ft", "model": "llama", "lr": 1e-3}
    arms = [
        {**full, "name": "full one"},
        {**full, "name": "full fsdp one", "strategy": "fsdp"},  # world size 1: the sharded path, unsplit
        {**full, "name": "full fsdp two", "devices": 2, "strategy": "fsdp"},
    ]
    run_dir, (one, fsdp_one, fsdp_two) = _run_three(arms, write_experiment, tmp_path, save="full")
    _same_training(one, fsdp_one, run_dir)
    _same_training(one, fsdp_two, run_dir)
    (alone,) = _assert_sharded(fsdp_one, 1)
    for rank in _assert_sharded(fsdp_two, 2):
        assert rank["state_mb"] < 0.6 * alone["state_mb"]  # weights + gradients + optimizer state
    # save: full keeps the trained weights (gathered from both ranks) as safetensors from_pretrained loads
    import torch
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 6, 7, 8]])
    logits = []
    for arm in (one, fsdp_two):
        assert arm["artifacts"]["model"] == "model"
        folder = run_dir / "arms" / arm["arm"]["slug"] / "model"
        assert list(folder.glob("*.safetensors")) and not list(folder.glob("*.bin"))
        with torch.no_grad():
            logits.append(AutoModelForCausalLM.from_pretrained(folder).eval()(input_ids=ids).logits)
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-4, atol=1e-4)


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


def _arm_json(write_experiment, tmp_path: Path, **arm) -> Path:
    from harness.planning.experiment_loader import load_experiment
    from harness.planning.plan import plan

    arms = [{"method": "full_ft", "model": "llama", "lr": 1e-3, **arm}]
    arm = plan(load_experiment(write_experiment(arms, budget={"max_steps": 6, "checkpoint_every": 2})))[0]
    path = tmp_path / "arm.json"
    path.write_text(arm.to_json())
    return path


def _kill_after_first_checkpoint(killed: subprocess.Popen) -> None:
    """SIGKILL the arm (or its torchrun) once it prints that a checkpoint is written."""
    for line in killed.stdout:  # wait for the checkpoint, however long the machine takes
        if line.startswith("checkpoint written"):
            break
    else:
        pytest.fail(f"the arm ended without writing a checkpoint (exit {killed.wait()})")
    killed.send_signal(signal.SIGKILL)
    killed.wait()


def _run_arm(arm_json: Path, out_dir: Path, *prefix: str) -> subprocess.Popen:
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, *(prefix or ("-m", "harness.execution.arm_process")), str(arm_json), str(out_dir)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_an_arm_killed_after_a_checkpoint_resumes_and_ends_as_if_uninterrupted(write_experiment, tmp_path):
    arm_json = _arm_json(write_experiment, tmp_path)
    whole = _run_arm(arm_json, tmp_path / "whole")
    killed = _run_arm(arm_json, tmp_path / "killed", "-c", BLOCK_AFTER_FIRST_CHECKPOINT)
    _kill_after_first_checkpoint(killed)
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


BLOCK_RANKS_AFTER_FIRST_SHARDED_CHECKPOINT = """
import sys, threading
from harness.training import sharded_checkpoint
real_save = sharded_checkpoint.save
def save_then_wait(folder, step, *args):
    cost = real_save(folder, step, *args)
    print("checkpoint written", step, flush=True)
    threading.Event().wait()  # every rank waits here until the test kills torchrun
sharded_checkpoint.save = save_then_wait
from harness.execution.arm_process import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_an_fsdp_arm_on_two_ranks_killed_after_a_checkpoint_resumes_to_the_digit(write_experiment, tmp_path):
    """DCP checkpoints under FSDP (N=2, gloo): torchrun SIGKILLed after the first sharded checkpoint
    (its ranks die with it), then rerun on the same folder: the same losses, metrics and consumed
    budget as an uninterrupted run, to the digit."""
    import os

    from harness.execution.launch import arm_command, distributed_environment

    arm_json = _arm_json(write_experiment, tmp_path, devices=2, strategy="fsdp")
    env = distributed_environment(2, {**os.environ, "HARNESS_THREADS": "2"})
    script = tmp_path / "block.py"
    script.write_text(BLOCK_RANKS_AFTER_FIRST_SHARDED_CHECKPOINT)

    def start(out_dir: Path, *command: str) -> subprocess.Popen:
        out_dir.mkdir(parents=True, exist_ok=True)
        command = command or tuple(arm_command(2, arm_json, out_dir))
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    whole = start(tmp_path / "whole")
    assert "Traceback" not in whole.communicate()[0] and whole.returncode == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    killed = start(tmp_path / "killed", *torchrun, str(script), str(arm_json), str(tmp_path / "killed"))
    _kill_after_first_checkpoint(killed)
    folder = tmp_path / "killed" / "checkpoints"
    assert not (tmp_path / "killed" / "result.json").exists()
    assert [p.name for p in folder.iterdir()] == ["step-00000002"]  # complete, renamed from its temp name
    assert sorted(p.name for p in (folder / "step-00000002").iterdir()) == [
        ".metadata",
        "__0_0.distcp",
        "__1_0.distcp",
        "loop.pt",
    ]  # one shard file per rank

    resumed = start(tmp_path / "killed")
    output = resumed.communicate()[0]
    assert resumed.returncode == 0, output
    a = json.loads((tmp_path / "whole" / "result.json").read_text())
    b = json.loads((tmp_path / "killed" / "result.json").read_text())
    assert (a["status"], b["status"]) == ("ok", "ok"), b.get("error")
    assert b["consumed"]["extra"]["resumed_from_step"] == 2 and "resumed_from_step" not in a["consumed"]["extra"]
    for key in ("steps", "examples", "tokens", "order_hash"):
        assert a["consumed"][key] == b["consumed"][key], key
    assert a["curves"]["train_loss"] == b["curves"]["train_loss"]  # to the digit, fp32 on CPU
    assert _quality(a["metrics"]) == _quality(b["metrics"]) and "accuracy" in _quality(b["metrics"])
    assert a["consumed"]["extra"]["devices"]["checkpoints"]["written"] == 2  # steps 2 and 4 of 6: cost reported
    assert not folder.exists()  # a finished arm keeps none
