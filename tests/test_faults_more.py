"""Injected faults, round two (issue 28): artifacts checked before reuse (a truncated
predictions.jsonl, unreadable or foreign checkpoints), honest messages (HARNESS_THREADS, which
signal killed an arm and whether the OOM killer is the likely sender). Each case says one
sentence on the console; none loses a completed arm."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from harness.execution import oom
from harness.training import checkpoint
from tests.test_runner import install_method_plugin, results_of, run_cli

# ----------------------------------------------------------------------------- HARNESS_THREADS


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5"])
def test_a_bad_harness_threads_is_one_sentence(value, write_experiment, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_THREADS", value)
    path = write_experiment([{"method": "zero_shot", "model": "llama"}])
    result = run_cli(path, "--no-track", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"HARNESS_THREADS is '{value}', not a positive whole number" in lines[0], lines
    assert not (tmp_path / "reports").exists()


# ----------------------------------------------------------------------------- killed by a signal


def counter(tmp_path, monkeypatch, kills: int) -> None:
    """A cgroup v2 memory.events with `kills` OOM kills, where harness.execution.oom looks."""
    monkeypatch.setattr(oom, "CGROUP_ROOT", tmp_path / "cgroup")
    (tmp_path / "cgroup").mkdir(exist_ok=True)
    (tmp_path / "cgroup" / "memory.events").write_text(f"low 0\nhigh 0\nmax 3\noom 1\noom_kill {kills}\n")


def test_out_of_memory_is_said_only_when_the_oom_count_rose(tmp_path, monkeypatch):
    counter(tmp_path, monkeypatch, 4)
    assert oom.oom_kills() == 4
    assert "likely by the kernel's out-of-memory killer" in oom.killed_by(9, 3, 4)
    assert "not by the out-of-memory killer" in oom.killed_by(9, 4, 4)  # a kill -9
    assert "no OOM count readable" in oom.killed_by(9, None, None)
    assert oom.killed_by(15, 3, 4) == "arm process killed by SIGTERM"  # never "memory" for another signal


# ----------------------------------------------------------------------------- artifacts before reuse


def test_an_arm_with_truncated_predictions_is_run_again_not_reused(write_experiment, tmp_path):
    path = write_experiment([{"method": "zero_shot", "model": "llama"}, {"method": "few_shot", "model": "llama"}])
    assert run_cli(path, "--no-track", cwd=tmp_path).exit_code == 0
    first_dir, _ = results_of(tmp_path)
    predictions = next(first_dir.glob("arms/zero_shot*/predictions.jsonl"))
    text = predictions.read_text()
    predictions.write_text(text[: len(text) // 2])  # a torn copy: the last line cut in the middle
    second = run_cli(path, "--no-track", cwd=tmp_path)
    assert second.exit_code == 0, second.output
    assert "not reusing" in second.output and "predictions.jsonl" in second.output, second.output
    run_dir, results = results_of(tmp_path)
    reused = {a["arm"]["method"]: a["reused_from"] for a in results["arms"]}
    assert reused == {"zero_shot": None, "few_shot": first_dir.name}  # the broken one ran again
    assert results["comparisons"] and (run_dir / "index.html").is_file()
    result = next(run_dir.glob("arms/few_shot*/result.json"))
    result.write_text(result.read_text()[:100])  # now the other arm's result is torn
    third = run_cli(path, "--no-track", cwd=tmp_path)
    assert third.exit_code == 0 and "result.json: unreadable (ValidationError); running it again" in third.output
    _, results = results_of(tmp_path)
    assert [a["reused_from"] for a in results["arms"]] == [run_dir.name, first_dir.name]  # an intact older copy


def full_payload(step: int, weights: dict) -> dict:
    return {
        "seconds": 1.0,
        "trainable": weights,
        "optimizer": {},
        "scheduler": {},
        "rng": [checkpoint.rng_state()],
        "consumed": {},
        "curves": {},
    }


def test_all_checkpoints_unreadable_is_said_on_the_console(tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    for step in (2, 4):
        checkpoint.save(folder, step, full_payload(step, {"w": torch.zeros(2)}))
        (folder / f"step-{step:08d}.pt").write_bytes(b"torn")
    with caplog.at_level(logging.WARNING, logger="harness.notice"), pytest.warns(UserWarning, match="skipping"):
        assert checkpoint.load_latest(folder) is None
    said = [r.getMessage() for r in caplog.records]
    assert said == ["all 2 checkpoint(s) unreadable: starting from step 0 (why: in log.txt)"]


def test_a_loadable_but_foreign_checkpoint_is_skipped_like_a_torn_one(tmp_path, caplog):
    from harness.training.loop import _mismatch

    model = torch.nn.Linear(2, 1)
    folder = tmp_path / "checkpoints"
    checkpoint.save(folder, 2, full_payload(2, {n: p.detach().clone() for n, p in model.named_parameters()}))
    checkpoint.save(folder, 4, full_payload(4, {"other.weight": torch.zeros(3)}))  # another model's
    with caplog.at_level(logging.WARNING, logger="harness.notice"), pytest.warns(UserWarning, match="not this model"):
        state = checkpoint.load_latest(folder, fits=lambda s: _mismatch(s, model))
    assert state["step"] == 2
    assert [r.getMessage() for r in caplog.records] == ["1 of 2 checkpoints unreadable: resuming from step 2"]
    torch.save({"format": checkpoint.FORMAT, "step": 6}, folder / "step-00000006.pt")  # lacks the payload
    with pytest.warns(UserWarning, match="lacks seconds, trainable"):
        assert checkpoint.load_latest(folder, fits=lambda s: _mismatch(s, model))["step"] == 2


@pytest.mark.slow
def test_a_rerun_over_unreadable_checkpoints_names_the_run_and_says_step_0(write_experiment, tmp_path):
    path = write_experiment([{"method": "full_ft", "model": "llama", "lr": 1e-3}], budget={"max_steps": 3})
    assert run_cli(path, "--no-track", cwd=tmp_path).exit_code == 0
    killed_dir, _ = results_of(tmp_path)
    arm_dir = next((killed_dir / "arms").iterdir())
    (arm_dir / "result.json").unlink()  # as if killed mid-training: checkpoints and no result
    (tmp_path / "reports" / "tiny" / "latest").unlink()
    (tmp_path / "reports" / "tiny" / "latest").symlink_to(killed_dir.name)  # `latest` names that run
    (arm_dir / "checkpoints").mkdir()
    for step in (1, 2):
        (arm_dir / "checkpoints" / f"step-{step:08d}.pt").write_bytes(b"not a checkpoint")
    result = run_cli(path, "--no-track", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert f"from the checkpoints of run {killed_dir.name}" in result.output, result.output
    assert "run latest" not in result.output
    assert "all 2 checkpoint(s) unreadable: starting from step 0" in result.output, result.output
    _, results = results_of(tmp_path)
    assert "resumed_from_step" not in results["arms"][0]["consumed"]["extra"]


# ----------------------------------------------------------------------------- reward model folders


def reward_model_arm(folder: str) -> dict:
    from tests.test_reward_rft import LORA

    return {**LORA, "stages": [{"grpo": {"rewards": ["format", {"reward_model": folder}]}}]}


@pytest.mark.parametrize(
    "config, expected",
    [
        (None, "holds LlamaForCausalLM, not a sequence-classification model"),  # the causal LM's own folder
        ("{not json", "config.json is not a readable JSON file (JSONDecodeError)"),
        ('["a list"]', "config.json is not a JSON object"),
        (b"\xff\xfe junk", "config.json is not a readable JSON file (UnicodeDecodeError)"),
    ],
)
def test_validate_refuses_a_reward_model_folder_that_is_no_reward_model(
    config, expected, write_experiment, tiny_models, tmp_path
):
    from harness.errors import HarnessError
    from harness.planning.experiment_loader import load_experiment
    from tests.test_reward_rft import RFT_BUDGET

    folder = tmp_path / "rm"
    shutil.copytree(tiny_models["llama"], folder)
    if config is not None:
        (folder / "config.json").write_bytes(config if isinstance(config, bytes) else config.encode())
    with pytest.raises(HarnessError) as err:
        load_experiment(write_experiment([reward_model_arm("rm")], budget=RFT_BUDGET))
    message = str(err.value)
    assert expected in message and str(folder) in message and "\n" not in message, message
    assert "rewards[1].reward_model" in message


def test_a_sequence_classifier_without_a_trained_score_head_is_refused_at_load(tiny_models, tmp_path):
    """The config says classifier, the weights are a causal LM's: transformers would initialise
    the score head at random (a warning in log.txt); the harness refuses, naming the folder."""
    from harness.errors import HarnessError
    from harness.stages.reward_model import RewardScorer, saved_folder_problem

    folder = tmp_path / "rm"
    shutil.copytree(tiny_models["llama"], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaForSequenceClassification"]}))
    assert saved_folder_problem(folder) is None  # the config alone looks right
    with pytest.raises(HarnessError, match=r"has no trained weights for score\.weight: its score would be random"):
        RewardScorer.load(folder)


# ----------------------------------------------------------------------------- plan on custom code


@pytest.mark.parametrize("trust", [False, True])
def test_plan_on_a_custom_code_model_folder_is_one_sentence(trust, write_experiment, tiny_models, tmp_path):
    from typer.testing import CliRunner

    from harness.cli import app

    folder = tmp_path / "custom"
    shutil.copytree(tiny_models["llama"], folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="mycustom", auto_map={"AutoConfig": "configuration_my.MyConfig"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_my.py").write_text("raise SystemExit('the folder's code ran')\n")

    def custom(data):
        data["models"] = {"mine": {"source": str(folder), "trust_remote_code": trust}}
        data["arms"] = [{"method": "lora", "model": "mine", "lr": 1e-3}]

    path = write_experiment([], edit=custom)
    result = CliRunner().invoke(app, ["plan", str(path)], env={"COLUMNS": "2000"})
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert f"model folder {folder} is custom code (auto_map in its config.json)" in lines[0]


# ----------------------------------------------------------------------------- a full disk mid-run

FULL_DISK = (  # what saving an adapter raises on a full disk
    "from safetensors import SafetensorError; raise SafetensorError("
    "'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left on device\" })')"
)


def test_a_full_disk_inside_an_arm_is_one_sentence_naming_the_folder(write_experiment, tmp_path, monkeypatch):
    install_method_plugin(tmp_path, monkeypatch, "fulldisk", FULL_DISK)
    path = write_experiment([{"method": "fulldisk", "model": "llama"}, {"method": "zero_shot", "model": "llama"}])
    result = run_cli(path, "--no-track", cwd=tmp_path)
    assert result.exit_code == 1, result.output
    run_dir, results = results_of(tmp_path)
    full, ok = results["arms"]
    arm_dir = (run_dir / "arms" / full["arm"]["slug"]).resolve()
    assert full["error"].startswith(f"the disk is full: cannot write in {arm_dir}"), full["error"]
    assert "SafetensorError" not in full["error"] and ok["status"] == "ok"


def test_a_full_disk_when_saving_the_run_is_one_sentence(write_experiment, tmp_path, monkeypatch):
    import errno

    from harness.execution import runner

    real, calls = runner.write_run_results, []

    def fills_up(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:  # the run started; the disk fills before the first arm's result is saved
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "write_run_results", fills_up)
    path = write_experiment([{"method": "zero_shot", "model": "llama"}])
    result = run_cli(path, "--no-track", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "error: the disk is full: cannot write in reports/tiny/" in result.output, result.output
    assert "Traceback" not in result.output
