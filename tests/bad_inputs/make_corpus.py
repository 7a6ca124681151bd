"""Writes the bad-input corpus (tests/bad_inputs/): run from that folder, `python make_corpus.py`.
The files are committed; this script says how each was made (bytes that an editor would fix)."""

import json
import os
from pathlib import Path

root = Path(".")
for d in ("experiments", "data", "golden", "results", "sets"):
    (root / d).mkdir(exist_ok=True)
BASE = """name: bad
tasks:
  sentiment:
    type: classification
    data: {{train: ../data/train.jsonl, test: ../data/test.jsonl}}
    labels: [negative, positive]{task_extra}
models:
  enc: {{source: "packaged:minilm-l6"}}
  dec: {{source: "packaged:smollm2-135m-instruct"}}{models_extra}
budget: {{max_steps: 2, batch_size: 2, max_seq_len: 32{budget_extra}}}
arms:
  - {{method: lora, model: enc, lr: 1.0e-3{arm_extra}}}
  - {{method: zero_shot, model: dec}}{arms_extra}
"""


def exp(name, task_extra="", models_extra="", budget_extra="", arm_extra="", arms_extra="", text=None, raw=None):
    p = root / "experiments" / name
    if raw is not None:
        p.write_bytes(raw)
        return
    p.write_text(
        text
        if text is not None
        else BASE.format(
            task_extra=task_extra,
            models_extra=models_extra,
            budget_extra=budget_extra,
            arm_extra=arm_extra,
            arms_extra=arms_extra,
        )
    )


rows = lambda n, s: "".join(
    json.dumps(
        {"text": f"review {s}{i} was {'good' if i % 2 else 'bad'}", "label": "positive" if i % 2 else "negative"}
    )
    + "\n"
    for i in range(n)
)
(root / "data/train.jsonl").write_text(rows(8, "a"))
(root / "data/test.jsonl").write_text(rows(4, "b"))
(root / "data/broken_line.jsonl").write_text(rows(3, "c") + '{"text": "cut off", "lab\n' + rows(2, "d"))
(root / "data/array_row.jsonl").write_text(rows(2, "e") + '["text", "label"]\n')
(root / "data/latin1.jsonl").write_bytes(
    rows(2, "f").encode() + '{"text": "caf\xe9", "label": "positive"}\n'.encode("latin-1")
)
(root / "data/corrupt.parquet").write_bytes(b"PAR1" + os.urandom(64) + b"not a footer")
(root / "data/empty.jsonl").write_text("")
(root / "data/missing_label.jsonl").write_text(rows(2, "g") + json.dumps({"text": "no label here"}) + "\n")
(root / "data/neutral_label.jsonl").write_text(rows(3, "h") + json.dumps({"text": "meh", "label": "neutral"}) + "\n")
(root / "data/notes.txt").write_text("text label\n")
(root / "data/ner_mismatch.jsonl").write_text(json.dumps({"tokens": ["a", "b", "c"], "tags": ["O", "B-x"]}) + "\n")
(root / "data/ansi_columns.jsonl").write_text(
    json.dumps({"\x1b[2J\x1b]0;pwned\x07review": "x", "label": "positive"}) + "\n"
)
(root / "data/no_config_model").mkdir(exist_ok=True)
(root / "data/no_config_model/README").write_text("a folder that is not a checkpoint\n")

