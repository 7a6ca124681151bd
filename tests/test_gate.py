"""Golden sets and `harness gate`: schema errors, assertions, the verdict rules, exit codes,
JUnit/Markdown outputs, baselines, and a real regression (a base model against an adapter that
learned the set)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harness.cli.main import app
from harness.config.golden_set import GoldenItem, GoldenSet, load_golden
from harness.errors import HarnessError
from harness.eval.golden_assertions import check_item
from harness.eval.golden_scoring import golden_task, score_golden, summarize
from harness.golden import gate, outputs
from harness.results.arm_folder import golden_rows

GOLDEN = {
    "name": "mini",
    "task": "classification",
    "version": "1",
    "labels": ["negative", "positive"],
    "instruction": "Say positive or negative.",
    "prompt": "review: {text} sentiment:",
    "items": [
        {"id": "a", "input": "the movie was great.", "must": True, "expect": {"label": "positive"}},
        {"id": "b", "input": "the plot was awful.", "expect": {"label": "negative"}},
        {"id": "c", "input": "the music was wonderful.", "expect": {"label": "positive"}},
        {"id": "d", "input": "the cast was boring.", "expect": {"label": "negative"}},
        {"id": "e", "input": "the story was moving.", "expect": {"label": "positive"}},
        {"id": "f", "input": "the ending was dull.", "expect": {"label": "negative"}},
        {"id": "g", "input": "the acting was excellent.", "expect": {"label": "positive"}},
        {"id": "h", "input": "this film was terrible.", "expect": {"label": "negative"}},
    ],
}
IDS = [i["id"] for i in GOLDEN["items"]]


def write_golden(folder: Path, data: dict | None = None) -> Path:
    path = folder / "mini.yaml"
    path.write_text(yaml.safe_dump(data or GOLDEN, sort_keys=False))
    return path


def rows(passing: set[str], version: str = "1") -> list[dict]:
    musts = {i["id"] for i in GOLDEN["items"] if i.get("must")}
    return [
        {
            "id": i,
            "passed": i in passing,
            "must": i in musts,
            "expected": "label = 'x'",
            "actual": "positive" if i in passing else "negative",
            "failures": [] if i in passing else ["label: expected 'positive', got 'negative'"],
        }
        for i in IDS
    ]


def write_run(folder: Path, arms: dict[str, set[str]], version: str = "1") -> Path:
    """A run folder as `harness run` writes it, with each arm's golden results."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "experiment": {"name": "x"},
        "arms": [
            {
                "arm": {"name": name, "slug": name.replace(" ", "-")},
                "status": "ok",
                "golden": {"mini": {"set": "mini", "version": version, **summarize(rows(p)), "items": rows(p)}},
            }
            for name, p in arms.items()
        ],
    }
    (folder / "results.json").write_text(json.dumps(payload))
    return folder


def write_baseline(path: Path, passing: set[str], version: str = "1") -> Path:
    path.write_text(
        json.dumps(
            {
                "kind": gate.BASELINE_KIND,
                "set": "mini",
                "version": version,
                "source": "recorded",
                "items": rows(passing),
            }
        )
    )
    return path


def cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250", "MLFLOW_TRACKING_URI": ""})


def gate_cli(golden: Path, candidate, baseline=None, *extra: str):
    args = ["gate", "--golden", str(golden), "--candidate", str(candidate)]
    if baseline is not None:
        args += ["--baseline", str(baseline)]
    return cli(*args, *extra)


# ---------------------------------------------------------------- the schema


def _edited(change) -> dict:
    data = json.loads(json.dumps(GOLDEN))
    change(data)
    return data


