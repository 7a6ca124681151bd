"""The HTML report from a hand-made run folder (no training): headline, best-per-metric by the
registry's direction, confidence intervals, significance, golden results, escaping, the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli.main import app
from harness.report import charts, view
from harness.report.html import render, write_html_report

XSS = "<script>alert(1)</script>"


def arm(name, accuracy, latency, *, status="ok", ci=None, trainable=1000.0, error=None, task="sentiment"):
    method, model = name.split("-")
    metrics = (
        {}
        if status != "ok"
        else {
            "accuracy": accuracy,
            "macro_f1": accuracy - 0.1,
            "peak_memory_mb": 500.0 + latency,
            "latency_p50_ms": latency,
            "trainable_params": trainable,
        }
    )
    return {
        "arm": {
            "name": name,
            "method": method,
            "model_key": model,
            "model": f"/models/{model}",
            "kind": "encoder",
            "task_key": task,
            "params": {},
            "hash": f"hash{name}",
            "slug": f"{name}-{task}",
        },
        "status": status,
        "error": error,
        "metrics": metrics,
        "ci": ci or {},
        "consumed": {"steps": 4, "examples": 16, "tokens": 300, "seconds": 1.5} if status == "ok" else None,
        "curves": {"train_loss": [[1, 0.9], [2, 0.7], [3, 0.6]]} if status == "ok" else {},
        "provenance": {
            "packages": {"torch": "2.13.0"},
            "python": "3.11.7",
            "device": "cpu",
            "git_commit": "abc1234",
            "data_fingerprint": "f00d",
        }
        if status == "ok"
        else {},
        "artifacts": {"predictions": "predictions.jsonl"} if status == "ok" else {},
    }


def make_run(tmp_path: Path, arms: list[dict], task_type: str = "classification", **extra) -> Path:
    run_dir = tmp_path / "reports" / "demo" / "20260101-000000"
    results = {
        "experiment": {
            "name": "demo",
            "question": "Which arm should we ship?",
            "tasks": {"sentiment": {"type": task_type, "labels": ["neg", "pos"]}},
            "models": {"bert": {"source": "/models/bert"}},
            "budget": {"max_steps": 4},
        },
        "run_id": run_dir.name,
        "arms": arms,
        "budget_audit": {"identical": True, "flags": {}},
        **extra,
    }
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps(results))
    for a in arms:
        if a["status"] != "ok":
            continue
        folder = run_dir / "arms" / a["arm"]["slug"]
        folder.mkdir(parents=True)
        rows = [
            {
                "id": "x1",
                "input": XSS,
                "reference": "pos",
                "prediction": "pos" if a["arm"]["method"] == "lora" else "neg",
            },
            {"id": "x2", "input": "plain", "reference": "neg", "prediction": "neg"},
        ]
        (folder / "predictions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return run_dir


def results_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_headline_names_the_best_arm_and_says_significance_was_not_computed(tmp_path):
    run_dir = make_run(tmp_path, [arm("lora-bert", 0.8, 20.0), arm("full-bert", 0.7, 5.0)])
    page = view.build(run_dir, results_of(run_dir))
    sentence = str(page["tasks"][0]["headline"])
    assert "<b>lora-bert</b> is best by accuracy (0.800)" in sentence
    assert "ahead of full-bert (0.700)" in sentence and "significance was not computed" in sentence


def test_best_is_marked_by_the_metric_direction(tmp_path):
    run_dir = make_run(tmp_path, [arm("lora-bert", 0.8, 20.0), arm("full-bert", 0.7, 5.0)])
    table = view.build(run_dir, results_of(run_dir))["tasks"][0]["table"]
    rows = {r["name"]: r for g in table["groups"] for r in g["rows"]}
    assert [c["best"] for c in rows["accuracy"]["cells"]] == [True, False]  # higher is better
    assert [c["best"] for c in rows["latency_p50_ms"]["cells"]] == [False, True]  # lower is better
    assert rows["latency_p50_ms"]["arrow"] == "↓" and rows["accuracy"]["arrow"] == "↑"
    # All equal: nothing is marked best.
    assert [c["best"] for c in rows["trainable_params"]["cells"]] == [False, False]


def test_confidence_intervals_and_significant_comparison(tmp_path):
    arms = [arm("lora-bert", 0.8, 20.0, ci={"accuracy": [0.7, 0.9]}), arm("full-bert", 0.7, 5.0)]
    comparisons = [
        {
            "metric": "accuracy",
            "a": "lora-bert",
            "b": "full-bert",
            "difference": 0.1,
            "p_value": 0.01,
            "significant": True,
        }
    ]
    run_dir = make_run(tmp_path, arms, comparisons=comparisons)
    html = render(run_dir, results_of(run_dir))
    assert "0.800 [0.700, 0.900]" in html
    assert "the difference is <b>significant</b> (difference +0.1, p = 0.01)" in html
    assert "significance not computed" not in html


def test_not_significant_and_missing_pair(tmp_path):
    arms = [arm("lora-bert", 0.8, 20.0), arm("full-bert", 0.7, 5.0)]
    not_sig = [
        {
            "metric": "accuracy",
            "a": "hashfull-bert",
            "b": "hashlora-bert",
            "difference": -0.1,
            "p_value": 0.4,
            "significant": False,
        }
    ]
    run_dir = make_run(tmp_path, arms, comparisons=not_sig)
    assert "<b>not significant</b>" in str(view.build(run_dir, results_of(run_dir))["tasks"][0]["headline"])
    other = [{"metric": "macro_f1", "a": "lora-bert", "b": "full-bert", "significant": True}]
    assert "no significance test compares these two" in str(view.headline("sentiment", arms, "accuracy", other))


def test_ties_single_arm_and_all_failed(tmp_path):
    tie = [arm("lora-bert", 0.8, 20.0), arm("full-bert", 0.8, 5.0)]
    tie[0]["ci"], tie[1]["ci"] = {"accuracy": [0.7, 0.9]}, {"accuracy": [0.75, 0.85]}
    assert "<b>lora-bert</b> (0.800 [0.700, 0.900]) and <b>full-bert</b> (0.800 [0.750, 0.850]) tie on accuracy" in str(
        view.headline("t", tie, "accuracy", None)
    )  # each arm with its own interval
    assert "nothing to compare it with" in str(view.headline("t", tie[:1], "accuracy", None))
    failed = [arm("lora-bert", None, None, status="failed", error="boom")]
    assert "No arm completed" in str(view.headline("t", failed, None, None))


def test_model_and_dataset_text_is_escaped(tmp_path):
    arms = [arm("lora-bert", 0.8, 20.0), arm("full-bert", None, None, status="failed", error=f"bad {XSS} thing")]
    run_dir = make_run(tmp_path, arms, golden={"lora-bert": [{"item_id": XSS, "passed": False, "reason": XSS}]})
    html = render(run_dir, results_of(run_dir))
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # The page's only script is its own, allowed by a nonce the Content-Security-Policy names.
    nonce = re.search(r"script-src 'nonce-([^']+)'", html).group(1)
    assert re.findall(r"<script[^>]*>", html) == [f'<script nonce="{nonce}">']


def test_failed_arm_is_shown_with_its_error_and_flags(tmp_path):
    arms = [arm("lora-bert", 0.8, 20.0), arm("full-bert", None, None, status="failed", error="CUDA out of memory")]
    run_dir = make_run(
        tmp_path, arms, budget_audit={"identical": False, "flags": {"lora-bert": ["stopped early: time"]}}
    )
    html = render(run_dir, results_of(run_dir))
    assert "CUDA out of memory" in html and 'class="status failed"' in html
    assert "stopped early: time" in html and "1 arm(s) flagged" in html


def test_golden_results_in_either_shape(tmp_path):
    per_arm = {"lora-bert": [{"item_id": "g1", "passed": True}, {"item_id": "g2", "passed": False}]}
    flat = [
        {"arm": "lora-bert", "item_id": "g1", "passed": True},
        {"arm": "lora-bert", "item_id": "g2", "passed": False},
    ]
    for data in (per_arm, flat):
        g = view.golden({"golden": data})
        assert g["arms"] == ["lora-bert"] and g["rates"] == ["1/2"]
        assert [r["cells"][0]["passed"] for r in g["rows"]] == [True, False]
    assert view.golden({}) is None
    run_dir = make_run(tmp_path, [arm("lora-bert", 0.8, 20.0)])
    assert 'id="golden"' not in render(run_dir, results_of(run_dir))


def test_examples_per_class_and_charts(tmp_path):
    run_dir = make_run(tmp_path, [arm("lora-bert", 0.8, 20.0), arm("full-bert", 0.7, 5.0, trainable=0.0)])
    task = view.build(run_dir, results_of(run_dir))["tasks"][0]
    ex = task["examples"]
    assert ex["arms"] == ["lora-bert", "full-bert"] and [r["disagree"] for r in ex["rows"]] == [True, False]
    per_class = task["per_class"]
    assert per_class["classes"] == ["neg", "pos"]
    assert per_class["rows"][0]["cells"] == ["1.000", "1.000"] and per_class["rows"][1]["cells"] == ["1.000", "0.000"]
    # Both arms are on the front of accuracy against latency: one is better, the other cheaper.
    latency = next(p for p in task["pareto"] if "latency" in p["title"])["chart"]
    assert [p["front"] for p in latency["points"]] == [True, True]


def test_pareto_front_follows_directions():
    points = [(10.0, 0.9), (5.0, 0.8), (20.0, 0.7), (5.0, 0.9)]
    assert charts.pareto_front(points, x_higher_better=False, y_higher_better=True) == {3}
    assert charts.pareto_front(points, x_higher_better=True, y_higher_better=True) == {0, 2}


def test_log_axis_when_values_span_orders_of_magnitude():
    axis = charts.make_axis("params", [0.0, 1e3, 1e6])
    assert axis.log and axis.has_zero and axis.ticks[0] == (0.0, "0")
    assert axis.fraction(0.0) == 0.0 and 0 < axis.fraction(1e3) < axis.fraction(1e6) <= 1.0
    linear = charts.make_axis("accuracy", [0.6, 0.7])
    assert not linear.log and linear.lo <= 0.6 and linear.hi >= 0.7


def test_report_command_rebuilds_the_page(tmp_path):
    run_dir = make_run(tmp_path, [arm("lora-bert", 0.8, 20.0)])
    result = CliRunner().invoke(app, ["report", str(run_dir)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "lora-bert" in result.output and f"report: {run_dir / 'index.html'}" in result.output
    assert "lora-bert" in (run_dir / "index.html").read_text()
    missing = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert missing.exit_code == 2 and "no results.json" in missing.output


def test_write_html_report_needs_a_run_folder(tmp_path):
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="no results.json"):
        write_html_report(tmp_path)


def test_generation_task_uses_its_own_primary_metric_and_has_no_classes(tmp_path):
    arms = [arm("lora-bert", 0.0, 20.0), arm("full-bert", 0.0, 5.0)]
    for a, rouge in zip(arms, (0.31, 0.42)):
        del a["metrics"]["accuracy"], a["metrics"]["macro_f1"]
        a["metrics"].update(rouge1=rouge, rougeL=rouge - 0.1)
    run_dir = make_run(tmp_path, arms, task_type="generation")
    task = view.build(run_dir, results_of(run_dir))["tasks"][0]
    assert task["metric"] == "rouge1" and task["per_class"] is None
    assert "<b>full-bert</b> is best by rouge1 (0.420)" in str(task["headline"])
    assert [c["correct"] for c in task["examples"]["rows"][0]["cells"]] == [None, None]  # no right/wrong shading
    assert "A generation task has no classes" in render(run_dir, results_of(run_dir))


def test_confidence_interval_is_drawn_on_the_pareto_chart(tmp_path):
    run_dir = make_run(
        tmp_path, [arm("lora-bert", 0.8, 20.0, ci={"accuracy": [0.6, 0.95]}), arm("full-bert", 0.7, 5.0)]
    )
    chart = view.build(run_dir, results_of(run_dir))["tasks"][0]["pareto"][0]["chart"]
    with_ci, without = chart["points"]
    assert without["ci"] is None
    low, high = with_ci["ci"]
    assert low > with_ci["cy"] > high  # SVG y grows downwards: the low end is drawn below the point


def test_each_task_gets_its_own_answer_and_best_marks(tmp_path):
    arms = [
        arm("lora-bert", 0.8, 20.0),
        arm("full-bert", 0.7, 5.0),
        arm("lora-bert", 0.5, 9.0, task="topics"),
        arm("full-bert", 0.6, 8.0, task="topics"),
    ]
    run_dir = make_run(tmp_path, arms)
    page = view.build(run_dir, results_of(run_dir))
    assert page["multi_task"] and [t["key"] for t in page["tasks"]] == ["sentiment", "topics"]
    assert "<b>full-bert</b> is best" in str(page["tasks"][1]["headline"])
    accuracy = next(r for r in page["tasks"][1]["table"]["groups"][0]["rows"] if r["name"] == "accuracy")
    assert [c["best"] for c in accuracy["cells"]] == [False, True]  # compared within the task only


def test_headline_uses_the_corrected_p_and_the_sensitivity(tmp_path):
    arms = [arm("lora-bert", 0.8, 20.0), arm("full-bert", 0.7, 5.0), arm("zero-bert", 0.6, 5.0)]
    corrected = [
        {
            "task": "sentiment",
            "metric": "accuracy",
            "a": "lora-bert",
            "b": "full-bert",
            "difference": 0.1,
            "p_value": 0.02,
            "p_adjusted": 0.06,
            "correction": "holm",
            "family_size": 3,
            "significant": False,
        },
        {
            "task": "sentiment",
            "metric": "accuracy",
            "a": "lora-bert",
            "b": "zero-bert",
            "difference": 0.2,
            "p_value": 0.03,
            "p_adjusted": 0.06,
            "correction": "holm",
            "family_size": 3,
            "significant": False,
        },
    ]
    sensitivity = {
        "sentiment": {
            "metric": "accuracy",
            "unit": "fraction",
            "n": 128,
            "mdd": 0.1108,
            "basis": "observed discordant rate of the McNemar pairs (median over 3)",
        }
    }
    run_dir = make_run(tmp_path, arms, comparisons=corrected, correction="holm", sensitivity=sensitivity)
    html = render(run_dir, results_of(run_dir))
    assert (
        "the difference is <b>not significant</b> after correction (difference +0.1, p = 0.02, "
        "Holm-adjusted p = 0.06 over 3 pairs)"
    ) in html
    assert (
        "No pair of arms differs significantly on accuracy after Holm correction; the smallest adjusted p is 0.06"
        in html
    )
    assert "With 128 items this comparison can detect accuracy differences of about 11.1 points" in html
    assert "pairwise tests: Holm correction per task and metric" in html


def test_seeded_arms_are_ranked_by_their_mean_and_matched_by_base_name(tmp_path):
    arms = [
        arm("lora-bert", 0.9, 20.0),
        arm("lora-bert", 0.7, 20.0),
        arm("full-bert", 0.75, 5.0),
        arm("full-bert", 0.75, 5.0),
    ]
    for a, name, seed in zip(arms, ["lora", "lora", "full", "full"], [0, 1, 0, 1]):
        a["arm"].update(name=f"{name} · seed {seed}", slug=f"{name}-{seed}", seed=seed)
    seed_summary = [
        {"arm": "lora", "seeds": [0, 1], "metrics": {"accuracy": {"mean": 0.8, "std": 0.14, "values": [0.9, 0.7]}}},
        {"arm": "full", "seeds": [0, 1], "metrics": {"accuracy": {"mean": 0.75, "std": 0.0, "values": [0.75, 0.75]}}},
    ]
    comparisons = [
        {
            "task": "sentiment",
            "metric": "accuracy",
            "a": "lora",
            "b": "full",
            "difference": 0.05,
            "p_value": 0.4,
            "p_adjusted": 0.4,
            "correction": "holm",
            "family_size": 1,
            "significant": False,
            "seeds": [0, 1],
            "test": "seed_bootstrap",
        }
    ]
    run_dir = make_run(tmp_path, arms, comparisons=comparisons, correction="holm", seed_summary=seed_summary)
    headline = str(view.build(run_dir, results_of(run_dir))["tasks"][0]["headline"])
    assert "<b>lora</b> is best by accuracy (0.800), ahead of full (0.750)" in headline
    assert "tested over seeds 0, 1 and items" in headline and "<b>not significant</b> after correction" in headline


def test_judge_agreement_sentence_is_shown_under_its_task(tmp_path):
    agreement = [
        {
            "task": "sentiment",
            "judge_metric": "judge_score",
            "reference_metric": "rougeL",
            "arms": 3,
            "spearman_rho": 0.5,
            "p_value": 0.67,
        },
        {
            "task": "other",
            "judge_metric": "judge_score",
            "reference_metric": "bertscore_f1",
            "arms": 3,
            "spearman_rho": -1.0,
            "p_value": 0.0,
        },
    ]
    run_dir = make_run(tmp_path, [arm("lora-bert", 0.8, 20.0), arm("full-bert", 0.7, 5.0)], judge_agreement=agreement)
    html = render(run_dir, results_of(run_dir))
    assert (
        "judge_score vs rougeL\n    0.50 (3 arms)." in html
        and "bertscore_f1" not in html.split("judge-agreement")[1][:400]
    )


def _pair(a, b, difference, p, adjusted, significant, **extra):
    return {
        "task": "sentiment",
        "metric": "accuracy",
        "a": a,
        "b": b,
        "difference": difference,
        "p_value": p,
        "p_adjusted": adjusted,
        "correction": "holm",
        "family_size": 3,
        "significant": significant,
        "better": a if significant else None,
        "test": "mcnemar",
        "p_method": "exact binomial",
        "ci": [difference - 0.05, difference + 0.05],
        "ci_method": "Agresti-Min paired proportions",
        **extra,
    }


def test_pairwise_tests_ranked_arms_and_the_group_tied_for_first(tmp_path):
    """lora 0.80 and full 0.78 are not separated (adjusted p 0.5); lora beats zero (0.60) after
    Holm: the tied group is {lora, full}, each with its own interval, zero is not in it."""
    arms = [
        arm("full-bert", 0.78, 5.0, ci={"accuracy": [0.70, 0.86]}),
        arm("lora-bert", 0.80, 20.0, ci={"accuracy": [0.72, 0.88]}),
        arm("zero-bert", 0.60, 5.0, ci={"accuracy": [0.50, 0.70]}),
    ]
    comparisons = [
        _pair("full-bert", "lora-bert", -0.02, 0.25, 0.5, False),
        _pair(
            "lora-bert", "zero-bert", 0.2, 1e-9, 3e-9, True, p_method="bootstrap normal tail", test="paired_bootstrap"
        ),
        _pair("full-bert", "zero-bert", 0.18, 0.001, 0.002, True),
    ]
    run_dir = make_run(tmp_path, arms, comparisons=comparisons, correction="holm")
    task = view.build(run_dir, results_of(run_dir))["tasks"][0]
    pw = task["pairwise"]
    assert [r["name"] for r in pw["ranked"]] == ["lora-bert", "full-bert", "zero-bert"]
    assert pw["tied"] == ["lora-bert", "full-bert"] and [r["tied"] for r in pw["ranked"]] == [True, True, False]
    first = pw["rows"][0]  # oriented higher-ranked minus lower-ranked: lora - full = +0.02, interval flipped
    assert (first["first"], first["second"], first["difference"], first["ci"]) == (
        "lora-bert",
        "full-bert",
        "+0.020",
        "[-0.030, +0.070]",
    )
    far = next(r for r in pw["rows"] if r["second"] == "zero-bert" and r["first"] == "lora-bert")
    assert far["p"] == "< 1e-4" and far["mark"] == "n" and far["method"] == "normal approx."
    assert far["test"] == "paired bootstrap"
    rows = {r["name"]: r for g in task["table"]["groups"] for r in g["rows"]}
    # the table marks the tied group on the tested metric (not the lone best estimate), and the
    # best value on an untested one (latency: lower is better)
    assert [c["best"] for c in rows["accuracy"]["cells"]] == [True, True, False]
    assert [c["best"] for c in rows["latency_p50_ms"]["cells"]] == [True, False, True]
    headline = str(task["headline"])
    assert (
        "Statistically tied for first on accuracy (2 of 3 ranked arms; "
        "no corrected test separates them from the best): "
        "<b>lora-bert</b> (0.800 [0.720, 0.880]), <b>full-bert</b> (0.780 [0.700, 0.860])"
    ) in headline
    html = render(run_dir, results_of(run_dir))
    assert "Pairwise tests on accuracy" in html and "Statistically tied for first:" in html
    assert "< 1e-4<sup" in html.replace("&lt;", "<") and "normal approx." in html
    assert "McNemar exact" in html and "Agresti-Min paired proportions" in html


def test_one_arm_ahead_of_all_and_wide_experiments_split_into_tables(tmp_path):
    arms = [arm(f"m{i}-bert", 0.9 - i / 100, 5.0) for i in range(9)]
    comparisons = [{**_pair("m0-bert", f"m{i}-bert", i / 100, 1e-4, 1e-3, True), "family_size": 8} for i in range(1, 9)]
    run_dir = make_run(tmp_path, arms, comparisons=comparisons, correction="holm")
    task = view.build(run_dir, results_of(run_dir))["tasks"][0]
    assert task["pairwise"]["tied"] == ["m0-bert"]
    assert "<b>m0-bert</b> is ahead of every other arm by a corrected test." in str(task["headline"])
    assert task["table"]["blocks"] == [[0, 1, 2, 3, 4], [5, 6, 7, 8]]
    html = render(run_dir, results_of(run_dir))
    assert html.count('<table class="data comparison">') == 2