bomb = "".join([f"  l{i}: &l{i} [" + ",".join([f"*l{i - 1}" if i else '"lol"'] * 9) + "]\n" for i in range(10)])
exp(
    "alias_bomb_in_params.yaml",
    text=BASE.format(task_extra="", models_extra="", budget_extra="", arm_extra=", params: *bomb", arms_extra="")
    .replace("arms:\n", "x-bomb:\n" + bomb + "arms:\n")
    .replace("*bomb", "{r: 8, target_modules: *l9}"),
)
exp(
    "alias_bomb_in_stage.yaml",
    text=BASE.format(
        task_extra="", models_extra="", budget_extra="", arm_extra=", stages: [{sft: {extra: *l9}}]", arms_extra=""
    ).replace("arms:\n", "x-bomb:\n" + bomb + "arms:\n"),
)
exp("alias_bomb_top_level.yaml", text="x-bomb:\n" + bomb + "name: *l9\n")
exp(
    "deep_nesting_block.yaml",
    text="name: bad\n" + "".join("  " * i + f"k{i}:\n" for i in range(300)) + "  " * 300 + "v: 1\n",
)
exp("deep_nesting_flow.yaml", text="name: bad\nquestion: " + "[" * 20000 + "]" * 20000 + "\n")
exp("recursive_alias.yaml", text="name: bad\nquestion: &q [1, *q]\n")
exp(
    "duplicate_top_key.yaml",
    text=BASE.format(task_extra="", models_extra="", budget_extra="", arm_extra="", arms_extra="")
    + "budget: {max_steps: 9}\n",
)
exp("duplicate_arm_key.yaml", arm_extra=", lr: 1.0e-2")
exp(
    "duplicate_label.yaml",
    text=BASE.format(task_extra="", models_extra="", budget_extra="", arm_extra="", arms_extra="").replace(
        "[negative, positive]", "[negative, positive, positive]"
    ),
)
exp(
    "empty_labels.yaml",
    text=BASE.format(task_extra="", models_extra="", budget_extra="", arm_extra="", arms_extra="").replace(
        "[negative, positive]", "[]"
    ),
)
exp(
    "not_utf8.yaml",
    raw=BASE.format(
        task_extra="\n    instruction: caf\xe9", models_extra="", budget_extra="", arm_extra="", arms_extra=""
    ).encode("latin-1"),
)
exp("python_tag.yaml", text="name: !!python/object/apply:os.system ['echo pwned']\n")
exp("syntax_error.yaml", text="name: bad\ntasks: {sentiment: [\n")
exp("tab_indent.yaml", text="name: bad\ntasks:\n\tsentiment: {}\n")
exp("a_list.yaml", text="- name: bad\n- arms: []\n")
exp("empty.yaml", text="")
exp(
    "ansi_column_name.yaml",
    task_extra="",
    text=BASE.format(task_extra="", models_extra="", budget_extra="", arm_extra="", arms_extra="").replace(
        "test: ../data/test.jsonl}", 'test: ../data/test.jsonl, columns: {text: "\\e[2J\\e]0;pwned\\arev"}}'
    ),
)
exp("r_is_text.yaml", arm_extra=", params: {r: eight}")
exp("alpha_is_list.yaml", arm_extra=", params: {alpha: [1, 2]}")
exp("r_negative.yaml", arm_extra=", params: {r: -4}")
exp("unknown_param.yaml", arm_extra=", params: {rank: 8}")
exp("unknown_method.yaml", arms_extra="\n  - {method: lora_plus_plus, model: enc}")
exp("unknown_model_ref.yaml", arms_extra="\n  - {method: lora, model: gpt5}")
exp("unknown_task_ref.yaml", arms_extra="\n  - {method: lora, model: enc, task: sentimnet}")
exp("missing_local_model.yaml", models_extra="\n  mine: {source: ./models/does-not-exist, kind: causal_lm}")
exp("model_folder_without_config.yaml", models_extra="\n  mine: {source: ../data/no_config_model}")
exp("source_escapes_project.yaml", models_extra="\n  mine: {source: ../../../../../../../../../../etc}")
exp("offline_hub_id.yaml", models_extra="\n  hub: {source: nobody/no-such-model, kind: causal_lm}")
exp("unknown_packaged_model.yaml", models_extra='\n  pk: {source: "packaged:smollm3"}')
exp(
    "label_not_in_labels.yaml",
    text=BASE.format(task_extra="", models_extra="", budget_extra="", arm_extra="", arms_extra="").replace(
        "../data/test.jsonl", "../data/neutral_label.jsonl"
    ),
)
exp("prompt_names_missing_field.yaml", task_extra='\n    prompt: "Review: {review}"')
exp("prompt_unbalanced_brace.yaml", task_extra='\n    prompt: "Review: {text"')
exp("prompt_attribute_field.yaml", task_extra='\n    prompt: "Review: {text.__class__}"')
for name, f in [
    ("broken_jsonl_line", "broken_line.jsonl"),
    ("jsonl_array_row", "array_row.jsonl"),
    ("data_not_utf8", "latin1.jsonl"),
    ("corrupt_parquet", "corrupt.parquet"),
    ("empty_train_file", "empty.jsonl"),
    ("row_without_label", "missing_label.jsonl"),
    ("unknown_data_suffix", "notes.txt"),
    ("missing_data_file", "nope.jsonl"),
]:
    exp(
        f"{name}.yaml",
        text=BASE.format(task_extra="", models_extra="", budget_extra="", arm_extra="", arms_extra="").replace(
            "../data/train.jsonl", f"../data/{f}"
        ),
    )