BAD_SETS = [
    (
        "unknown assertion",
        lambda d: d["items"][1]["expect"].update(lable="negative"),
        ["items[1].expect.lable", "unknown key 'lable'", "did you mean 'label'"],
    ),
    ("unknown top key", lambda d: d.update(lables=["x"]), ["unknown key 'lables'", "did you mean 'labels'"]),
    ("missing version", lambda d: d.pop("version"), ["version", "is required", "add `version:`"]),
    (
        "label not in labels",
        lambda d: d["items"][2]["expect"].update(label="neutral"),
        ["expects label 'neutral'", "not in labels"],
    ),
    ("duplicate id", lambda d: d["items"][3].update(id="a"), ["item id 'a' appears twice"]),
    ("no assertions", lambda d: d["items"][0].update(expect={}), ["items[0]", "has no assertions"]),
    (
        "rouge without reference",
        lambda d: d["items"][0].update(expect={"rouge_l": 0.3}),
        ["items[0]", "compare with `reference:`"],
    ),
    (
        "bad regex",
        lambda d: d["items"][0].update(expect={"regex": "(unclosed"}),
        ["items[0].expect.regex", "does not compile"],
    ),
    (
        "rouge out of range",
        lambda d: d["items"][0].update(reference="r", expect={"rouge_l": 2}),
        ["items[0].expect.rouge_l", "less than or equal to 1"],
    ),
    ("bad task", lambda d: d.update(task="summarize"), ["task", "'summarize'"]),
    ("prompt field", lambda d: d.update(prompt="{title}: {text}"), ["prompt", "not {title}"]),
]


