"""The declared label scoring rule, bf16 evaluation, the per-machine cache of base-model
measurements, and cost metrics that record how busy the machine was."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from harness.config.schema import Budget
from harness.eval.scoring_rule import ScoringRule
from tests.tolerances import BF16_VS_FP32

TASK = {
    "type": "classification",
    "labels": ["negative", "positive", "so so"],
    "instruction": "Say positive or negative.",
    "prompt": "Review: {text}",
}
EXAMPLES = [
    {"id": "a", "text": "the film was good", "label": "positive"},
    {"id": "b", "text": "a long, dull and badly acted film", "label": "negative"},
    {"id": "c", "text": "fine", "label": "so so"},
]


@pytest.fixture(scope="module")
def llama(tiny_models):
    from harness import models

    tok = models.load_tokenizer(tiny_models["llama"])
    return models.load_model(tiny_models["llama"], "causal_lm", tokenizer=tok).eval(), tok


def _direct_scores(model, tok, rule: ScoringRule) -> list[list[float]]:
    """Each label scored by hand: prompt + label (+ end-of-turn) in ONE sequence, the model's own
    log-softmax at the completion positions, then the rule's normalisation."""
    from harness.data.formatting import PromptFormatter

    formatter = PromptFormatter(tok, TASK)
    out = []
    for example in EXAMPLES:
        prompt = tok(formatter.prompt(example), add_special_tokens=not formatter.chat)["input_ids"]
        row = []
        for label in TASK["labels"]:
            text = (label if formatter.chat else " " + label) + (tok.eos_token if rule.end_of_turn else "")
            completion = tok(text, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt + completion])
            with torch.no_grad():
                logprobs = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
            total = sum(logprobs[len(prompt) - 1 + i, t].item() for i, t in enumerate(completion))
            row.append(total / {"none": 1, "tokens": len(completion), "chars": len(label)}[rule.normalize])
        out.append(row)
    return out


@pytest.mark.parametrize("end_of_turn", [False, True])
@pytest.mark.parametrize("normalize", ["none", "tokens", "chars"])
def test_each_scoring_rule_equals_a_direct_computation(llama, end_of_turn, normalize):
    from harness.eval import predict

    model, tok = llama
    rule = ScoringRule(end_of_turn=end_of_turn, normalize=normalize)
    task = {**TASK, "label_scoring": rule.as_dict()}
    predictor = predict.make_predictor(
        model, tok, kind="causal_lm", task=task, budget=Budget(max_seq_len=512, max_new_tokens=4), shots=[]
    )
    preds, extras = predictor(EXAMPLES)
    expected = _direct_scores(model, tok, rule)
    for pred, extra, row in zip(preds, extras, expected):
        got = extra["label_scores"] if normalize != "none" else extra["logprobs"]
        assert [got[label] for label in TASK["labels"]] == pytest.approx(row, abs=2e-3)
        assert pred == TASK["labels"][int(np.argmax(row))]


def test_the_end_of_turn_token_changes_the_scores(llama):
    """The two rules really score different tokens (else the test above could pass vacuously)."""
    model, tok = llama
    with_eot = _direct_scores(model, tok, ScoringRule(end_of_turn=True))
    without = _direct_scores(model, tok, ScoringRule(end_of_turn=False))
    assert not np.allclose(with_eot, without, atol=1e-3)


def test_the_default_rule_is_lm_evals_multiple_choice_acc():
    assert ScoringRule.of_task({}) == ScoringRule(end_of_turn=False, normalize="none")
    assert "lm-eval" in ScoringRule().describe()
    from harness.config.schema import TaskSpec

    spec = TaskSpec.model_validate({"data": {"prepared": "sentiment"}})
    assert ScoringRule.of_task(spec.model_dump()) == ScoringRule()


