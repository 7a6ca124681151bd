"""Embedding similarity (embedding_cosine) and the LLM judge (local, and a real OpenAI-compatible server
on 127.0.0.1 serving the tiny decoder), on the tiny models."""

from __future__ import annotations

import itertools
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


# ------------------------------------------------------------------ arm against arm (pairwise_arms)
# The /longer/ endpoint is a real HTTP server answering by a rule (the longer answer wins), so every
# verdict, count and p-value below is known in advance.


def _run_with_answers(run_dir, answers: dict[str, list[str]], failed=()):
    """A run folder whose arms answered answers[name] on items i0, i1, ...; the results a driver holds."""
    from types import SimpleNamespace

    results = []
    for name, texts in answers.items():
        arm_dir = run_dir / "arms" / name
        arm_dir.mkdir(parents=True)
        rows = [{"id": f"i{i}", "input": f"text {i}", "prediction": t, "reference": "r"} for i, t in enumerate(texts)]
        (arm_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        status = "failed" if name in failed else "ok"
        results.append(
            SimpleNamespace(status=status, arm={"name": name, "slug": name, "task_key": "t"}, metrics={}, artifacts={})
        )
    return results


ANSWERS = {
    "long": ["a long answer"] * 9 + ["same"],
    "short": ["short"] * 9 + ["same"],
    "mixed": ["a much longer answer here", "x"] * 5,  # beats both on even items, loses on odd ones
    "broken": ["never judged"] * 10,  # a failed arm
}
TASKS = {"t": {"type": "generation", "instruction": "Summarise."}, "c": {"type": "classification"}}


def test_arm_pairs_judge_every_pair_in_both_orders_and_rank_the_arms(judge_server, tmp_path):
    from harness.eval.judge_pairs import judge_arm_pairs
    from harness.eval.judge_reliability import pair_lines

    spec = JudgeSpec(model="rule", base_url=judge_server.base_url("longer"), mode="pairwise_arms")
    results = _run_with_answers(tmp_path, ANSWERS, failed={"broken"})
    before = judge_server.requests
    figures = judge_arm_pairs(tmp_path, results, spec, TASKS, seed=0, resamples=200)
    # 3 pairs of ok arms x 10 items x 2 orders = 60 questions, 4 at a time; 3 are asked twice with the same words
    # (item 9: "same" vs "same" in both orders; "same" vs "x" from long and from short): sent once.
    assert judge_server.requests - before == 57
    assert sum(p["cached_replies"] for p in figures["pairs"]) == 3
    pairs = {(p["arm_a"], p["arm_b"]): p for p in figures["pairs"]}
    assert set(pairs) == {("long", "short"), ("long", "mixed"), ("short", "mixed")}
    first = pairs[("long", "short")]
    assert (first["a_wins"], first["b_wins"], first["ties"], first["failed"], first["judged"]) == (9, 0, 1, 0, 10)
    assert first["win_rate_a"] == pytest.approx(0.95) and first["position_consistency"] == 1.0
    assert first["p_value"] == pytest.approx(2 / 2**9, abs=1e-6)  # two-sided sign test, 9 of 9 decided
    assert first["win_rate_a_ci"][0] <= 0.95 <= first["win_rate_a_ci"][1]
    for key in (("long", "mixed"), ("short", "mixed")):
        assert (pairs[key]["a_wins"], pairs[key]["b_wins"], pairs[key]["p_value"]) == (5, 5, 1.0)
    # Holm over the task's three pairs: the smallest p times 3.
    assert first["p_adjusted"] == pytest.approx(3 * 2 / 2**9, abs=1e-6) and first["winner"] == "long"
    assert pairs[("long", "mixed")]["winner"] is None
    # Bradley-Terry: long > mixed > short, symmetric about mixed (long beats short, each ties mixed 5-5).
    ranking = figures["ranking"]["t"]
    assert [r["arm"] for r in ranking] == ["long", "mixed", "short"]
    strength = {r["arm"]: r["strength"] for r in ranking}
    assert strength["mixed"] == pytest.approx(0, abs=1e-3) and strength["long"] == pytest.approx(-strength["short"])
    assert all(r["strength_ci"][0] <= r["strength"] <= r["strength_ci"][1] for r in ranking)
    assert figures["reliability"]["withheld"] is None and figures["reliability"]["position_consistency"] == 1.0
    (line,) = pair_lines(figures)
    assert line.startswith("judge ranking on t (Bradley-Terry log-strength, 95% CI): long +")
    assert line.endswith("; long beats short (sign test, Holm)")
    # Every item's replies are kept, and match the rule.
    lines = [json.loads(x) for x in (tmp_path / "judge_pairs.jsonl").read_text().splitlines()]
    assert len(lines) == 30
    for item in lines:
        a, b = (ANSWERS[item[k]][int(item["id"][1:])] for k in ("arm_a", "arm_b"))
        want = "A" if len(a) > len(b) else "B" if len(a) < len(b) else "tie"
        assert item["replies"][0] == want and item["score_a"] == {"A": 1.0, "B": 0.0, "tie": 0.5}[want]
    # A rerun asks nothing: every reply comes from the judge cache.
    again = judge_arm_pairs(tmp_path, results, spec, TASKS, seed=0, resamples=200)
    assert judge_server.requests - before == 57
    assert [p["cached_replies"] for p in again["pairs"]] == [20, 20, 20]
    assert again["ranking"] == figures["ranking"]


def test_arm_pairs_vs_one_arm_and_the_cost_before_spending(judge_server, tmp_path):
    from harness.eval.judge_pairs import judge_arm_pairs, judge_calls

    spec = JudgeSpec(model="rule", base_url=judge_server.base_url("longer"), mode="pairwise_arms", vs="mixed")
    results = _run_with_answers(tmp_path, {k: ANSWERS[k] for k in ("long", "short", "mixed")})
    figures = judge_arm_pairs(tmp_path, results, spec, TASKS, resamples=0)
    assert [(p["arm_a"], p["arm_b"]) for p in figures["pairs"]] == [("mixed", "long"), ("mixed", "short")]
    assert sum(p["items"] for p in figures["pairs"]) * 2 == judge_calls(spec, {"t": 3}, 10)  # 2 x n x (k-1)
    every = spec.model_copy(update={"vs": None})
    assert judge_calls(every, {"t": 3, "u": 6}, 10) == 2 * 10 * 3 + 2 * 10 * 15  # 2 x n x k(k-1)/2 per task
    assert judge_calls(JudgeSpec(model="m"), {"t": 3}, 10, calibration_items=5) == 3 * 10 + 5
    assert judge_calls(JudgeSpec(model="m", mode="pairwise_reference"), {"t": 3}, 10) == 2 * 10 * 3


def test_arm_pairs_from_a_judge_always_saying_a_are_withheld_everywhere(judge_server, tmp_path):
    from harness.eval.compare import PAIRWISE_STRENGTH, run_statistics, summary_lines
    from harness.eval.judge_pairs import judge_arm_pairs

    spec = JudgeSpec(model="rule", base_url=judge_server.base_url("always_a"), mode="pairwise_arms")
    results = _run_with_answers(tmp_path, {k: ANSWERS[k] for k in ("long", "short", "mixed")})
    for r, rouge in zip(results, (0.9, 0.1, 0.5)):
        r.metrics = {"rougeL": rouge}
    figures = judge_arm_pairs(tmp_path, results, spec, TASKS, resamples=0)
    assert figures["reliability"]["position_consistency"] == 0.0
    assert figures["reliability"]["withheld"].startswith("position consistency 0.00 is below 0.60")
    assert all(p["ties"] == p["judged"] == 10 and p["winner"] is None for p in figures["pairs"])
    found = run_statistics(tmp_path, results, {"bootstrap_resamples": 0}, TASKS)
    assert not any(j["judge_metric"] == PAIRWISE_STRENGTH for j in found["judge_agreement"])
    lines = summary_lines(found)
    assert "judge ranking withheld, not a measurement: position consistency 0.00 is below 0.60" in lines[-1]


def test_arm_pairs_of_a_judge_agreeing_with_the_reference_metric_recover_its_ranking(judge_server, tmp_path):
    from harness.eval.compare import PAIRWISE_STRENGTH, run_statistics

    answers = {f"arm{k}": [f"{'w' * (k + i % 3)}" for i in range(12)] for k in (1, 4, 2, 6)}
    spec = JudgeSpec(model="rule", base_url=judge_server.base_url("longer"), mode="pairwise_arms")
    results = _run_with_answers(tmp_path, answers)
    for r in results:  # the reference metric: answer length, which the /longer/ judge agrees with
        r.metrics = {"rougeL": float(len(answers[r.arm["name"]][0]))}
    from harness.eval.judge_pairs import judge_arm_pairs

    judge_arm_pairs(tmp_path, results, spec, TASKS, resamples=100)
    found = run_statistics(tmp_path, results, {"bootstrap_resamples": 0}, TASKS)
    assert [r["arm"] for r in found["judge_pairwise"]["ranking"]["t"]] == ["arm6", "arm4", "arm2", "arm1"]
    (agreement,) = [j for j in found["judge_agreement"] if j["judge_metric"] == PAIRWISE_STRENGTH]
    assert agreement["reference_metric"] == "rougeL" and agreement["spearman_rho"] == pytest.approx(1.0)


def test_bradley_terry_cis_cover_the_true_strengths_in_a_simulation():
    from harness.eval.judge_pairs import _ranking

    truth = np.array([-1.0, -0.2, 0.3, 0.9])
    truth -= truth.mean()
    names = [f"a{i}" for i in range(4)]
    rng, covered, total, order_right = np.random.default_rng(7), 0, 0, 0
    for sim in range(30):
        outcomes = {}
        for i, j in itertools.combinations(range(4), 2):
            p = 1 / (1 + np.exp(truth[j] - truth[i]))
            found = {f"x{n}": (float(rng.random() < p), True, None, []) for n in range(80)}
            outcomes[("t", names[i], names[j])] = found
        ranking = {r["arm"]: r for r in _ranking("t", outcomes, sim, 200)}
        for i, name in enumerate(names):
            low, high = ranking[name]["strength_ci"]
            covered += low <= truth[i] <= high
            total += 1
        order_right += [r for r in sorted(ranking, key=lambda n: ranking[n]["rank"])] == names[::-1]
    assert covered / total >= 0.85  # nominal 95%; the prior of half a win shrinks a little
    assert order_right >= 20  # the true order, most of the time, from 80 items per pair


def test_calibration_measures_agreement_with_people(judge_server, tmp_path):
    from harness.eval.judge_calibration import calibrate, cohen_kappa

    golden = tmp_path / "golden.jsonl"
    # People prefer the longer answer on 6 items and the shorter on 2: the /longer/ judge agrees on 6.
    rows = [{"question": "q", "answer_a": "long answer", "answer_b": "s", "preference": "A"}] * 3
    rows += [{"question": "q", "answer_a": "s", "answer_b": "long answer", "preference": "B"}] * 3
    rows += [{"question": "q", "answer_a": "long answer", "answer_b": "s", "preference": "B"}] * 2
    golden.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = JudgeSpec(model="rule", base_url=judge_server.base_url("longer"), mode="pairwise_arms")
    found = calibrate(spec, golden, resamples=200)
    assert (found["items"], found["failed"], found["accuracy"]) == (8, 0, 0.75)
    # judge A,A,A,B,B,B,A,A vs people A,A,A,B,B,B,B,B: p_o .75, p_e .625*.375 + .375*.625 = .46875
    assert found["kappa"] == pytest.approx((0.75 - 0.46875) / (1 - 0.46875), abs=1e-6)
    assert found["kappa_ci"][0] <= found["kappa"] <= found["kappa_ci"][1]
    assert cohen_kappa(np.array(["A", "A"]), np.array(["A", "A"])) is None
    golden.write_text('{"question": "q", "answer_a": "x"}\n')
    with pytest.raises(Exception, match="line 1 lacks answer_a, answer_b, preference"):
        calibrate(spec, golden)


@pytest.mark.slow
def test_pairwise_arms_end_to_end_in_plan_results_report_console_and_mlflow(
    write_experiment, tmp_path, tiny_models, judge_server
):
    import mlflow
    from typer.testing import CliRunner

    from harness.cli.main import app
    from tests.test_eval_run import to_generation
    from tests.test_runner import results_of, run_cli

    golden = tmp_path / "golden.jsonl"
    golden.write_text(json.dumps({"question": "q", "answer_a": "long", "answer_b": "s", "preference": "A"}) + "\n")
    judge = {
        "model": "rule",
        "base_url": judge_server.base_url("longer"),
        "mode": "pairwise_arms",
        "calibration": str(golden),
    }
    path = write_experiment(
        [
            {"method": "zero_shot", "model": "llama"},
            {"method": "few_shot", "model": "llama", "params": {"k": 1}},
            {"method": "few_shot", "model": "llama", "params": {"k": 2}},
        ],
        budget={
            "bertscore_model": None,
            "embedding_model": None,
            "forgetting_text": None,
            "max_new_tokens": 4,
            "eval_examples": 8,
            "bootstrap_resamples": 50,
            "judge": judge,
        },
        edit=to_generation,
    )
    planned = CliRunner().invoke(app, ["plan", str(path)], env={"COLUMNS": "250", "HF_HUB_OFFLINE": "1"})
    assert "judge (pairwise_arms): at most 50 judge calls (2 orders x n items x k(k-1)/2 pairs" in planned.output
    result = run_cli(path, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run_dir, results = results_of(tmp_path)
    assert all("judge_score" not in a["metrics"] for a in results["arms"])  # no per-arm judging in this mode
    pairwise = results["judge_pairwise"]
    assert len(pairwise["pairs"]) == 3 and all(p["judged"] + p["failed"] == p["items"] == 8 for p in pairwise["pairs"])
    ranked = {r["arm"]: r["strength"] for r in next(iter(pairwise["ranking"].values()))}
    for arm in results["arms"]:  # the strength is an arm metric of results.json, with its CI
        assert arm["metrics"]["judge_pairwise_strength"] == ranked[arm["arm"]["name"]]
        assert "judge_pairwise_strength" in arm["ci"]
    assert results["judge_calibration"]["accuracy"] == 1.0
    assert "judge ranking on" in result.output and "judge calibration on 1 human-labelled items" in result.output
    page = (run_dir / "index.html").read_text()
    assert "arm against arm" in page and "Judge against people" in page
    client = mlflow.MlflowClient()
    parent = next(
        r
        for r in client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
        if not r.data.tags.get("arm.hash")
    )
    assert parent.data.metrics["judge.withheld"] == 0.0 and parent.data.metrics["judge.calibration.accuracy"] == 1.0
    assert sum(k.startswith("judge.strength.") and k.count(".") == 3 for k in parent.data.metrics) == 3
    with open(client.download_artifacts(parent.info.run_id, "judge_pairs.json", str(tmp_path)), encoding="utf-8") as fh:
        table = json.load(fh)
    assert len(table["data"]) == 3 and table["columns"][:3] == ["task", "arm_a", "arm_b"]


def test_validate_names_a_missing_calibration_set(write_experiment, tmp_path):
    from typer.testing import CliRunner

    from harness.cli.main import app
    from tests.test_eval_run import to_generation

    judge = {"model": "rule", "base_url": "http://127.0.0.1:9/v1", "calibration": "people.jsonl"}
    path = write_experiment([{"method": "zero_shot", "model": "llama"}], budget={"judge": judge}, edit=to_generation)
    result = CliRunner().invoke(app, ["validate", str(path)], env={"COLUMNS": "250"})
    assert result.exit_code == 2 and "judge calibration set not found: people.jsonl" in result.output
    assert "budget.judge.calibration" in result.output


def test_a_pairwise_arms_judge_or_a_run_level_key_reruns_no_arm(write_experiment):
    from harness.planning.experiment_loader import load_experiment
    from harness.planning.plan import plan
    from tests.test_eval_run import to_generation

    def hashes(judge):
        budget = {"judge": judge} if judge else {}
        arms = [{"method": "zero_shot", "model": "llama"}]
        return [a.hash for a in plan(load_experiment(write_experiment(arms, budget=budget, edit=to_generation)))]

    grade = {"model": "m", "base_url": "http://127.0.0.1:9/v1"}
    assert hashes(None) == hashes({**grade, "mode": "pairwise_arms", "vs": "x", "calibration": None})
    assert hashes(grade) == hashes({**grade, "concurrency": 9, "max_response_bytes": 1_000_000})
    assert hashes(None) != hashes(grade) != hashes({**grade, "reliability": {"max_failure_rate": 0.5}})


def test_the_report_greys_a_withheld_judge_with_its_reason_and_shows_a_sound_ranking(tmp_path):
    from harness.report.html import render
    from tests.test_report_html import arm, make_run, results_of

    arms = [arm("lora-bert", 0.0, 20.0), arm("full-bert", 0.0, 5.0)]
    for a, rouge in zip(arms, (0.31, 0.42)):
        del a["metrics"]["accuracy"], a["metrics"]["macro_f1"]
        a["metrics"].update(rouge1=rouge, judge_failed_items=8)
    reason = "8 of 8 items failed (more than 20%)"
    arms[0]["metrics_detail"] = {"judge": {"withheld": {"metric": "judge_score", "value": 7.0, "reason": reason}}}
    pair = {"task": "sentiment", "arm_a": "lora-bert", "arm_b": "<b>full</b>", "a_wins": 3, "b_wins": 1, "ties": 0}
    pair |= {"failed": 0, "win_rate_a": 0.75, "win_rate_a_ci": [0.5, 1.0], "position_consistency": 0.5}
    pair |= {"p_adjusted": 0.6, "winner": None}
    ranking = [{"arm": "lora-bert", "rank": 1, "strength": 0.55, "strength_ci": [-0.1, 1.2]}]
    reliability = {
        "items": 4,
        "failed": 0,
        "position_consistency": 0.5,
        "withheld": "position consistency 0.50 is below 0.60",
    }
    run_dir = make_run(
        tmp_path,
        arms,
        task_type="generation",
        judge_pairwise={"pairs": [pair], "ranking": {"sentiment": ranking}, "reliability": reliability},
    )
    page = render(run_dir, results_of(run_dir))
    assert f"withheld, not a measurement: {reason}" in page and "<s>judge_score of lora-bert: 7.000</s>" in page
    assert '<div class="judge-pairs" style="opacity:.5">' in page
    assert "Withheld, not a measurement:</b> position consistency 0.50 is below 0.60" in page
    assert "&lt;b&gt;full&lt;/b&gt;" in page and "<b>full</b>" not in page  # arm names are text
    reliability["withheld"] = None
    (run_dir / "results.json").write_text(
        json.dumps(
            results_of(run_dir)
            | {"judge_pairwise": {"pairs": [pair], "ranking": {"sentiment": ranking}, "reliability": reliability}}
        )
    )
    page = render(run_dir, results_of(run_dir))
    assert '<div class="judge-pairs">' in page and "<td>+0.55</td>" in page and "[-0.10, +1.20]" in page
    assert "0.750 [0.500, 1.000]" in page
