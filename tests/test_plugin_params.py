"""Typed plugin params: `harness validate` checks every method's and stage's params against its
pydantic Params model and answers with one `file:line: key.path: problem; fix` sentence, exit 2;
the plan then carries the validated, typed values."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import HarnessError
from harness.methods import get_method
from harness.planning.experiment_loader import load_experiment
from harness.planning.plan import plan

runner = CliRunner()

LORA = {"method": "lora", "model": "llama"}
MULTI = {"method": "multi_task", "model": "bert"}
DPO_ARM = {"method": "lora", "model": "llama", "stages": ["sft", {"dpo": {"beta": -1}}]}


@pytest.mark.parametrize(
    "arm, expected",
    [
        ({**LORA, "params": {"r": "eight"}}, ["arms[0].params.r", "valid integer", "(got 'eight')"]),
        ({**LORA, "params": {"rank": 8}}, ["arms[0].params.rank", "unknown key 'rank'", "did you mean 'r'"]),
        ({**LORA, "params": {"r": -4}}, ["arms[0].params.r", "greater than 0"]),
        ({**LORA, "params": {"alpha": [1, 2]}}, ["arms[0].params.alpha"]),
        ({**LORA, "params": {"bias": "some"}}, ["arms[0].params.bias", "'none', 'all' or 'lora_only'"]),
        ({**LORA, "params": {"dropout": 1.5}}, ["arms[0].params.dropout", "less than 1"]),
        ({**MULTI, "params": {"adapters": "shared"}}, ["arms[0].params.adapters", "'none' or 'per_task'"]),
        (
            {**MULTI, "params": {"loss_weights": {"nope": 1}}},
            ["arms[0].params.loss_weights", "'nope' is not a task of this arm", "choose one of: sentiment"],
        ),
        ({**MULTI, "params": {"head_lr": {"sentimnt": 1e-3}}}, ["arms[0].params.head_lr", "'sentimnt' is not a task"]),
        (
            {**MULTI, "params": {"loss_weights": {"sentiment": -1}}},
            ["arms[0].params.loss_weights", "greater than or equal"],
        ),
        (DPO_ARM, ["arms[0].stages[1].dpo.beta", "greater than 0"]),
        (
            {**LORA, "stages": [{"grpo": {"group_size": 1}}]},
            ["arms[0].stages[0].grpo.group_size", "greater than or equal to 2"],
        ),
        ({"method": "zero_shot", "model": "llama", "params": {"k": 2}}, ["arms[0].params", "takes no parameters"]),
        (
            {"method": "few_shot", "model": "llama", "params": {"k": 0}},
            ["arms[0].params.k", "greater than or equal to 1"],
        ),
    ],
)
def test_validate_rejects_bad_params_in_one_sentence(arm, expected, write_experiment):
    path = write_experiment([arm])
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    assert text.startswith(f"error: {path}:") and all(part in text for part in expected), text


def test_the_error_names_the_line_of_the_bad_key(write_experiment):
    path = write_experiment([{**LORA, "params": {"r": "eight"}}])
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "eight" in text)
    with pytest.raises(HarnessError) as caught:
        load_experiment(path)
    assert f"{path}:{line}:" in str(caught.value)


def test_plan_carries_validated_typed_params(write_experiment):
    path = write_experiment(
        [
            {**LORA, "lr": "1e-3", "params": {"r": "8", "alpha": 16}},
            {"method": "lora", "model": "llama", "stages": ["sft", "dpo"]},
        ]
    )
    arms = plan(load_experiment(path))
    assert isinstance(arms[0].params, get_method("lora").Params)  # what `wrap` receives: typed
    assert arms[0].params.r == 8 and isinstance(arms[0].params.r, int)
    assert arms[0].params.lr == pytest.approx(1e-3) and isinstance(arms[0].params.lr, float)
    assert arms[0].params.bias == "none"  # defaults filled in from the Params model
    assert arms[1].stages[1] == {"name": "dpo", "params": {"lr": 5e-5, "beta": 0.1, "loss_type": "sigmoid"}}


def test_a_registered_plugin_must_subclass_its_base():
    from harness.methods.registry import METHODS

    class NotAMethod:
        pass

    with pytest.raises(HarnessError, match="is not a subclass of harness.methods.registry.Method"):
        METHODS.register("not_a_method")(NotAMethod)
    assert "not_a_method" not in METHODS.entries


def test_methods_command_prints_each_params_field():
    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0, result.output
    for text in ("lora", "use_rslora", "rank of the low-rank update", "quant_type", "loss_weights"):
        assert text in result.output
