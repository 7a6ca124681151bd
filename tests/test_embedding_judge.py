"""Embedding similarity (embedding_cosine) and the LLM judge (local, and a real OpenAI-compatible server
on 127.0.0.1 serving the tiny decoder), on the tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.config.schema import Budget, JudgeSpec
from harness.eval import metrics, quality
from harness.eval.embedding import EmbeddingCosine
from harness.eval.judge import SKIPPED, LocalJudge, judge_rows, parse_grade, parse_verdict
from tests.judge_server import JudgeServer


def test_embedding_cosine_is_the_cosine_of_mean_pooled_states(tiny_models):
    from transformers import AutoModel, AutoTokenizer

    scorer = EmbeddingCosine(str(tiny_models["bert"]))
    preds, refs = (
        ["the film was great", "boring", "", "the cast was dull"],
        ["the film was great", "the plot was fun", "x", "dull"],
    )
    got = scorer(preds, refs)
    # By hand, one text at a time (no padding), mean over every token:
    tok, model = (
        AutoTokenizer.from_pretrained(tiny_models["bert"]),
        AutoModel.from_pretrained(tiny_models["bert"]).eval(),
    )

    def embed(text):
        with torch.inference_mode():
            return model(**tok(text, return_tensors="pt")).last_hidden_state[0].mean(0)

    for (p, r), value in zip(zip(preds, refs), got):
        want = 0.0 if not p else float(torch.nn.functional.cosine_similarity(embed(p), embed(r), dim=0))
        assert value == pytest.approx(want, abs=1e-4)
    assert got[0] == pytest.approx(1.0, abs=1e-5) and got[2] == 0.0
    assert got[1] != got[3]
    # Through the registry: the metric reads the scorer from Items, with a direction and a paired test.
    metric = metrics.METRICS["embedding_cosine"]
    assert metric.higher_is_better and metric.paired_test == "paired_bootstrap"
    value = metrics.value("embedding_cosine", preds, refs, embedding=scorer)
    assert value == pytest.approx(np.mean(got), abs=1e-6)
    assert scorer.detail()["model"] == str(tiny_models["bert"])


# ------------------------------------------------------------------ LLM-as-a-judge
# Against a real OpenAI-compatible server on 127.0.0.1 serving the tiny decoder (tests/judge_server.py).


@pytest.fixture(scope="module")
def judge_server(tiny_models):
    server = JudgeServer(tiny_models["llama"])
    yield server
    server.stop()


def _rows(n=4):
    return [
        {"id": f"i{i}", "input": f"the film was {w}", "prediction": w, "reference": "positive"}
        for i, w in enumerate(["great", "dull", "moving", "boring"][:n])
    ]


def _many(n):
    return [dict(r, id=f"{r['id']}-{k}") for k in range(n // 4) for r in _rows()]


def test_parsers():
    assert [parse_grade(t) for t in ("7", "Grade: 10/10", " 3.", "100", "none", None)] == [7, 10, 3, None, None, None]
    assert [parse_verdict(t) for t in ("A", "b is better", "Tie.", "neither")] == ["A", "B", "tie", None]


def test_http_judge_grades_caches_and_sends_the_key_from_the_environment(judge_server, monkeypatch):
    monkeypatch.setenv("HARNESS_TEST_JUDGE_KEY", "sk-test-secret")
    spec = JudgeSpec(
        model="tiny",
        base_url=judge_server.base_url("digits"),
        api_key_env="HARNESS_TEST_JUDGE_KEY",
        max_tokens=1,
        rubric="Q: {question}\nA: {answer}\nGrade 1-10:",
    )
    rows, before = _rows(), judge_server.requests
    figures = judge_rows(rows, spec, "Say it.", None)
    assert judge_server.requests - before == 4
    assert judge_server.headers[-1]["Authorization"] == "Bearer sk-test-secret"
    for row in rows:
        assert row["judge"]["score"] in range(1, 10) and row["judge"]["replies"] == [str(row["judge"]["score"])]
    assert figures["judge_failed_items"] == 0 and figures["judge_tokens"] > 4
    assert "sk-test-secret" not in json.dumps([rows, figures])
    # A rerun asks nothing: every reply comes from the cache, at no token cost.
    again = _rows()
    refigured = judge_rows(again, spec, "Say it.", None)
    assert judge_server.requests - before == 4 and refigured["detail"]["cached_replies"] == 4
    assert refigured["judge_tokens"] == 0 and [r["judge"] for r in again] == [r["judge"] for r in rows]
    # The metric: the mean grade, per-item scores for the paired tests.
    assessed = quality.assess(
        again,
        {"type": "generation", "instruction": "Say it."},
        Budget(judge=spec, bertscore_model=None, embedding_model=None, bootstrap_resamples=50),
    )
    assert judge_server.requests - before == 4
    assert assessed.metrics["judge_score"] == pytest.approx(np.mean([r["judge"]["score"] for r in rows]))
    assert "judge_score" in assessed.ci and assessed.metrics["judge_failed_items"] == 0
    assert all(r["scores"]["judge_score"] == r["judge"]["score"] for r in again)


@pytest.mark.parametrize(
    "behaviour, reason",
    [
        ("error", "HTTP 500"),
        ("trickle", "timeout"),  # one byte per 20 ms: only a total deadline stops it
        ("words", "unparseable reply"),
        ("huge", "response too large"),  # 2 MB: once accepted as grade 7
        ("deep", "response JSON nested too deep"),  # once a RecursionError that failed the arm
        ("badusage", "usage.total_tokens is not a count"),  # once a ValueError that failed the arm
    ],
)
def test_judge_failures_are_counted_per_item_never_raised(judge_server, behaviour, reason):
    # Every reply is a rule of the server's (no generation), so only "trickle" meets the deadline.
    spec = JudgeSpec(
        model="tiny",
        base_url=judge_server.base_url(behaviour),
        max_tokens=3,
        timeout_s=1 if behaviour == "trickle" else 60,
    )
    rows = _rows(2)
    assessed = quality.assess(
        rows,
        {"type": "generation"},
        Budget(judge=spec, bertscore_model=None, embedding_model=None, bootstrap_resamples=0),
    )
    assert assessed.metrics["judge_failed_items"] == 2 and "judge_score" not in assessed.metrics
    assert assessed.detail["judge"]["failures"] == {reason: 2}
    assert assessed.detail["judge"]["withheld"]["reason"] == "2 of 2 items failed (more than 20%)"
    assert all(r["judge"]["score"] is None and "judge_score" not in r["scores"] for r in rows)
    assert all(len(json.dumps(r["judge"])) < 1000 for r in rows)  # nothing of a hostile reply is kept
    if behaviour == "words":  # the unparseable reply is kept for the reader
        assert all(r["judge"]["replies"][0] == "excellent" for r in rows)
    # Errors and timeouts are not cached (the judge is asked again next time); an unparseable
    # reply is the judge's answer and is.
    before = judge_server.requests
    judge_rows(_rows(1), spec, None, None)
    assert judge_server.requests == before + (behaviour != "words")


def test_a_silent_server_is_asked_concurrency_requests_at_a_time(judge_server):
    import threading

    judge_server.hold_target, judge_server.peak_in_flight = 3, 0
    judge_server.held_enough.clear()
    judge_server.let_go.clear()
    spec = JudgeSpec(model="tiny", base_url=judge_server.base_url("hold"), concurrency=3)
    rows, found = _many(8), {}
    worker = threading.Thread(target=lambda: found.update(judge_rows(rows, spec, None, None)))
    worker.start()
    try:  # three requests in flight at once: a silent server costs a third of timeout_s x items
        assert judge_server.held_enough.wait(120), "the judge asked one request at a time"
    finally:
        judge_server.let_go.set()
        worker.join(120)
    assert judge_server.peak_in_flight == 3  # and never more than `concurrency`
    assert found["detail"]["failures"] == {"HTTP 503": 8}


def test_an_endpoint_that_refuses_is_not_asked_once_per_item():
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = JudgeSpec(model="tiny", base_url=f"http://127.0.0.1:{port}/v1", concurrency=2)
    found = judge_rows(_many(20), spec, None, None)
    failures = found["detail"]["failures"]
    # After 2 x concurrency refusals in a row the rest fail at once, each counted as skipped.
    assert set(failures) == {"connection: ConnectionRefusedError", SKIPPED} and sum(failures.values()) == 20
    assert failures["connection: ConnectionRefusedError"] <= 2 * 2 + 2  # plus the ones already in flight


def test_the_console_names_failed_items_by_class_and_the_withheld_metric(judge_server):
    from harness.eval.judge_reliability import console_lines

    spec = JudgeSpec(model="tiny", base_url=judge_server.base_url("error"))
    rows = _rows(4)
    assessed = quality.assess(
        rows, {"type": "generation"}, Budget(judge=spec, bertscore_model=None, embedding_model=None)
    )
    results = {"arms": [{"arm": {"name": "zs"}, "metrics_detail": assessed.detail}]}
    assert console_lines(results) == [
        "judge: items failed: zs 4 of 4 (HTTP 500 4)",
        "judge metric withheld, not a measurement: judge_score of zs (4 of 4 items failed (more than 20%))",
    ]


def test_a_judge_that_always_says_a_is_withheld_from_metrics_ci_and_paired_tests(judge_server):
    spec = JudgeSpec(model="tiny", base_url=judge_server.base_url("always_a"), mode="pairwise_reference")
    rows = _rows()
    assessed = quality.assess(
        rows,
        {"type": "generation"},
        Budget(judge=spec, bertscore_model=None, embedding_model=None, bootstrap_resamples=20),
    )
    # Every item answered "A" in both orders: a tie by contradiction, consistency 0.
    assert assessed.metrics["judge_position_consistency"] == 0.0 and assessed.metrics["judge_failed_items"] == 0
    assert "judge_win_rate" not in assessed.metrics and "judge_win_rate" not in assessed.ci
    assert all("judge_win_rate" not in r["scores"] for r in rows)  # what the paired tests read
    withheld = assessed.detail["judge"]["withheld"]
    assert withheld["metric"] == "judge_win_rate" and withheld["value"] == 0.5
    assert withheld["reason"] == "position consistency 0.00 is below 0.60 (a judge answering by coin gets 0.5)"
    assert assessed.detail["judge"]["reliability"]["position_consistency"] == 0.0
    # The same judge passes once the rule is lowered: the gate is the YAML's.
    lenient = spec.model_copy(
        update={"reliability": spec.reliability.model_copy(update={"min_position_consistency": 0})}
    )
    again = quality.assess(
        _rows(), {"type": "generation"}, Budget(judge=lenient, bertscore_model=None, embedding_model=None)
    )
    assert again.metrics["judge_win_rate"] == 0.5 and "withheld" not in again.detail["judge"]


def test_pairwise_judge_asks_both_orders_and_counts_contradictions_as_ties(judge_server):
    spec = JudgeSpec(model="tiny", base_url=judge_server.base_url("ab"), mode="pairwise_reference", max_tokens=1)
    rows = _rows()
    figures = judge_rows(rows, spec, None, None)
    consistent = 0
    for row in rows:
        first, second = row["judge"]["replies"]  # answer as A, then answer as B
        want = {("A", "B"): 1.0, ("B", "A"): 0.0}.get((first, second), 0.5)
        consistent += (first, second) in {("A", "B"), ("B", "A")}
        assert row["judge"]["score"] == want
    assert figures["judge_position_consistency"] == pytest.approx(consistent / 4)
    assert figures["judge_failed_items"] == 0


def test_local_judge_says_what_the_server_says_with_the_same_model(judge_server, tiny_models):
    # Same model, same chat template, greedy: the in-process judge and the endpoint agree word for word.
    local = JudgeSpec(model=str(tiny_models["llama"]), max_tokens=4)
    served = JudgeSpec(model="tiny", base_url=judge_server.base_url("free"), max_tokens=4)
    a, b = _rows(3), _rows(3)
    judge_rows(a, local, None, None)
    judge_rows(b, served, None, None)
    assert [r["judge"]["replies"] for r in a] == [r["judge"]["replies"] for r in b]
    assert LocalJudge(local, None).identity != "http"  # different judges never share cache entries


@pytest.mark.slow
def test_judge_end_to_end_in_results_report_and_mlflow(
    write_experiment, tmp_path, tiny_models, judge_server, monkeypatch
):
    from tests.test_eval_run import to_generation
    from tests.test_runner import results_of, run_cli

    monkeypatch.setenv("HARNESS_TEST_JUDGE_KEY", "sk-never-written")

    judge = {
        "model": "tiny",
        "base_url": judge_server.base_url("digits"),
        "api_key_env": "HARNESS_TEST_JUDGE_KEY",
        "max_tokens": 1,
    }
    path = write_experiment(
        [{"method": "zero_shot", "model": "llama"}, {"method": "lora", "model": "llama", "lr": 1e-2}],
        budget={
            "bertscore_model": None,
            "embedding_model": str(tiny_models["bert"]),
            "forgetting_text": None,
            "max_new_tokens": 3,
            "bootstrap_resamples": 50,
            "judge": judge,
        },
        edit=to_generation,
    )
    result = run_cli(path, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run_dir, results = results_of(tmp_path)
    for arm in results["arms"]:
        assert arm["status"] == "ok", arm.get("error")
        assert 1 <= arm["metrics"]["judge_score"] <= 9 and "judge_score" in arm["ci"]
        assert arm["metrics"]["judge_failed_items"] == 0 and arm["metrics"]["judge_seconds"] >= 0
        assert arm["metrics_detail"]["judge"]["items"] == 8
    assert {c["metric"] for c in results["comparisons"]} >= {"judge_score", "embedding_cosine"}
    assert results["metric_info"]["judge_score"]["unit"] == "grade (1-10)"
    assert "judge_score" in (run_dir / "index.html").read_text()
    # The key reached the server and nothing else: not results, predictions, report or MLflow.
    assert judge_server.headers[-1]["Authorization"] == "Bearer sk-never-written"
    for file in tmp_path.rglob("*"):
        if file.is_file():
            assert b"sk-never-written" not in file.read_bytes(), file


def test_judge_agreement_is_spearman_across_arms_of_a_task():
    from types import SimpleNamespace

    from harness.eval.compare import judge_agreement

    def arm(task, judge, rouge, status="ok"):
        return SimpleNamespace(status=status, arm={"task_key": task}, metrics={"judge_score": judge, "rougeL": rouge})

    results = [
        arm("t", 2.0, 0.1),
        arm("t", 5.0, 0.3),
        arm("t", 9.0, 0.2),
        arm("t", 1.0, 0.9, "failed"),
        arm("u", 1.0, 0.5),
        arm("u", 2.0, 0.4),
    ]
    (row,) = judge_agreement(results)  # task u has two arms: no correlation from two points
    # ranks judge 1,2,3 vs rouge 1,3,2: rho = 1 - 6 * (0 + 1 + 1) / (3 * 8) = 0.5
    assert row == {
        "task": "t",
        "judge_metric": "judge_score",
        "reference_metric": "rougeL",
        "arms": 3,
        "spearman_rho": 0.5,
        "p_value": pytest.approx(0.666667, abs=1e-5),
    }
