"""End to end on the tiny models: CIs, per-class detail, seeds, pairwise comparisons, BERTScore
with a local scorer, perplexity, forgetting and the cost figures, as they land in results.json."""

from __future__ import annotations

import pytest

from tests.test_runner import results_of, run_cli


@pytest.mark.slow
def test_seeds_cis_and_comparisons_in_results(write_experiment, tmp_path):
    path = write_experiment(
        [{"method": "zero_shot", "model": "llama"}, {"method": "full_ft", "model": "bert", "lr": 1e-3}],
        budget={"seeds": [0, 1], "bootstrap_resamples": 200},
    )
    result = run_cli(path, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    _, results = results_of(tmp_path)
    arms = results["arms"]
    assert [a["arm"]["name"] for a in arms] == [
        "zero_shot · llama · seed 0",
        "zero_shot · llama · seed 1",
        "full_ft · bert · seed 0",
        "full_ft · bert · seed 1",
    ]
    assert [a["arm"]["seed"] for a in arms] == [0, 1, 0, 1]
    assert len({a["arm"]["hash"] for a in arms}) == 4
    for arm in arms:
        assert arm["status"] == "ok"
        low, high = arm["ci"]["accuracy"]
        assert low <= arm["metrics"]["accuracy"] <= high
        assert set(arm["metrics_detail"]["per_class_f1"]) == {"negative", "positive"}
        matrix = arm["metrics_detail"]["confusion_matrix"]["matrix"]
        assert sum(map(sum, matrix)) == 8
    # The two seeds of full_ft train on different example orders; the audit compares within a seed.
    assert results["budget_audit"]["identical"] is True
    summary = {s["arm"]: s for s in results["seed_summary"]}
    assert set(summary) == {"zero_shot · llama", "full_ft · bert"}
    ft = summary["full_ft · bert"]["metrics"]["accuracy"]
    assert ft["values"] == [arms[2]["metrics"]["accuracy"], arms[3]["metrics"]["accuracy"]]
    assert ft["mean"] == pytest.approx(sum(ft["values"]) / 2)
    # One seed-aware comparison per pair of arms (seeds and items resampled), not one per seed;
    # macro-F1 gets its paired bootstrap too; each (task, metric) family is Holm-corrected.
    pairs = {(c["a"], c["b"], c["metric"]) for c in results["comparisons"]}
    assert pairs == {
        ("zero_shot · llama", "full_ft · bert", "accuracy"),
        ("zero_shot · llama", "full_ft · bert", "macro_f1"),
    }
    for c in results["comparisons"]:
        assert c["test"] == "seed_bootstrap" and c["seeds"] == [0, 1] and 0 <= c["p_value"] <= c["p_adjusted"] <= 1
        assert c["correction"] == "holm" and c["significant"] == (c["p_adjusted"] < 0.05)
    assert results["correction"] == "holm" and results["sensitivity"]["sentiment"]["n"] == 8
    assert results["metric_info"]["accuracy"]["unit"] == "fraction"


def to_generation(data):
    """The tiny sentiment experiment as a generation task (the label word is the reference)."""
    task = data["tasks"]["sentiment"]
    task["type"] = "generation"
    task["data"]["columns"] = {"id": "uid", "text": "review", "reference": "sentiment"}
    for key in ("labels", "decoder_eval"):
        task.pop(key, None)


@pytest.mark.slow
def test_generation_metrics_bertscore_perplexity_forgetting(write_experiment, tmp_path, tiny_models):
    general = tmp_path / "general.txt"
    general.write_text("the music was great.\n\ni think the plot is dull.\n\nthe cast felt moving!\n")

    path = write_experiment(
        [{"method": "zero_shot", "model": "llama"}, {"method": "lora", "model": "llama", "lr": 1e-2}],
        budget={
            "bertscore_model": str(tiny_models["bert"]),
            "bertscore_layer": 1,
            "embedding_model": str(tiny_models["bert"]),
            "forgetting_text": str(general),
            "max_new_tokens": 4,
            "bootstrap_resamples": 100,
        },
        edit=to_generation,
    )
    result = run_cli(path, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run_dir, results = results_of(tmp_path)
    zero, lora = results["arms"]
    for arm in (zero, lora):
        m = arm["metrics"]
        assert arm["status"] == "ok", arm.get("error")
        for name in (
            "rouge1",
            "rouge2",
            "rougeL",
            "exact_match",
            "token_f1",
            "bleu",
            "bertscore_f1",
            "embedding_cosine",
            "perplexity",
        ):
            assert m[name] is not None and name in arm["ci"], name
        assert m["perplexity"] > 1 and m["generation_tokens_per_s"] > 0
        assert arm["metrics_detail"]["bertscore"]["model"] == str(tiny_models["bert"])
        assert arm["metrics_detail"]["bertscore"]["layer"] == 1
        assert arm["metrics_detail"]["embedding_cosine"]["model"] == str(tiny_models["bert"])
    assert lora["metrics_detail"]["forgetting"]["passages"] == 3
    assert zero["metrics"]["forgetting"] == 0.0 and zero["metrics"]["saved_mb"] == 0.0
    assert zero["metrics_detail"]["forgetting"]["measured"] is False
    assert lora["metrics"]["forgetting"] != 0.0 and "forgetting" in lora["ci"]
    detail = lora["metrics_detail"]["forgetting"]
    assert lora["metrics"]["forgetting"] == pytest.approx(detail["loss_after"] - detail["loss_before"], abs=1e-5)
    assert lora["metrics"]["saved_mb"] > 0
    tests = {c["metric"]: c["test"] for c in results["comparisons"]}
    assert tests["rouge1"] == "paired_bootstrap" and tests["bertscore_f1"] == "paired_bootstrap"
    assert tests["embedding_cosine"] == "paired_bootstrap"
    assert tests["exact_match"] == "mcnemar"
    assert tests["bleu"] == "paired_bootstrap" and tests["perplexity"] == "paired_bootstrap"  # corpus metrics