@pytest.mark.parametrize("change,expected", [b[1:] for b in BAD_SETS], ids=[b[0] for b in BAD_SETS])
def test_golden_schema_errors_are_one_clear_sentence(tmp_path, change, expected):
    path = write_golden(tmp_path, _edited(change))
    with pytest.raises(HarnessError) as info:
        load_golden(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for part in expected:
        assert part in message, message
    result = cli("validate", str(path))  # `harness validate` detects a golden set by its keys
    assert result.exit_code == 2 and expected[-1] in result.output.replace("\n", "")


def test_validate_accepts_golden_sets_and_the_shipped_ones(tmp_path):
    result = cli("validate", str(write_golden(tmp_path)))
    assert result.exit_code == 0 and "golden set mini@1, 8 item(s), 1 must" in result.output
    shipped = Path(__file__).resolve().parent.parent / "golden_sets"
    for name in ("sentiment", "topics", "summarization"):
        golden = load_golden(shipped / f"{name}.yaml")
        assert len(golden.items) >= 30, name
        tags = {t for i in golden.items for t in i.tags}
        expected = {
            "sentiment": {"negation", "sarcasm", "mixed"},
            "topics": {"short", "long"},
            "summarization": {"short", "long"},
        }[name]
        assert expected <= tags, (name, tags)


def test_every_assertion_kind_reports_expected_and_actual():
    item = GoldenItem.model_validate(
        {
            "id": "x",
            "input": "t",
            "reference": "the cat sat on the mat",
            "expect": {
                "equals": "no",
                "contains": ["cat", "dog"],
                "not_contains": "mat",
                "regex": r"^\{",
                "label": "positive",
                "json_valid": True,
                "rouge_l": 0.9,
                "bertscore": 0.5,
                "max_tokens": 3,
                "max_latency_ms": 10,
            },
        }
    )
    failures, notes = check_item(item, text="the cat sat on a mat", label="negative", n_tokens=6, latency_ms=50.0)
    text = "\n".join(failures)
    for part in [
        "equals: expected 'no', got 'the cat sat on a mat'",
        "contains: 'dog' not in output",
        "not_contains: 'mat' is in output",
        "regex: /^\\{/ does not match",
        "label: expected 'positive', got 'negative'",
        "json_valid: output is not JSON",
        "rouge_l: 0.",
        "max_tokens: 6 > 3",
        "max_latency_ms: 50 > 10",
    ]:
        assert part in text, (part, text)
    assert "contains: 'cat'" not in text
    assert notes == ["bertscore skipped: budget.bertscore_model is null (BERTScore off)"]
    # with the experiment's scorer (any (predictions, references) -> per-item F1 callable)
    failures, notes = check_item(
        item, text="the cat", label=None, n_tokens=2, latency_ms=1.0, bertscore=lambda preds, refs: [0.4 for _ in preds]
    )
    assert "bertscore: 0.400 < 0.5" in failures and not notes
    ok = GoldenItem.model_validate(
        {
            "id": "y",
            "input": "t",
            "reference": "the cat sat",
            "expect": {
                "equals": '{"a": 1}',
                "contains": "a",
                "regex": r"^\{",
                "json_valid": True,
                "rouge_l": 0.0,
                "max_tokens": 9,
            },
        }
    )
    assert check_item(ok, text='{"a": 1}', label=None, n_tokens=5, latency_ms=1.0) == ([], [])


# ---------------------------------------------------------------- the verdict rules


def test_identical_candidate_passes_and_the_baseline_is_really_read(tmp_path):
    golden = write_golden(tmp_path)
    some = set(IDS) - {"c", "f"}
    run = write_run(tmp_path / "run", {"lora": some})
    baseline = write_baseline(tmp_path / "base.json", some)
    result = gate_cli(golden, run, baseline, "--markdown", str(tmp_path / "m.md"))
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "candidate 6/8 (75.0%) vs baseline 6/8 (75.0%)" in result.output
    # The same candidate against a different baseline gets a different verdict: the baseline is
    # read from its file, not silently replaced by the candidate (mlflow#12215).
    write_baseline(baseline, set(IDS))
    result = gate_cli(golden, run, baseline)
    assert result.exit_code == 1, result.output
    assert "vs baseline 8/8 (100.0%)" in result.output
    assert "passed before, fails now: c" in result.output and "passed before, fails now: f" in result.output


def test_a_candidate_that_flips_one_must_item_fails(tmp_path):
    golden = write_golden(tmp_path)
    baseline = write_baseline(tmp_path / "base.json", set(IDS))
    run = write_run(tmp_path / "run", {"lora": set(IDS) - {"a"}})
    junit = tmp_path / "out.xml"
    result = gate_cli(golden, run, baseline, "--max-drop", "0.5", "--junit", str(junit))
    assert result.exit_code == 1, result.output
    assert "must item(s) failing: a" in result.output and "(must)" in result.output
    from junitparser import JUnitXml

    xml = JUnitXml.fromfile(str(junit))
    cases = {case.name: case for suite in xml for case in suite}
    assert [r.type for r in cases["a"].result] == ["must"]
    assert "must item(s) failing: a" in cases["mini verdict"].result[0].message


def test_noise_alone_passes_a_significant_drop_fails():
    golden = GoldenSet.model_validate(
        {**GOLDEN, "items": [{"id": f"i{n}", "input": "x", "expect": {"label": "positive"}} for n in range(40)]}
    )

    def side(failing: set[int]) -> gate.Side:
        return gate.Side(
            "s",
            "s",
            "1",
            [{"id": f"i{n}", "passed": n not in failing, "must": False, "failures": []} for n in range(40)],
        )

    # max_drop 1.0: only the McNemar rule can fail these.
    noise = gate.compare(golden, side({1, 2}), side({3}), max_drop=1.0, alpha=0.05)
    assert noise["passed"] and noise["pass_to_fail"] == ["i1", "i2"] and noise["fail_to_pass"] == ["i3"]
    assert noise["p_value"] == pytest.approx(0.5)  # 2 of 3 discordant pairs: binomial tail
    drop = gate.compare(golden, side(set(range(6))), side(set()), max_drop=1.0, alpha=0.05)
    assert not drop["passed"] and drop["p_value"] == pytest.approx(0.5**6)
    assert any("McNemar exact p" in r for r in drop["reasons"])
    # The drop rule alone: 1 of 40 is 2.5 points, more than 2.
    assert not gate.compare(golden, side({0}), side(set()), max_drop=0.02, alpha=1e-9)["passed"]
    assert gate.compare(golden, side({0}), side(set()), max_drop=0.025, alpha=1e-9)["passed"]


def test_outputs_junit_markdown_and_per_item_diff(tmp_path):
    golden = write_golden(tmp_path)
    baseline = write_baseline(tmp_path / "base.json", set(IDS) - {"h"})
    run = write_run(tmp_path / "run", {"lora": set(IDS) - {"b", "d", "e"} | {"h"}})
    junit, md = tmp_path / "junit.xml", tmp_path / "gate.md"
    result = gate_cli(
        golden, run, baseline, "--junit", str(junit), "--markdown", str(md), "--json", str(tmp_path / "v.json")
    )
    assert result.exit_code == 1, result.output
    verdict = json.loads((tmp_path / "v.json").read_text())
    assert verdict["pass_to_fail"] == ["b", "d", "e"] and verdict["fail_to_pass"] == ["h"] and not verdict["passed"]
    from junitparser import Failure, JUnitXml

    xml = JUnitXml.fromfile(str(junit))
    suites = list(xml)
    items = suites[0]
    assert items.name == "golden.mini@1" and items.tests == 8 and items.failures == 3 and items.errors == 0
    cases = {case.name: case for case in items}
    assert set(cases) == set(IDS) and all(case.classname == "golden.mini" for case in cases.values())
    failed = {name for name, case in cases.items() if any(isinstance(r, Failure) for r in case.result)}
    assert failed == {"b", "d", "e"}
    failure = cases["b"].result[0]
    assert "expected: label = 'x'" in failure.text and "actual: negative" in failure.text
    assert "passed in the baseline" in failure.message
    assert suites[1].name == "harness.gate" and suites[1].failures == 1
    text = md.read_text()
    assert (
        "❌ **regression**" in text and "| baseline | 7/8 | 87.5% |" in text and "| candidate | 5/8 | 62.5% |" in text
    )
    diff = text.split("**Passed before, fails now**")[1]
    assert all(f"`{i}`" in diff for i in "bde") and "`h`" not in diff.split("Fixed")[0]
    assert "Fixed (failed before, passes now): `h`" in text


# ---------------------------------------------------------------- baselines and exit codes


def test_record_then_compare_against_the_recorded_baseline(tmp_path):
    golden = write_golden(tmp_path)
    good = write_run(tmp_path / "good", {"lora": set(IDS)})
    result = gate_cli(golden, good, None, "--record")
    assert result.exit_code == 0, result.output
    recorded = tmp_path / "baselines" / "mini@1.json"
    assert json.loads(recorded.read_text())["passed"] == 8
    worse = write_run(tmp_path / "worse", {"lora": set(IDS) - {"b", "c"}})
    result = gate_cli(golden, worse, None, "--record")  # no --baseline: the recorded one is used
    assert result.exit_code == 1 and "not recorded" in result.output
    assert json.loads(recorded.read_text())["passed"] == 8  # a regressing candidate is not recorded
    # A new version of the set does not compare with the old baseline, and says so.
    golden_v2 = write_golden(tmp_path, {**GOLDEN, "version": "2"})
    result = gate_cli(golden_v2, worse, recorded)
    assert result.exit_code == 2 and "version 1 of golden set 'mini', which is now version 2" in result.output


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing candidate", "candidate 'nope' does not exist"),
        ("missing golden", "golden set not found"),
        ("no baseline", "no baseline given and none recorded"),
        ("several arms", "has 2 arms scored on 'mini'; pick one with --arm"),
        ("unknown arm", "--arm 'qlora' matches no arm"),
        ("bad max drop", "--max-drop 5.0 is not a fraction"),
    ],
)
def test_usage_errors_exit_2_with_one_sentence(tmp_path, case, message):
    golden = write_golden(tmp_path)
    run = write_run(tmp_path / "run", {"lora r8": set(IDS), "full_ft": set(IDS)})
    baseline = write_baseline(tmp_path / "base.json", set(IDS))
    args = {
        "missing candidate": (golden, "nope", baseline),
        "missing golden": (tmp_path / "x.yaml", run, baseline),
        "no baseline": (golden, run, None),
        "several arms": (golden, run, baseline),
        "unknown arm": (golden, run, baseline, "--arm", "qlora"),
        "bad max drop": (golden, run, baseline, "--arm", "full_ft", "--max-drop", "5"),
    }[case]
    result = gate_cli(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output.replace("\n", " ") and "Traceback" not in result.output
    chosen = gate_cli(golden, run, baseline, "--arm", "lora")  # --arm picks one by name
    assert chosen.exit_code == 0, chosen.output


def test_mlflow_logging_is_best_effort(tmp_path):
    verdict = {
        "set": "mini",
        "version": "1",
        "passed": True,
        "candidate": "c",
        "baseline": "b",
        "max_drop": 0.02,
        "alpha": 0.05,
        "candidate_pass_rate": 1.0,
        "baseline_pass_rate": 1.0,
        "p_value": 1.0,
        "pass_to_fail": [],
        "fail_to_pass": [],
    }
    # An unusable tracking URI or a malformed verdict: None, never an exception.
    assert outputs.log_verdict_to_mlflow(verdict, "nosuchscheme://x") is None
    assert outputs.log_verdict_to_mlflow({}, "nosuchscheme://x") is None


# ---------------------------------------------------------------- real models


@pytest.fixture(scope="module")
def learned(tiny_models, tmp_path_factory):
    """(golden set, adapter folder, base model's labels): a LoRA adapter on the tiny Llama trained
    (high lr, a few steps) on a golden set it then passes. The random tiny model cannot learn
    content in a few CPU steps, so the set asks for one label everywhere: the label the base
    model gives least often, so the base model really fails part of it."""
    import torch

    from harness import models
    from harness.config.schema import Budget
    from harness.methods import ArmContext, get_method
    from harness.training import get_objective

    tok = models.load_tokenizer(tiny_models["llama"])
    model = models.load_model(tiny_models["llama"], "causal_lm", tokenizer=tok)
    probe = score_golden(GoldenSet.model_validate(GOLDEN), model, tok, kind="causal_lm")
    base_labels = {r["id"]: r["actual"] for r in probe}
    counts = {label: list(base_labels.values()).count(label) for label in ("negative", "positive")}
    target = min(counts, key=counts.get)
    data = {**GOLDEN, "items": [{**i, "expect": {"label": target}} for i in GOLDEN["items"]]}
    golden = GoldenSet.model_validate(data)

    torch.manual_seed(0)
    lora = get_method("lora")
    params = lora.Params(r=8, dropout=0.0, target_modules=["q_proj", "v_proj", "o_proj", "down_proj", "lm_head"])
    model = lora.wrap(
        model,
        params,
        ArmContext(kind="causal_lm", task_type="classification", model_type="llama", device="cpu", seed=0),
    )
    train = [{"id": i.id, "text": i.input, "label": i.expect.label} for i in golden.items]
    budget = Budget(max_steps=12, batch_size=8, max_seq_len=48, warmup_ratio=0.0, lr_schedule="constant")
    get_objective("sft").train(model, tok, train, golden_task(golden), budget, 2e-2)
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    model.save_pretrained(out)
    return data, out, {i: label != target for i, label in base_labels.items()}


def test_a_base_model_against_the_adapter_that_learned_the_set_fails_with_the_right_items(
    tmp_path, tiny_models, learned
):
    data, adapter, base_fails = learned
    golden = write_golden(tmp_path, data)
    gset = load_golden(golden)
    tuned = gate.resolve_side(str(adapter), gset, role="baseline")  # a peft folder naming its base
    assert all(r["passed"] for r in tuned.items), [(r["id"], r["actual"]) for r in tuned.items]
    broken = sorted(i for i, failed in base_fails.items() if failed)
    assert len(broken) >= 4  # the base model gives the other label on at least half the items
    junit = tmp_path / "j.xml"
    result = gate_cli(golden, tiny_models["llama"], adapter, "--junit", str(junit))
    assert result.exit_code == 1, result.output
    listed = sorted(
        line.split("fails now: ")[1].split(":")[0].split(" ")[0]
        for line in result.output.splitlines()
        if "passed before, fails now" in line
    )
    assert listed == broken
    assert "pass rate dropped" in result.output
    assert gate_cli(golden, adapter, adapter).exit_code == 0


def test_an_experiment_scores_every_arm_on_its_golden_sets(write_experiment, tmp_path):
    golden = write_golden(tmp_path)
    path = write_experiment(
        [{"method": "zero_shot", "model": "llama"}], edit=lambda d: d.update(golden_sets=[golden.name])
    )
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(app, ["run", str(path)], env={"COLUMNS": "250", "MLFLOW_TRACKING_URI": store})
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    run_dir = sorted(p for p in (tmp_path / "reports" / "tiny").iterdir() if p.name != "latest")[-1]
    results = json.loads((run_dir / "results.json").read_text())
    entry = results["arms"][0]["golden"]["mini"]
    assert [r["id"] for r in entry["items"]] == IDS and entry["version"] == "1"
    assert all({"passed", "must", "expected", "actual", "failures", "latency_ms"} <= set(r) for r in entry["items"])
    assert f"golden mini@1 zero_shot · llama: {entry['passed']}/8 items pass" in result.output
    flat = [{"arm": arm["arm"]["name"], **row} for arm in results["arms"] for row in golden_rows(arm)]
    assert len(flat) == 8 and flat[0]["arm"] == "zero_shot · llama" and flat[0]["item_id"] == "a"
    # The run folder is a gate side; against itself it passes, unless a must item fails.
    gated = gate_cli(golden, run_dir, run_dir)
    must_ok = entry["items"][0]["passed"]
    assert gated.exit_code == (0 if must_ok else 1), gated.output
    # The arm's MLflow run is a gate side too (the run logged to ./mlflow.db in tmp_path). The gate
    # runs as a user runs it, in a process of its own: MLflow keeps process-wide state that other
    # tests in this process have changed.
    import subprocess
    import sys

    from harness.tracking.mlflow_tracker import import_mlflow

    client = import_mlflow().tracking.MlflowClient(store)
    child = next(
        r
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id])
        if r.data.tags.get("arm.hash")
    )

    def gate_process(candidate, *extra):
        env = {**os.environ, "MLFLOW_TRACKING_URI": store}
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "harness",
                "gate",
                "--golden",
                str(golden),
                "--candidate",
                candidate,
                "--baseline",
                str(run_dir),
                *extra,
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )

    by_id = gate_process(f"mlflow:{child.info.run_id}", "--json", str(tmp_path / "v.json"))
    unknown = gate_process("mlflow:0123456789abcdef")
    assert by_id.returncode == gated.exit_code, by_id.stdout + by_id.stderr
    assert json.loads((tmp_path / "v.json").read_text())["candidate_passed"] == entry["passed"]
    assert unknown.returncode == 2 and "was not found" in unknown.stdout + unknown.stderr


def test_an_experiment_naming_a_broken_golden_set_fails_validation(write_experiment, tmp_path):
    bad = write_golden(tmp_path, _edited(lambda d: d["items"][0]["expect"].update(label="neutral")))
    path = write_experiment(
        [{"method": "zero_shot", "model": "llama"}], edit=lambda d: d.update(golden_sets=[bad.name])
    )
    result = cli("validate", str(path))
    assert result.exit_code == 2 and str(bad) in result.output.replace("\n", "") and "neutral" in result.output
    path = write_experiment(
        [{"method": "zero_shot", "model": "llama"}], edit=lambda d: d.update(golden_sets=["no.yaml"])
    )
    result = cli("validate", str(path))
    assert result.exit_code == 2 and "golden_sets[0]: golden set not found: no.yaml" in result.output.replace("\n", "")