# Corpora (cpt stage, budget.domain_text): validate reads every file the way the run will.
(root / "data/corpus_binary").mkdir(exist_ok=True)
(root / "data/corpus_binary/paper.txt").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00 not text at all")
(root / "data/corpus_latin1.txt").write_bytes("a caf\xe9 in Paris\n\nanother document\n".encode("latin-1"))
(root / "data/corpus_with_bin").mkdir(exist_ok=True)
(root / "data/corpus_with_bin/paper.txt").write_text("a paper about adapters\n")
(root / "data/corpus_with_bin/weights.bin").write_bytes(bytes(range(256)))
(root / "data/corpus_bad_line.jsonl").write_text('{"text": "one"}\n{"txt": "two"}\n')
(root / "data/corpus.pdf").write_bytes(b"%PDF-1.4 a paper as a pdf\n")
for name, corpus in [
    ("cpt_corpus_binary.yaml", "../data/corpus_binary"),
    ("cpt_corpus_not_utf8.yaml", "../data/corpus_latin1.txt"),
    ("cpt_corpus_bin_file.yaml", "../data/corpus_with_bin"),
    ("cpt_corpus_pdf.yaml", "../data/corpus.pdf"),
]:
    exp(
        name, arms_extra=f"\n  - {{method: lora, model: dec, lr: 1.0e-3, stages: [{{cpt: {{corpus: {corpus}}}}}, sft]}}"
    )
exp("domain_text_bad_line.yaml", budget_extra=", domain_text: ../data/corpus_bad_line.jsonl")
exp(
    "missing_column.yaml",
    text=BASE.format(task_extra="", models_extra="", budget_extra="", arm_extra="", arms_extra="").replace(
        "test: ../data/test.jsonl}", "test: ../data/test.jsonl, columns: {text: review}}"
    ),
)
exp(
    "ner_tags_mismatch.yaml",
    text=BASE.format(task_extra="", models_extra="", budget_extra="", arm_extra="", arms_extra="")
    .replace("type: classification", "type: token_classification")
    .replace("../data/train.jsonl", "../data/ner_mismatch.jsonl")
    .replace("../data/test.jsonl", "../data/ner_mismatch.jsonl")
    .replace("    labels: [negative, positive]\n", "")
    .replace("  - {method: zero_shot, model: dec}\n", ""),
)
exp(
    "huge_max_steps.yaml",
    text=BASE.format(task_extra="", models_extra="", budget_extra="", arm_extra="", arms_extra="").replace(
        "max_steps: 2", "max_steps: 1000000000000"
    ),
)
exp("batch_not_divisible.yaml", budget_extra=", grad_accum: 3")
exp(
    "negative_lr.yaml",
    text=BASE.format(task_extra="", models_extra="", budget_extra="", arm_extra="", arms_extra="").replace(
        "lr: 1.0e-3", "lr: -1.0e-3"
    ),
)
exp(
    "nan_lr.yaml",
    text=BASE.format(task_extra="", models_extra="", budget_extra="", arm_extra="", arms_extra="").replace(
        "lr: 1.0e-3", "lr: .nan"
    ),
)
exp("lr_on_zero_shot.yaml", arms_extra="\n  - {method: zero_shot, model: dec, lr: 0.1}")
exp("unknown_budget_key.yaml", budget_extra=", max_step: 3")
exp(
    "max_seq_len_tiny.yaml",
    text=BASE.format(task_extra="", models_extra="", budget_extra="", arm_extra="", arms_extra="").replace(
        "max_seq_len: 32", "max_seq_len: 4"
    ),
)
exp(
    "name_with_slash.yaml",
    text=BASE.format(task_extra="", models_extra="", budget_extra="", arm_extra="", arms_extra="").replace(
        "name: bad", "name: ../../etc/bad"
    ),
)
exp(
    "name_with_markup.yaml",
    text=BASE.format(task_extra="", models_extra="", budget_extra="", arm_extra="", arms_extra="").replace(
        "name: bad", 'name: "[/]bad"'
    ),
)
exp(
    "no_arms.yaml",
    text=BASE.format(task_extra="", models_extra="", budget_extra="", arm_extra="", arms_extra="").split("arms:")[0]
    + "arms: []\n",
)
exp("unknown_stage.yaml", arm_extra=", stages: [sfft]")
exp("stage_on_zero_shot.yaml", arms_extra="\n  - {method: zero_shot, model: dec, stages: [sft]}")
exp(
    "tasks_is_a_list.yaml",
    text='name: bad\ntasks: [sentiment]\nmodels: {enc: {source: "packaged:minilm-l6"}}\narms: [{method: lora, model: enc}]\n',
)
exp(
    "missing_golden_set.yaml",
    text=BASE.format(task_extra="", models_extra="", budget_extra="", arm_extra="", arms_extra="")
    + "golden_sets: [../golden/nope.yaml]\n",
)
exp(
    "unknown_prepared_dataset.yaml",
    text=BASE.format(task_extra="", models_extra="", budget_extra="", arm_extra="", arms_extra="").replace(
        "{train: ../data/train.jsonl, test: ../data/test.jsonl}", "{prepared: sentimnet}"
    ),
)
# hostile but valid: must print as text and exit 0
(root / "experiments_ok").mkdir(exist_ok=True)
(root / "experiments_ok" / "ok_markup_in_names.yaml").write_text(
    BASE.format(
        task_extra="",
        models_extra='\n  "[bold]m[/]": {source: "packaged:minilm-l6"}',
        budget_extra="",
        arm_extra=', name: "[/] [red]arm"',
        arms_extra='\n  - {method: zero_shot, model: "[bold]m[/]"}',
    )
    .replace("{method: lora, model: enc", "{method: lora, model: enc")
    .replace('model: "[bold]m[/]"}', 'model: dec, name: "\\e[2Jclear"}')
)