def test_scoring_rule_enters_the_hash_of_decoder_scoring_arms_only(write_experiment):
    from harness.planning.experiment_loader import load_experiment
    from harness.planning.plan import plan

    path = write_experiment([{"method": "zero_shot", "model": "llama"}, {"method": "lora", "model": "bert"}])
    before = {a.method: a.hash for a in plan(load_experiment(path))}
    after = {a.method: a.hash for a in plan(load_experiment(path, ["tasks.sentiment.label_scoring.end_of_turn=true"]))}
    assert after["zero_shot"] != before["zero_shot"]  # the decoder's predictions can change
    assert after["lora"] == before["lora"]  # the encoder's cannot
    generate = {a.method: a.hash for a in plan(load_experiment(path, ["tasks.sentiment.decoder_eval=generate"]))}
    generate_eot = {
        a.method: a.hash
        for a in plan(
            load_experiment(
                path, ["tasks.sentiment.decoder_eval=generate", "tasks.sentiment.label_scoring.normalize=chars"]
            )
        )
    }
    assert generate_eot["zero_shot"] == generate["zero_shot"]  # generating decoders do not score labels


@pytest.mark.parametrize("native", ["0", "1"])
def test_eval_precision_auto_is_fp32_on_either_kind_of_cpu_and_keeps_old_hashes(native, write_experiment, monkeypatch):
    """auto on a CPU follows the measured rule (harness/eval/precision.py: bf16 changed predictions),
    whether or not the CPU computes bf16 natively: the same arm has the same hash on both kinds."""
    from harness.eval import precision
    from harness.planning.experiment_loader import load_experiment
    from harness.planning.plan import plan

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(precision.CPU_BF16_OVERRIDE, native)
    assert precision.cpu_has_native_bf16() is (native == "1")
    path = write_experiment([{"method": "lora", "model": "bert"}])
    fp32 = plan(load_experiment(path, ["budget.eval_precision=fp32"]))[0]
    auto = plan(load_experiment(path))[0]
    assert fp32.budget.eval_precision == auto.budget.eval_precision == "fp32" and fp32.hash == auto.hash
    bf16 = plan(load_experiment(path, ["budget.eval_precision=bf16"]))[0]
    assert bf16.budget.eval_precision == "bf16" and bf16.hash != fp32.hash


def test_a_cpu_bf16_override_that_is_not_0_or_1_is_one_sentence(monkeypatch):
    from harness.errors import HarnessError
    from harness.eval import precision

    monkeypatch.setenv(precision.CPU_BF16_OVERRIDE, "yes")
    with pytest.raises(HarnessError, match="HARNESS_CPU_BF16='yes': the value must be 0 or 1"):
        precision.cpu_has_native_bf16()


@pytest.mark.parametrize("native", ["0", "1"])
def test_both_branches_of_native_bf16_detection_run_a_real_bf16_arm(native, write_experiment, tmp_path, monkeypatch):
    """The bf16 evaluation path runs on every machine: a real tiny arm in bf16 beside the same arm in
    fp32, with the CPU taken as native (AVX512-BF16/AMX) or not. The bf16 arm's scores moved (the cast
    happened) but within the stated tolerance, its predictions did not, and its provenance says how
    bf16 ran."""
    from harness.eval import precision
    from harness.execution.single_task_arm import execute_arm
    from harness.planning.experiment_loader import load_experiment
    from harness.planning.plan import plan

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(precision.CPU_BF16_OVERRIDE, native)
    path = write_experiment([{"method": "zero_shot", "model": "llama"}], budget={"eval_examples": 8})
    rows, results = {}, {}
    for name in ("fp32", "bf16"):
        arm = plan(load_experiment(path, [f"budget.eval_precision={name}"]))[0]
        out = tmp_path / name
        results[name] = execute_arm(arm, out)
        assert results[name].status == "ok", results[name].error
        rows[name] = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert results["bf16"].provenance["eval_precision"] == "bf16"
    assert results["bf16"].provenance["bf16_on_cpu"] == ("native" if native == "1" else "emulated")
    assert "bf16_on_cpu" not in results["fp32"].provenance
    assert [r["prediction"] for r in rows["bf16"]] == [r["prediction"] for r in rows["fp32"]]
    pairs = zip(rows["bf16"], rows["fp32"])
    diffs = [abs(a["logprobs"][k] - b["logprobs"][k]) for a, b in pairs for k in a["logprobs"]]
    assert 0 < max(diffs) < BF16_VS_FP32


# ------------------------------------------------------------------ bf16 against fp32


