"""Evaluation: metric values against hand computations and the libraries' documented examples,
confidence intervals, McNemar, the memory profiler, batched vs unbatched prediction."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from harness.config.schema import Budget
from harness.eval import metrics, stats
from harness.eval.likelihood import IGNORE, target_logprobs
from harness.eval.text_metrics import (
    bleu_from_stats,
    bleu_stats,
    confusion_matrix,
    confusion_rows,
    macro_f1_from_rows,
    per_class_f1,
    token_f1,
)

# ------------------------------------------------------------------ metric values


def test_every_metric_declares_direction_and_unit_once():
    for name in (
        "token_f1",
        "bleu",
        "bertscore_f1",
        "perplexity",
        "forgetting",
        "saved_mb",
        "generation_tokens_per_s",
        "accuracy",
        "macro_f1",
        "rouge1",
        "exact_match",
        "peak_memory_mb",
    ):
        m = metrics.METRICS[name]
        assert m.unit and isinstance(m.higher_is_better, bool)
    assert metrics.METRICS["perplexity"].higher_is_better is False
    assert metrics.METRICS["forgetting"].higher_is_better is False
    with pytest.raises(ValueError):
        metrics.declare("bleu", higher_is_better=True, unit="x", kind="quality", description="again")


def test_token_f1_by_hand():
    # pred tokens: cat sat on mat (article removed); ref: cat is on mat -> 3 common of 4 and 4.
    assert token_f1("The cat sat on the mat.", "a cat is on the mat") == pytest.approx(0.75)
    # pred: big big dog (3), ref: big dog (2): common = min counts = big 1 + dog 1 = 2.
    assert token_f1("big big dog", "big dog") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert token_f1("Paris!", "paris") == 1.0
    assert token_f1("london", "paris") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "x") == 0.0


def test_bleu_matches_sacrebleus_documented_example():
    # sacrebleu README: BLEU = 48.53 for these hypotheses against two reference streams.
    refs = [
        ["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
        ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."],
    ]
    hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    assert bleu_from_stats(bleu_stats(hyps, refs)) == pytest.approx(48.53, abs=0.005)
    # Single reference (our metric): identical text is 100; the registry's value is the same path.
    assert metrics.value("bleu", ["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)


def test_rouge_matches_documented_and_hand_computed_values():
    def rouge1(preds, refs):
        return metrics.value("rouge1", preds, refs)

    # evaluate's ROUGE card: identical predictions and references score 1.0.
    assert rouge1(["hello there", "general kenobi"], ["hello there", "general kenobi"]) == 1.0
    # rouge-score README's pair, by hand (stemmed): 6 shared unigrams (the x2, quick, brown,
    # dog, jump), 8 predicted, 9 in the reference -> F = 2PR/(P+R) with P=6/8, R=6/9.
    p, r = 6 / 8, 6 / 9
    value = rouge1(["The quick brown dog jumps on the log."], ["The quick brown fox jumps over the lazy dog"])
    assert value == pytest.approx(2 * p * r / (p + r))
    items = metrics.Items(
        ["The quick brown dog jumps on the log.", "x"], ["The quick brown fox jumps over the lazy dog", "x"]
    )
    values, rows = metrics.score_items("generation", items)
    assert values["rouge1"] == pytest.approx((2 * p * r / (p + r) + 1) / 2, abs=1e-6)
    assert rows["rouge1"].shape == (2, 1)


def test_classification_rows_agree_with_scikit_learn():
    from sklearn.metrics import confusion_matrix as sk_confusion
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(3)
    labels = ["a", "b", "c"]
    refs = list(rng.choice(labels, 60))
    preds = list(rng.choice(labels + [""], 60))  # '' = a generation that named no label
    rows = confusion_rows(preds, refs, labels)
    expected = f1_score(refs, preds, average="macro", labels=sorted(set(refs) | set(preds)), zero_division=0)
    assert macro_f1_from_rows(rows, 3) == pytest.approx(expected)
    assert metrics.METRICS["macro_f1"].reduce(rows) == pytest.approx(expected)
    matrix = confusion_matrix(rows, 3)
    assert (matrix == sk_confusion(refs, preds, labels=labels + [""])).all()
    assert per_class_f1(matrix)[:3] == pytest.approx(
        f1_score(refs, preds, labels=labels, average=None, zero_division=0)
    )


def test_per_class_f1_and_confusion_matrix_land_in_the_detail():
    from harness.eval.quality import assess

    rows = [
        {"prediction": p, "reference": r} for p, r in [("pos", "pos"), ("pos", "neg"), ("neg", "neg"), ("neg", "neg")]
    ]
    result = assess(rows, {"type": "classification", "labels": ["neg", "pos"]}, Budget(bootstrap_resamples=200))
    # neg: tp 2, fp 0, fn 1 -> 0.8; pos: tp 1, fp 1, fn 0 -> 2/3.
    assert result.detail["per_class_f1"] == {"neg": pytest.approx(0.8), "pos": pytest.approx(2 / 3)}
    assert result.detail["confusion_matrix"]["matrix"] == [[2, 1], [0, 1]]
    assert result.metrics["accuracy"] == 0.75 and set(result.ci) == {"accuracy", "macro_f1"}
    low, high = result.ci["accuracy"]
    assert 0 <= low <= 0.75 <= high <= 1
    assert rows[1]["scores"] == {"accuracy": 0.0}


def test_perplexity_is_token_weighted():
    rows = np.array([[2.0, 4], [6.0, 4]])  # NLL sums and token counts of two references
    assert metrics.METRICS["perplexity"].reduce(rows) == pytest.approx(math.exp(8 / 8))
    items = metrics.Items(
        ["a", "b"],
        ["a", "b"],
        rows=[{"reference_nll": 3.0, "reference_tokens": 2}, {"reference_nll": 1.0, "reference_tokens": 2}],
    )
    values, _ = metrics.score_items("generation", items)
    assert values["perplexity"] == pytest.approx(math.exp(1.0))


# ------------------------------------------------------------------ shifted log-likelihood


class _FixedLogits(torch.nn.Module):
    """A 'model' with known logits; honours logits_to_keep like transformers, or ignores it."""

    def __init__(self, logits, honour_keep: bool):
        super().__init__()
        self.logits, self.honour_keep = logits, honour_keep
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, logits_to_keep=None):
        keep = logits_to_keep if self.honour_keep and logits_to_keep is not None else slice(None)
        return type("Out", (), {"logits": self.logits[:, keep]})()


@pytest.mark.parametrize("honour_keep", [True, False])
def test_target_logprobs_shifts_by_one_against_a_hand_computation(honour_keep):
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 5)
    ids = torch.tensor([[1, 3, 0, 2]])
    labels = torch.tensor([[IGNORE, 3, 0, IGNORE]])  # targets: token 3 at t=1 and token 0 at t=2
    total, count = target_logprobs(_FixedLogits(logits, honour_keep), ids, torch.ones_like(ids), labels)
    by_hand = sum(
        math.log(math.exp(logits[0, t - 1, ids[0, t]].item()) / logits[0, t - 1].exp().sum().item()) for t in (1, 2)
    )
    assert total.item() == pytest.approx(by_hand, rel=1e-5) and count.item() == 2


def test_target_logprobs_matches_the_models_own_loss(tiny_models):
    from harness import models

    tok = models.load_tokenizer(tiny_models["llama"])
    model = models.load_model(tiny_models["llama"], "causal_lm", tokenizer=tok).eval()
    ids = torch.tensor([tok("the movie was good.")["input_ids"]])
    with torch.no_grad():
        hf_loss = model(input_ids=ids, labels=ids).loss.item()  # mean shifted cross-entropy
        total, count = target_logprobs(model, ids, torch.ones_like(ids), ids)
    assert -total.item() / count.item() == pytest.approx(hf_loss, rel=1e-5)


def test_shared_prompt_scoring_equals_scoring_each_prompt_with_each_completion(tiny_models):
    """Prompts of different lengths (left padding), completions of 1 to 3 tokens (padding in the
    second pass): the cached path must give what prompt+completion in one sequence gives."""
    from harness import models
    from harness.eval.likelihood import SharedPrefix, completion_logprobs

    tok = models.load_tokenizer(tiny_models["llama"])
    model = models.load_model(tiny_models["llama"], "causal_lm", tokenizer=tok).eval()
    start = "the review says: the movie was a film of the year and"
    prompts = [tok(start + t)["input_ids"] for t in (" good and", " bad", " a long and boring film that I did")]
    completions = [tok(t, add_special_tokens=False)["input_ids"] for t in (" fun", " not fun at all", " ok then")]
    assert sorted({len(c) for c in completions}) != [1]
    prefix = SharedPrefix(model)
    with torch.no_grad():
        plain = completion_logprobs(model, prompts, completions, tok.pad_token_id)
        shared = completion_logprobs(model, prompts, completions, tok.pad_token_id, prefix)
        assert prefix.ids is not None and len(prefix.ids) >= SharedPrefix.MIN_TOKENS  # the common start was cached
        assert torch.allclose(plain, shared, atol=1e-4)
        # Batches that share less of the start shorten the cached prefix and still agree.
        other = [tok("the review says nothing")["input_ids"] + [5, 6, 7]]
        alone = completion_logprobs(model, other, completions, tok.pad_token_id)
        assert torch.allclose(
            completion_logprobs(model, other, completions, tok.pad_token_id, prefix), alone, atol=1e-4
        )
        for i, p in enumerate(prompts):
            for j, c in enumerate(completions):
                ids = torch.tensor([p + c])
                labels = torch.tensor([[IGNORE] * len(p) + c])
                alone, _ = target_logprobs(model, ids, torch.ones_like(ids), labels)
                assert shared[i, j].item() == pytest.approx(alone.item(), abs=1e-4)


# ------------------------------------------------------------------ statistics


def test_bootstrap_ci_covers_the_true_value_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(100):
        sample = (rng.random(200) < 0.7).astype(float)
        low, high = stats.bootstrap_ci(sample, resamples=500, seed=trial)
        covered += low <= 0.7 <= high
    assert 88 <= covered <= 99


def test_bootstrap_ci_is_seeded_and_works_for_corpus_metrics():
    sample = np.arange(50, dtype=float) % 2
    assert stats.bootstrap_ci(sample, seed=1) == stats.bootstrap_ci(sample, seed=1)
    rows = bleu_stats(["the cat sat", "a dog ran home", "hello"], ["the cat sat", "the dog ran home", "bye"])
    low, high = stats.bootstrap_ci(rows, bleu_from_stats, resamples=200)
    assert 0 <= low <= high <= 100
    assert stats.bootstrap_ci(np.array([1.0])) is None  # one item: no interval


def test_mcnemar_exact_on_a_known_table():
    # a right where b is wrong on 10 items, the reverse on 2: two-sided exact p = 2 * P(X <= 2)
    # for X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096.
    a = [1] * 10 + [0] * 2 + [1] * 30 + [0] * 8
    b = [0] * 10 + [1] * 2 + [1] * 30 + [0] * 8
    result = stats.mcnemar_exact(a, b)
    assert (result["a_only"], result["b_only"]) == (10, 2)
    assert result["p_value"] == pytest.approx(2 * 79 / 4096)
    assert stats.mcnemar_exact(a, a)["p_value"] == 1.0


def test_paired_bootstrap_separates_real_from_no_difference():
    rng = np.random.default_rng(1)
    a = rng.random(100)
    same = stats.paired_bootstrap(a, a.copy())
    assert same["difference"] == 0 and same["p_value"] == 1.0
    better = stats.paired_bootstrap(a + 0.1, a)
    assert better["difference"] == pytest.approx(0.1) and better["p_value"] < 0.01
    noisy = stats.paired_bootstrap(a, rng.random(100))  # two unrelated draws of the same distribution
    assert noisy["p_value"] > 0.01


def test_compare_has_the_shape_the_report_reads():
    out = stats.compare(
        "accuracy", "mcnemar", "lora", [1] * 20 + [0] * 5, "zero_shot", [0] * 20 + [1] * 5, higher_is_better=True
    )
    assert {"metric", "a", "b", "difference", "p_value", "significant"} <= set(out)
    assert out["significant"] is True and out["better"] == "lora" and out["difference"] == pytest.approx(0.6)


def test_seed_summary_mean_std_and_values():
    summary = stats.seed_summary(
        {"lora": [(0, {"accuracy": 0.5}), (1, {"accuracy": 0.7}), (2, {"accuracy": 0.9})]}, ["accuracy"]
    )
    entry = summary[0]["metrics"]["accuracy"]
    assert entry["mean"] == pytest.approx(0.7) and entry["std"] == pytest.approx(0.2)
    assert entry["values"] == [0.5, 0.7, 0.9] and summary[0]["seeds"] == [0, 1, 2]


# ------------------------------------------------------------------ cost profile


def test_memory_profiler_sees_a_deliberate_allocation():
    code = textwrap.dedent("""
        import numpy as np
        from harness.eval.profile import peak_rss_mb
        before = peak_rss_mb()
        block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched so it is resident
        del block
        print(before, peak_rss_mb())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = map(float, out.stdout.split())
    assert 190 <= after - before <= 260
    # A child started by a process that had a 400 MiB peak reports only its own memory (Linux
    # carries ru_maxrss over fork and exec; the profiler must not).
    parent = textwrap.dedent("""
        import subprocess, sys
        import numpy as np
        from harness.eval.profile import peak_rss_mb
        block = np.ones(400 * 2**20 // 8)
        code = "from harness.eval.profile import peak_rss_mb; print(peak_rss_mb())"
        child = subprocess.run([sys.executable, "-c", code],
                               capture_output=True, text=True, check=True)
        print(peak_rss_mb(), child.stdout)
    """)
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True)
    parent_peak, child_peak = map(float, out.stdout.split())
    assert child_peak < parent_peak - 300