G = """name: g
task: classification
version: 1
labels: [negative, positive]
items:
  - {id: a, input: "good film", expect: {label: positive}}
"""
(root / "golden/golden_alias_bomb.yaml").write_text(
    "x-bomb:\n" + bomb + G + "  - {id: b, input: *l9, expect: {label: positive}}\n"
)
(root / "golden/golden_duplicate_id.yaml").write_text(G + '  - {id: a, input: "bad", expect: {label: negative}}\n')
(root / "golden/golden_bad_regex.yaml").write_text(G + '  - {id: b, input: "x", expect: {regex: "(unclosed"}}\n')
(root / "golden/golden_label_not_in_labels.yaml").write_text(G + '  - {id: b, input: "x", expect: {label: neutral}}\n')
(root / "golden/golden_duplicate_key.yaml").write_text(G.replace("version: 1\n", "version: 1\nversion: 2\n"))
(root / "golden/golden_not_utf8.yaml").write_bytes(G.replace("good film", "caf\xe9").encode("latin-1"))
(root / "golden/golden_no_assertions.yaml").write_text(G + '  - {id: b, input: "x", expect: {}}\n')
(root / "golden/golden_python_tag.yaml").write_text(
    G + "  - {id: b, input: !!python/name:os.system , expect: {label: positive}}\n"
)

arm = {
    "arm": {"name": "lora · enc", "task_key": "sentiment", "slug": "lora-enc-sentiment-00000000"},
    "status": "ok",
    "metrics": {"accuracy": 0.5},
    "golden": {"g": {"version": "1", "items": [{"id": "a", "passed": True}]}},
}
good = {"experiment": {"name": "bad"}, "arms": [arm], "budget_audit": {"identical": True, "flags": {}}}


def run_dir(name, results_text, predictions=None):
    d = root / "results" / name
    (d / "arms" / arm["arm"]["slug"]).mkdir(parents=True, exist_ok=True)
    (d / "results.json").write_text(results_text)
    if predictions is not None:
        (d / "arms" / arm["arm"]["slug"] / "predictions.jsonl").write_text(predictions)


text = json.dumps(good, indent=2)
run_dir("truncated_results", text[: len(text) // 2])
run_dir("results_without_arms", json.dumps({"experiment": {"name": "bad"}}))
run_dir("arm_without_name", json.dumps({**good, "arms": [{**arm, "arm": {"task_key": "sentiment"}}]}))
run_dir("arm_with_bad_status", json.dumps({**good, "arms": [{**arm, "status": "great"}]}))
run_dir("results_not_utf8", text.replace("bad", "caf\xe9").encode("latin-1").decode("latin-1"))
(root / "results/results_not_utf8/results.json").write_bytes(text.replace('"bad"', '"caf\xe9"').encode("latin-1"))
run_dir(
    "truncated_predictions", text, '{"id": "1", "prediction": "positive", "reference": "positive"}\n{"id": "2", "predic'
)
run_dir(
    "golden_items_broken",
    json.dumps({**good, "arms": [{**arm, "golden": {"g": {"version": "1", "items": [{"passed": "yes"}]}}}]}),
)
(root / "results/baseline_bad_items.json").write_text(
    json.dumps({"kind": "harness-golden-baseline", "set": "g", "version": "1", "items": "all good"})
)

for name, value in [
    ("set_python_tag", "budget.max_steps=!!python/object/apply:os.system ['echo pwned']"),
    ("set_alias_bomb", "budget.max_steps=" + "{" + bomb.replace("\n", ", ").replace("  ", "") + "x: *l9}"),
    ("set_without_equals", "budget.max_steps"),
    ("set_index_out_of_range", "arms.9.lr=1"),
    ("set_empty_key_part", "budget..max_steps=3"),
    ("set_into_a_scalar", "name.x=1"),
    ("set_wrong_type", "budget.max_steps=many"),
    ("set_deep_value", "question=" + "[" * 500 + "]" * 500),
]:
    (root / "sets" / f"{name}.txt").write_text(value + "\n")