def test_bf16_label_scores_stay_within_the_stated_tolerance_of_fp32(tiny_models):
    from harness import models
    from harness.eval import precision, predict

    tok = models.load_tokenizer(tiny_models["llama"])
    scores = {}
    for name in ("fp32", "bf16"):
        model = precision.for_evaluation(
            models.load_model(tiny_models["llama"], "causal_lm", tokenizer=tok).eval(), name
        )
        assert next(model.parameters()).dtype == (torch.bfloat16 if name == "bf16" else torch.float32)
        predictor = predict.make_predictor(
            model, tok, kind="causal_lm", task=TASK, budget=Budget(max_seq_len=512, max_new_tokens=4), shots=[]
        )
        scores[name] = np.array([[e["logprobs"][label] for label in TASK["labels"]] for e in predictor(EXAMPLES)[1]])
    assert np.abs(scores["bf16"] - scores["fp32"]).max() < BF16_VS_FP32
    assert not np.array_equal(scores["bf16"], scores["fp32"])  # the cast really happened


# ------------------------------------------------------------------ cached base measurements


def test_base_forgetting_is_reused_only_when_model_and_text_fingerprints_match(
    llama, tiny_models, tmp_path, monkeypatch
):
    from harness.eval import base_cache, forgetting

    model, tok = llama
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    calls = []
    real = forgetting.passage_losses
    monkeypatch.setattr(forgetting, "passage_losses", lambda *a, **k: calls.append(1) or real(*a, **k))
    text = tmp_path / "general.txt"
    text.write_text("The council met on Monday.\n\nPrices rose in May.\n\nThe team won the cup.")
    budget = Budget(forgetting_text=str(text))
    identity = base_cache.model_identity(
        str(tiny_models["llama"]), tiny_models["llama"], model, base_dir=None, precision="fp32"
    )

    def measure(ident=identity):
        return forgetting.Forgetting.measure_before(
            model, tok, kind="causal_lm", budget=budget, base_dir=None, model_identity=ident
        )

    first, second = measure(), measure()
    assert len(calls) == 1 and not first.before_reused and second.before_reused
    np.testing.assert_allclose(second.before, first.before)
    np.testing.assert_allclose(first.before, real(model, tok, first.passages))  # the cached value is the measurement

    text.write_text("The council met on Tuesday.\n\nPrices rose in May.\n\nThe team won the cup.")  # other text
    assert not measure().before_reused and len(calls) == 2
    assert measure().before_reused and len(calls) == 2
    weights = next(tiny_models["llama"].glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # weights rewritten
    moved = base_cache.model_identity(
        str(tiny_models["llama"]), tiny_models["llama"], model, base_dir=None, precision="fp32"
    )
    assert not measure(moved).before_reused and len(calls) == 3
    other_precision = {**identity, "precision": "bf16"}
    assert not measure(other_precision).before_reused and len(calls) == 4


def test_a_cache_entry_with_another_key_is_measured_again(tmp_path, monkeypatch):
    """Two keys that land on the same file (a hash collision, a hand-edited entry) never share a value."""
    from harness.eval import base_cache

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    monkeypatch.setattr(base_cache, "_path", lambda key: tmp_path / "one.json")
    assert base_cache.cached("x", {"model": "a"}, lambda: 1) == (1, False)
    assert base_cache.cached("x", {"model": "a"}, lambda: 2) == (1, True)
    assert base_cache.cached("x", {"model": "b"}, lambda: 3) == (3, False)


# ------------------------------------------------------------------ cost under load


def test_latency_has_a_warm_up_and_repeats_and_records_the_load():
    from harness.eval.predict import LATENCY_REPEATS, run_predictions

    calls = []

    def fake(batch):
        calls.append(len(batch))
        return ["a"] * len(batch), [{}] * len(batch)

    examples = [{"id": str(i), "text": "x" * i, "label": "a"} for i in range(6)]
    _, cost, conditions = run_predictions(fake, examples, {"type": "classification"}, batch_size=4, latency_examples=2)
    assert calls == [4, 2] + [1] * (1 + 2 * LATENCY_REPEATS)  # batches, warm-up, repeats
    assert cost["latency_p95_ms"] >= cost["latency_p50_ms"] >= 0
    assert conditions["cpu_count"] == os.cpu_count() and conditions["latency_repeats"] == LATENCY_REPEATS
    assert {"load_avg_1m", "other_cores_in_use", "contended"} <= set(conditions)


@pytest.mark.parametrize("load, others, contended", [(0.5, 0.0, False), (64.0, 0.0, False), (0.5, 0.6, True)])
def test_a_measurement_is_contended_when_other_processes_used_cpu_whatever_the_load(
    monkeypatch, load, others, contended
):
    """The load average counts the arm's own threads: only other processes' CPU time decides
    (tests/test_machine_load.py measures both with real processes)."""
    from harness.eval import machine_load

    monkeypatch.setattr(os, "getloadavg", lambda: (load * (os.cpu_count() or 1) if load > 1 else load, 0.0, 0.0))
    window = machine_load.LoadWindow()
    window.wall, window.others, window.own = 10.0, others * 10.0, 20.0
    assert window.conditions()["contended"] is contended


def test_report_and_mlflow_say_how_an_arm_was_evaluated_and_when_its_cost_was_contended():
    from harness.report.view import evaluation_notes
    from harness.results.arm_result import ArmResult
    from harness.tracking.mlflow_tracker import _evaluation_params

    rule = ScoringRule(end_of_turn=True, normalize="chars")
    provenance = {"label_scoring": {**rule.as_dict(), "text": rule.describe()}, "eval_precision": "bf16"}
    busy = {"load_avg_1m": 7.5, "cpu_count": 2, "other_cores_in_use": 1.4, "contended": True}
    arm = {"provenance": provenance, "metrics_detail": {"cost_conditions": busy}}
    notes = evaluation_notes(arm)
    assert notes["evaluation"] == "label + end-of-turn, log-prob per character · bf16"
    assert "processes outside the harness used 1.4 of 2 CPUs" in notes["contended"]
    quiet = evaluation_notes(
        {"provenance": {"eval_precision": "fp32"}, "metrics_detail": {"cost_conditions": {**busy, "contended": False}}}
    )
    assert quiet == {"evaluation": "fp32", "contended": None}
    result = ArmResult(arm={}, status="ok", provenance=provenance, metrics_detail={"cost_conditions": busy})
    params = _evaluation_params(result)
    assert params == {
        "label_scoring.end_of_turn": True,
        "label_scoring.normalize": "chars",
        "eval_precision": "bf16",
        "cost.contended": True,
        "cost.load_avg_1m": 7.5,
    }


def test_golden_results_of_an_untouched_base_are_reused_only_for_the_same_model_and_set(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from harness.eval import golden_scoring

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_score(golden, *args, **kwargs):
        calls.append(golden.name)
        return [{"id": item.id, "passed": True, "must": item.must} for item in golden.items]

    monkeypatch.setattr(golden_scoring, "score_golden", fake_score)
    golden = tmp_path / "set.yaml"
    golden.write_text(
        "name: mini\ntask: classification\nversion: 1\nlabels: [negative, positive]\n"
        "items:\n  - {id: a, input: great film, expect: {label: positive}}\n"
    )
    arm = SimpleNamespace(golden_sets=[str(golden)], budget=Budget(max_seq_len=32), base_dir=str(tmp_path))
    base = {"fingerprint": "local:abc", "files": [["model.safetensors", 10, 1]], "precision": "fp32"}

    def run(identity):
        return golden_scoring.score_arm_on_golden_sets(
            arm, None, None, kind="causal_lm", task=TASK, base_identity=identity
        )

    first, second = run(base), run(base)
    assert len(calls) == 1 and "reused_base_result" not in first["mini"] and second["mini"]["reused_base_result"]
    assert second["mini"]["items"] == first["mini"]["items"]
    run({**base, "files": [["model.safetensors", 10, 2]]})  # the weights were rewritten
    assert len(calls) == 2
    golden.write_text(golden.read_text().replace("great film", "a great film"))  # the set changed
    run(base)
    assert len(calls) == 3
    run(None)  # a trained arm: always scored
    assert len(calls) == 4
