"""The method registry (decorator + entry points, did-you-mean) and planning/hashing."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from harness import plugins
from harness.cli.main import app
from harness.data.order import example_order
from harness.errors import HarnessError
from harness.methods import Method, get_method, method_names, register, registry
from harness.methods.registry import TrainedParams
from harness.planning.experiment_loader import load_experiment
from harness.planning.plan import plan


def test_builtin_methods_are_registered():
    names = method_names()
    for name in ("zero_shot", "few_shot", "lora", "full_ft"):
        assert name in names
    assert get_method("lora").defaults["r"] == 16


def test_unknown_method_suggests_the_close_name():
    with pytest.raises(HarnessError, match="did you mean 'few_shot'"):
        get_method("fewshot")


def test_duplicate_registration_is_rejected():
    with pytest.raises(ValueError, match="registered twice"):

        @register("lora")
        class Impostor(Method):
            pass


def test_entry_point_methods_are_loaded(monkeypatch):
    class Plugin(Method):
        description = "a third-party method"

        class Params(TrainedParams):
            lr: float = 1e-3

    class FakeEntryPoint:
        name = "my_plugin"

        def load(self):
            return Plugin

    monkeypatch.setattr(registry.METHODS, "loaded", False)
    monkeypatch.setattr(registry.METHODS, "entries", dict(registry.METHODS.entries))
    monkeypatch.setattr(plugins, "entry_points", lambda group: [FakeEntryPoint()] if group == "harness.methods" else [])
    assert "my_plugin" in method_names()
    assert isinstance(get_method("my_plugin"), Plugin)


def test_methods_command_lists_names_targets_and_defaults():
    result = CliRunner().invoke(app, ["methods"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for text in ("lora", "full_ft", "few_shot", "zero_shot", "causal_lm", "use_rslora", "16"):
        assert text in result.output


def test_plan_crosses_models_and_hashes_stably(write_experiment):
    path = write_experiment(
        [{"method": "lora", "models": ["llama", "bert"]}, {"method": "zero_shot", "model": "llama"}]
    )
    arms = plan(load_experiment(path))
    assert [(a.method, a.model_key, a.model.kind) for a in arms] == [
        ("lora", "llama", "causal_lm"),
        ("lora", "bert", "encoder"),
        ("zero_shot", "llama", "causal_lm"),
    ]
    assert [a.hash for a in arms] == [a.hash for a in plan(load_experiment(path))]
    assert len({a.hash for a in arms}) == 3


@pytest.mark.parametrize("override", ["arms.0.lr=0.5", "budget.max_steps=3", "budget.seed=1", "arms.0.params.r=2"])
def test_hash_changes_with_what_changes_the_result(write_experiment, override):
    path = write_experiment([{"method": "lora", "model": "llama"}])
    before = plan(load_experiment(path))[0].hash
    assert plan(load_experiment(path, [override]))[0].hash != before


def test_hash_changes_when_the_data_changes(write_experiment, tiny_data, tmp_path):
    path = write_experiment([{"method": "lora", "model": "llama"}])
    before = plan(load_experiment(path))[0].hash
    copy = tmp_path / "train2.jsonl"
    copy.write_text((tiny_data / "train.jsonl").read_text().replace("great", "grand"))
    after = plan(load_experiment(path, [f"tasks.sentiment.data.train={copy}"]))[0].hash
    assert after != before


def test_example_order_depends_only_on_seed():
    assert list(example_order(10, 25, seed=0)) == list(example_order(10, 25, seed=0))
    assert list(example_order(10, 25, seed=0)) != list(example_order(10, 25, seed=1))
    first_epoch = example_order(10, 25, seed=0)[:10]
    assert sorted(first_epoch) == list(range(10)), "each epoch is a permutation: no example repeats early"


def test_every_planned_arm_is_typed_and_round_trips_through_arm_json():
    """arm.json (Arm.to_json / from_json, the one serialisation) gives back the same typed arm,
    and everything its hash covers: for every arm of every shipped experiment file."""
    import json
    from pathlib import Path

    from harness.config.schema import Budget, ModelSpec, TaskSpec
    from harness.planning.plan import Arm, _content_hash

    files = sorted((Path(__file__).resolve().parent.parent / "experiments").glob("*.yaml"))
    arms = [arm for path in files for arm in plan(load_experiment(path, check=False))]
    assert len(files) >= 6 and len(arms) >= 30
    assert any(arm.tasks for arm in arms) and any(arm.stages for arm in arms)  # multi-task and staged arms too
    for arm in arms:
        assert isinstance(arm.params, get_method(arm.method).Params), arm.name
        assert isinstance(arm.model, ModelSpec) and arm.model.kind in ("causal_lm", "encoder")
        assert isinstance(arm.budget, Budget)
        assert all(isinstance(t, TaskSpec) for t in arm.task_specs.values())
        assert (arm.task is None) == bool(arm.tasks)  # an arm spanning tasks has no task of its own
        text = arm.to_json()
        assert json.loads(text)["params"] == arm.params.model_dump(mode="json")
        back = Arm.from_json(text)
        assert back == arm, arm.name
        assert _content_hash(back, back.model.source, Path(back.base_dir)) == arm.hash, arm.name
