"""The bad-input corpus (tests/bad_inputs/, written by its make_corpus.py): every file, and every
--set value, is refused by the command that reads it with exit code 2 and ONE line that names
the file (and the key where there is one), no traceback, no raw control character, nothing
written, in well under a second (in-process). Two cases run as a subprocess under a memory
limit and a timeout, so that an alias bomb or deep nesting would fail the test, not hang CI."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
EXPERIMENTS, GOLDEN, RESULTS, SETS = (CORPUS / d for d in ("experiments", "golden", "results", "sets"))

# file -> what the one line must say (besides the file's name). Every file of the corpus is here:
# test_every_corpus_file_is_in_the_table fails on one that is not.
EXPECT = {
    "a_list.yaml": "must be a mapping",
    "empty.yaml": "must be a mapping",
    "alias_bomb_in_params.yaml": "aliases expand",
    "alias_bomb_in_stage.yaml": "aliases expand",
    "alias_bomb_top_level.yaml": "aliases expand",
    "recursive_alias.yaml": "alias refers to the value",
    "deep_nesting_block.yaml": "nests deeper",
    "deep_nesting_flow.yaml": "nests deeper",
    "duplicate_top_key.yaml": "key 'budget' appears twice",
    "duplicate_arm_key.yaml": "key 'lr' appears twice",
    "duplicate_label.yaml": "tasks.sentiment.labels: label 'positive' appears twice",
    "empty_labels.yaml": "tasks.sentiment.labels",
    "not_utf8.yaml": "is not UTF-8",
    "python_tag.yaml": "python/object/apply",
    "syntax_error.yaml": "is not valid YAML",
    "tab_indent.yaml": "is not valid YAML",
    "ansi_column_name.yaml": "tasks.sentiment.data.columns.text",
    "r_is_text.yaml": "arms[0].params.r",
    "alpha_is_list.yaml": "arms[0].params.alpha",
    "r_negative.yaml": "arms[0].params.r",
    "unknown_param.yaml": "did you mean 'r'",
    "unknown_method.yaml": "arms[2].method",
    "unknown_model_ref.yaml": "arms[2].model",
    "unknown_task_ref.yaml": "arms[2].task",
    "missing_local_model.yaml": "models.mine.source",
    "model_folder_without_config.yaml": "has no config.json",
    "source_escapes_project.yaml": "has no config.json",
    "offline_hub_id.yaml": "not in the local Hugging Face cache",
    "unknown_packaged_model.yaml": "models.pk.source",
    "label_not_in_labels.yaml": "label 'neutral', which is not in labels",
    "prompt_names_missing_field.yaml": "tasks.sentiment.prompt: names the field '{review}'",
    "prompt_unbalanced_brace.yaml": "tasks.sentiment.prompt",
    "prompt_attribute_field.yaml": "not a plain field name",
    "broken_jsonl_line.yaml": "broken_line.jsonl:4: line 4 is not valid JSON",
    "jsonl_array_row.yaml": "array_row.jsonl:3",
    "data_not_utf8.yaml": "latin1.jsonl is not UTF-8",
    "corrupt_parquet.yaml": "not a readable parquet file",
    "empty_train_file.yaml": "empty.jsonl has no rows",
    "row_without_label.yaml": "row 2 has no value for 'label'",
    "unknown_data_suffix.yaml": "tasks.sentiment.data.train",
    "missing_data_file.yaml": "data file not found",
    "missing_column.yaml": "column 'review'",
    "ner_tags_mismatch.yaml": "same length",
    "huge_max_steps.yaml": "budget.max_steps",
    "batch_not_divisible.yaml": "not divisible by grad_accum",
    "negative_lr.yaml": "arms[0].lr",
    "nan_lr.yaml": "arms[0].lr",
    "lr_on_zero_shot.yaml": "takes no learning rate",
    "unknown_budget_key.yaml": "did you mean 'max_steps'",
    "max_seq_len_tiny.yaml": "budget.max_seq_len",
    "name_with_slash.yaml": "name:",
    "name_with_markup.yaml": "got '[/]bad'",
    "no_arms.yaml": "arms:",
    "unknown_stage.yaml": "did you mean 'sft'",
    "stage_on_zero_shot.yaml": "cannot run stages",
    "tasks_is_a_list.yaml": "tasks:",
    "missing_golden_set.yaml": "golden_sets[0]",
    "unknown_prepared_dataset.yaml": "did you mean 'sentiment'",
    "cpt_corpus_binary.yaml": "paper.txt is a binary file (it holds NUL bytes)",
    "cpt_corpus_not_utf8.yaml": "corpus_latin1.txt is not UTF-8 text",
    "cpt_corpus_bin_file.yaml": "weights.bin in the corpus folder",
    "cpt_corpus_pdf.yaml": "corpus.pdf is not a kind of file a corpus reads",
    "domain_text_bad_line.yaml": "corpus_bad_line.jsonl:2: line 2 is not a JSON object",
    # golden sets
    "golden_alias_bomb.yaml": "aliases expand",
    "golden_duplicate_id.yaml": "item id 'a' appears twice",
    "golden_bad_regex.yaml": "items[1].expect.regex",
    "golden_label_not_in_labels.yaml": "'neutral'",
    "golden_duplicate_key.yaml": "key 'version' appears twice",
    "golden_not_utf8.yaml": "is not UTF-8",
    "golden_no_assertions.yaml": "has no assertions",
    "golden_python_tag.yaml": "python/name",
}
SET_EXPECT = {
    "set_python_tag": "--set budget.max_steps: the value is not valid YAML",
    "set_alias_bomb": "aliases expand",
    "set_without_equals": "has no '='",
    "set_index_out_of_range": "not an index",
    "set_empty_key_part": "not a key path",
    "set_into_a_scalar": "is not a mapping",
    "set_wrong_type": "budget.max_steps",
    "set_deep_value": "nests deeper",
}
# run folder -> (command, what the line must say)
RUN_EXPECT = {
    "truncated_results": ("report", "results.json:"),
    "results_without_arms": ("report", "arms: has no `arms` list"),
    "arm_without_name": ("report", "arms[0].arm: the arm has no `name`"),
    "arm_with_bad_status": ("report", "status"),
    "results_not_utf8": ("report", "is not UTF-8"),
    "truncated_predictions": ("report", "predictions.jsonl:2"),
    "golden_items_broken": ("gate", "golden items without an `id`"),
    "baseline_bad_items.json": ("gate", "golden items"),
}
ALSO_GATE = ["truncated_results", "results_without_arms", "results_not_utf8"]  # the gate must say 2, never 1


def one_clean_line(result, *names: str) -> str:
    output = result.output.strip()
    assert result.exit_code == 2, output
    assert "Traceback" not in output and not isinstance(result.exception, (KeyError, TypeError, AttributeError))
    lines = output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "\x1b" not in output and "\x07" not in output, repr(output)
    assert any(name in output for name in names), output
    return output


@pytest.fixture
def in_empty_dir(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield cwd
    assert list(cwd.iterdir()) == [], "a refused input must write nothing"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "2000", "HF_HUB_OFFLINE": "1"})


def test_every_corpus_file_is_in_the_table():
    files = {p.name for d in (EXPERIMENTS, GOLDEN) for p in d.iterdir()}
    assert files == set(EXPECT), files ^ set(EXPECT)
    assert {p.stem for p in SETS.iterdir()} == set(SET_EXPECT)
    assert {p.name for p in RESULTS.iterdir()} == set(RUN_EXPECT)
    assert len(files) + len(SET_EXPECT) + len(RUN_EXPECT) + len(list((CORPUS / "data").iterdir())) >= 60


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_validate_refuses_each_bad_file_in_one_line(name, in_empty_dir):
    path = (EXPERIMENTS / name) if (EXPERIMENTS / name).is_file() else GOLDEN / name
    line = one_clean_line(invoke("validate", str(path)), name, "/data/")
    assert EXPECT[name] in line, line


@pytest.mark.parametrize("name", sorted(SET_EXPECT))
def test_each_bad_set_value_is_refused_in_one_line(name, in_empty_dir, write_experiment):
    good = write_experiment([{"method": "zero_shot", "model": "llama"}])
    value = (SETS / f"{name}.txt").read_text().rstrip("\n")
    line = one_clean_line(invoke("validate", str(good), "--set", value), "--set", good.name)
    assert SET_EXPECT[name] in line, line
    for command in ("run", "plan"):  # the same loader behind every command that takes --set
        assert one_clean_line(invoke(command, str(good), "--set", value), "--set", good.name) == line


@pytest.mark.parametrize("name", sorted(RUN_EXPECT))
def test_broken_run_folders_are_refused_in_one_line(name, tmp_path):
    import shutil

    source = RESULTS / name
    target = tmp_path / name
    (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    command, expected = RUN_EXPECT[name]
    if command == "report":
        result = invoke("report", str(target))
        assert not (target / "index.html").exists()
    else:
        golden = _good_golden(tmp_path)
        result = invoke("gate", "--golden", str(golden), "--candidate", str(target), "--baseline", str(target))
    assert expected in one_clean_line(result, name, "results.json", "predictions.jsonl")


@pytest.mark.parametrize("name", ALSO_GATE)
def test_the_gate_says_2_not_regression_on_a_broken_results_file(name, tmp_path):
    import shutil

    shutil.copytree(RESULTS / name, tmp_path / name)
    result = invoke(
        "gate",
        "--golden",
        str(_good_golden(tmp_path)),
        "--candidate",
        str(tmp_path / name),
        "--baseline",
        str(tmp_path / name),
    )
    one_clean_line(result, name, "results.json")


def _good_golden(folder: Path) -> Path:
    path = folder / "g.yaml"
    path.write_text(
        "name: g\ntask: classification\nversion: 1\nlabels: [negative, positive]\n"
        "items:\n  - {id: a, input: good film, expect: {label: positive}}\n"
    )
    return path


def test_hostile_names_print_as_text_and_validate_ok(in_empty_dir):
    result = invoke("validate", str(CORPUS / "experiments_ok" / "ok_markup_in_names.yaml"))
    assert result.exit_code == 0, result.output
    assert "[/] [red]arm" in result.output and "\\x1b[2Jclear" in result.output and "\x1b" not in result.output


@pytest.mark.parametrize(
    "args, expected",
    [
        (["ui", "--port", "70000"], "--port: --port 70000 is not a TCP port"),
        (["ui", "--host", "999.1.1.1"], "--host: --host 999.1.1.1 is not an address"),
    ],
)
def test_ui_says_the_real_problem(args, expected):
    result = invoke(*args)
    assert expected in one_clean_line(result, args[1]), result.output


def test_a_file_too_big_to_be_an_experiment_is_refused(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text('name: bad\nquestion: "' + "x" * (5 << 20) + '"\n')
    assert "more than the" in one_clean_line(invoke("validate", str(path)), "huge.yaml")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["alias_bomb_in_params.yaml", "deep_nesting_flow.yaml"])
def test_bombs_end_quickly_within_bounded_memory_in_a_real_process(name, tmp_path):
    """The in-process tests prove the sentence; this proves no hang and no memory blow-up: the
    command runs under a 1.5 GiB address-space limit and a 30 s timeout."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29))

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "harness", "validate", str(EXPERIMENTS / name)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=limit,
        env=env,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert list(tmp_path.iterdir()) == []