def test_saved_mb_and_generated_lengths(tmp_path):
    from harness.eval.predict import generated_lengths
    from harness.eval.profile import saved_mb

    model = torch.nn.Linear(256, 1024)  # 263,168 float32 parameters, all trainable
    assert saved_mb(model, None, trained=True) == pytest.approx(263168 * 4 / 2**20, abs=1e-3)
    assert saved_mb(model, None, trained=False) == 0.0
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "w.bin").write_bytes(b"0" * 2**20)
    assert saved_mb(model, tmp_path / "adapter", trained=True) == 1.0
    assert generated_lengths(torch.tensor([[5, 6, 2, 2], [5, 6, 7, 8]]), eos_id=2) == [3, 4]


# ------------------------------------------------------------------ batched == unbatched


def _examples(n=12):
    from tests.conftest import sentiment_rows

    # Different lengths, so batches really pad.
    return [
        {"id": r["uid"], "text": r["review"] + " and so on" * (i % 4), "label": r["sentiment"]}
        for i, r in enumerate(sentiment_rows(n, 5))
    ]


TASK = {
    "type": "classification",
    "labels": ["negative", "positive"],
    "instruction": "Say positive or negative.",
    "prompt": "Review: {text}",
}


@pytest.mark.parametrize("mode", ["score", "generate"])
def test_batched_and_unbatched_decoder_predictions_agree(tiny_models, mode):
    from harness import models
    from harness.eval import predict

    tok = models.load_tokenizer(tiny_models["llama"])
    model = models.load_model(tiny_models["llama"], "causal_lm", tokenizer=tok).eval()
    task = {**TASK, "decoder_eval": mode}
    predictor = predict.make_predictor(
        model, tok, kind="causal_lm", task=task, budget=Budget(max_seq_len=64, max_new_tokens=6), shots=[]
    )
    examples = _examples()
    batched_preds, batched_extra = predictor(examples)
    single = [predictor([e]) for e in examples]
    assert batched_preds == [p[0] for p, _ in single]
    for extra, (_, one) in zip(batched_extra, single):
        if mode == "score":
            for label in TASK["labels"]:
                assert extra["logprobs"][label] == pytest.approx(one[0]["logprobs"][label], abs=2e-3)
        else:
            assert extra == one[0]  # the same generated text and token count


