"""`harness validate`: a table of bad inputs and the one sentence each must produce."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from harness.cli.main import app
from harness.planning.experiment_loader import load_experiment

ARMS = [{"method": "lora", "model": "llama"}, {"method": "full_ft", "model": "bert"}]


def _set(path, value):
    def edit(data):
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _delete(path):
    def edit(data):
        node = data
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return edit


BAD_INPUTS = [
    # (id, edit, substrings the message must contain)
    ("unknown top-level key", _set(["arm"], []), ["unknown key 'arm'", "did you mean 'arms'"]),
    ("unknown budget key", _set(["budget", "max_step"], 3), ["budget.max_step", "did you mean 'max_steps'"]),
    ("wrong type", _set(["budget", "max_steps"], "ten"), ["budget.max_steps", "integer", "'ten'"]),
    ("negative steps", _set(["budget", "max_steps"], -1), ["budget.max_steps", "greater than 0"]),
    ("missing tasks", _delete(["tasks"]), ["tasks", "is required", "add `tasks:`"]),
    (
        "unknown method",
        _set(["arms", 0, "method"], "lorra"),
        ["arms[0].method", "unknown method 'lorra'", "did you mean 'lora'"],
    ),
    ("unknown param", _set(["arms", 0, "params"], {"alpah": 8}), ["arms[0].params.alpah", "did you mean 'alpha'"]),
    (
        "unknown model key",
        _set(["arms", 1, "model"], "bret"),
        ["arms[1].model", "unknown model 'bret'", "did you mean 'bert'"],
    ),
    ("not applicable", _set(["arms", 1, "method"], "zero_shot"), ["arms[1].method", "does not apply", "encoder"]),
    (
        "lr for untrained",
        _set(["arms", 0], {"method": "zero_shot", "model": "llama", "lr": 0.1}),
        ["arms[0].lr", "takes no learning rate"],
    ),
    (
        "missing data file",
        _set(["tasks", "sentiment", "data", "test"], "nope/test.jsonl"),
        ["tasks.sentiment.data.test", "data file not found"],
    ),
    (
        "missing column",
        _set(["tasks", "sentiment", "data", "columns"], {"id": "uid", "text": "reveiw", "label": "sentiment"}),
        ["tasks.sentiment.data.columns.text", "column 'reveiw'", "did you mean 'review'"],
    ),
    (
        "unmapped column",
        _set(["tasks", "sentiment", "data", "columns"], {}),
        ["tasks.sentiment.data", "column 'text'", "columns: {text: <column>}"],
    ),
    (
        "unknown prepared data",
        _set(["tasks", "sentiment", "data"], {"prepared": "sentimnt"}),
        ["did you mean 'sentiment'"],
    ),
    ("batch not divisible", _set(["budget", "grad_accum"], 3), ["budget", "not divisible"]),
]


@pytest.mark.parametrize("case,edit,expected", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_validate_bad_input_gives_one_clear_sentence(write_experiment, case, edit, expected):
    path = write_experiment(ARMS, edit=edit)
    result = CliRunner().invoke(app, ["validate", str(path)])
    message = result.output
    assert result.exit_code == 2, message
    assert "Traceback" not in message
    assert str(path) in message, "the message names the file"
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_error_names_the_line(write_experiment):
    path = write_experiment(ARMS, edit=_set(["arms", 1, "method"], "lorra"))
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "lorra" in text)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert f"{path}:{line}:" in result.output


def test_yaml_syntax_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntasks: [unclosed\n")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "not valid YAML" in result.output and "Traceback" not in result.output


def test_valid_file_and_set_override(write_experiment):
    path = write_experiment(ARMS)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    experiment = load_experiment(path, ["budget.max_steps=7", "arms.0.lr=0.001", "arms.0.params.r=4"])
    assert experiment.budget.max_steps == 7
    assert experiment.arms[0].lr == 0.001 and experiment.arms[0].params == {"r": 4}


def test_bad_set_override_is_a_clear_error(write_experiment):
    path = write_experiment(ARMS)
    result = CliRunner().invoke(app, ["validate", str(path), "--set", "arms.9.lr=1"])
    assert result.exit_code == 2 and "not an index" in result.output
    result = CliRunner().invoke(app, ["validate", str(path), "--set", "budget.max_steps"])
    assert result.exit_code == 2 and "has no '='" in result.output