def test_batched_and_unbatched_generation_agree_on_free_text(tiny_models):
    from harness import models
    from harness.eval import predict

    tok = models.load_tokenizer(tiny_models["llama"])
    model = models.load_model(tiny_models["llama"], "causal_lm", tokenizer=tok).eval()
    task = {"type": "generation", "prompt": "Review: {text}"}
    predictor = predict.make_predictor(
        model, tok, kind="causal_lm", task=task, budget=Budget(max_seq_len=64, max_new_tokens=8), shots=[]
    )
    examples = _examples(8)
    texts, _ = predictor(examples)
    assert texts == [predictor([e])[0][0] for e in examples]
    assert len(set(texts)) > 1  # not a degenerate constant output that would agree trivially


def test_batched_and_unbatched_encoder_predictions_agree(tiny_models):
    from harness import models
    from harness.eval import predict

    tok = models.load_tokenizer(tiny_models["bert"])
    model = models.load_model(
        tiny_models["bert"], "encoder", num_labels=2, id2label={0: "negative", 1: "positive"}
    ).eval()
    predictor = predict.make_predictor(model, tok, kind="encoder", task=TASK, budget=Budget(max_seq_len=64), shots=[])
    examples = _examples()
    preds, extra = predictor(examples)
    single = [predictor([e]) for e in examples]
    assert preds == [p[0] for p, _ in single]
    for e, (_, one) in zip(extra, single):
        assert e["probs"]["positive"] == pytest.approx(one[0]["probs"]["positive"], abs=1e-4)


def test_length_sorted_batches_keep_the_original_order():
    from harness.eval.predict import run_predictions

    seen = []

    def fake(batch):
        seen.append([e["id"] for e in batch])
        return [e["text"].upper() for e in batch], [{"n": len(e["text"])} for e in batch]

    examples = [{"id": str(i), "text": "x" * n, "label": "a"} for i, n in enumerate([3, 9, 1, 7, 5])]
    rows, cost, _ = run_predictions(fake, examples, {"type": "classification"}, batch_size=2, latency_examples=0)
    assert [r["id"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert [r["prediction"] for r in rows] == [e["text"].upper() for e in examples]
    assert seen == [["1", "3"], ["4", "0"], ["2"]]  # longest first: batches of similar length
    assert cost["eval_examples_per_s"] > 0 and "latency_p50_ms" not in cost


def test_forgetting_is_the_change_of_general_loss(tiny_models, tmp_path):
    from harness import models
    from harness.errors import HarnessError
    from harness.eval.forgetting import Forgetting, load_passages

    text = tmp_path / "general.txt"
    text.write_text("the music was great.\n\ni think the plot is dull.\n\nthe cast felt moving!\n")
    tok = models.load_tokenizer(tiny_models["llama"])
    model = models.load_model(tiny_models["llama"], "causal_lm", tokenizer=tok).eval()
    budget = Budget(forgetting_text=str(text))
    state = Forgetting.measure_before(model, tok, kind="causal_lm", budget=budget, base_dir=None)
    same, _, detail = state.after(model, tok, trained=True, resamples=50, seed=0)
    assert same == 0.0 and detail["passages"] == 3 and detail["loss_before"] > 0
    with torch.no_grad():
        model.lm_head.weight.mul_(3.0)  # sharper, wrong logits: the general loss must move
    value, ci, detail = state.after(model, tok, trained=True, resamples=200, seed=0)
    assert value == pytest.approx(detail["loss_after"] - detail["loss_before"], abs=1e-5) and value != 0
    assert ci[0] <= value <= ci[1]
    assert Forgetting.measure_before(model, tok, kind="encoder", budget=budget, base_dir=None) is None
    assert (
        Forgetting.measure_before(model, tok, kind="causal_lm", budget=Budget(forgetting_text=None), base_dir=None)
        is None
    )
    jsonl = tmp_path / "g.jsonl"
    jsonl.write_text('{"text": "one"}\n{"text": "two"}\n')
    assert load_passages(str(jsonl)) == ["one", "two"]
    with pytest.raises(HarnessError, match="forgetting_text|not found"):
        load_passages(str(tmp_path / "missing.txt"))


def test_console_summary_names_only_significant_winners():
    from harness.eval.compare import summary_lines

    comparisons = [
        stats.compare("accuracy", "mcnemar", "lora", [1] * 20, "zero_shot", [0] * 20, higher_is_better=True),
        stats.compare(
            "rouge1", "paired_bootstrap", "lora", [0.5, 0.4, 0.6], "zero_shot", [0.5, 0.4, 0.6], higher_is_better=True
        ),
    ]
    lines = summary_lines({"comparisons": comparisons, "seed_summary": []})
    assert lines[0].startswith("lora beats zero_shot on accuracy")
    assert not any("beats" in line for line in lines[1:])
    assert lines[1].startswith("1 of 2 paired test(s) significant") and "predates corrections" in lines[1]
    assert "no significant" in summary_lines({"comparisons": comparisons[1:]})[0]


def test_a_clear_bootstrap_difference_can_survive_a_large_family():
    """1000 resamples floor the bootstrap's own p at 1/1001; Holm over 78 pairs would lift that
    to 0.078, so the tail beyond the resampling's resolution comes from the normal approximation."""
    rng = np.random.default_rng(3)
    a = rng.random(64)
    clear = stats.paired_bootstrap(a + 0.3, a + rng.normal(0, 0.1, 64))
    assert clear["p_method"] == "bootstrap normal tail"
    assert clear["p_value"] < 0.05 / 78
    assert stats.adjust_p_values([clear["p_value"]] + [0.5] * 77, "holm")[0] < 0.05
    null = stats.paired_bootstrap(a, a + rng.normal(0, 0.1, 64))  # no real difference: the resampled tail decides
    assert null["p_method"] == "bootstrap" and null["p_value"] > 0.05
