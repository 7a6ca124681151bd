"""LLM-as-a-judge, arm against arm (`budget.judge.mode: pairwise_arms`), and the judge's
run-level steps (this, and its calibration against people: harness.eval.judge_calibration).

Arm against arm: once every arm has finished, the judge compares the answers of each pair of ok
arms of a generation task (every pair, or each arm with `vs`) on their common test items, in both
orders (harness.eval.judge.both_orders: a judge contradicting itself across the orders is a tie).
Per pair: wins, losses, ties, failed items by class, the first arm's win rate with a bootstrap CI,
a two-sided sign test on the decided items (Holm-corrected over the task's pairs) and the
position-consistency rate. Per task: a Bradley-Terry strength per arm (log scale, mean 0) fitted
to all pairs' outcomes, with percentile CIs from resampling the test items. The whole of it is
withheld (kept, greyed, with the reason) when the judge fails the reliability rules
(harness.eval.judge_reliability).

Run-level because it needs two arms' answers: the driver calls `run_step` and it writes
`judge_pairs.json` (figures), `judge_pairs.jsonl` (both replies per item) and
`judge_calibration.json` in the run folder; results.json reads them (`run_results`). Replies come
from the judge's cache, so a rerun, or a rerun with one more arm, asks only what is new."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np

from harness.errors import HarnessError
from harness.eval import stats
from harness.eval.judge import Asker, both_orders, failure_of, make_judge
from harness.eval.judge_reliability import unreliable
from harness.paths import atomic_write_text
from harness.results.arm_folder import PREDICTIONS, read_predictions

FIGURES, ITEMS, CALIBRATION = "judge_pairs.json", "judge_pairs.jsonl", "judge_calibration.json"
STRENGTH = "judge_pairwise_strength"  # the arm metric it adds


# ------------------------------------------------------------------ what it costs


def pairs_of(names: list[str], vs: str | None) -> list[tuple[str, str]]:
    """Every pair of arms, or each arm against `vs` (vs first)."""
    if vs is None:
        return list(itertools.combinations(names, 2))
    return [(vs, name) for name in names if name != vs] if vs in names else []


def judge_calls(spec, arms_per_task: dict[str, int], items: int, calibration_items: int = 0) -> int:
    """Requests the judge is asked at most (a cached reply costs none): per task with k arms and n
    items, grade n*k, pairwise_reference 2*n*k, pairwise_arms 2*n*k(k-1)/2 (vs: 2*n*(k-1)),
    plus the calibration set (1 per item for grade, 2 for the pairwise modes)."""
    per = 1 if spec.mode == "grade" else 2
    calls = calibration_items * per
    for k in arms_per_task.values():
        if spec.mode == "pairwise_arms":
            calls += 2 * items * ((k - 1) if spec.vs else k * (k - 1) // 2)
        else:
            calls += per * items * k
    return calls


# ------------------------------------------------------------------ the run-level steps


def run_step(step: str, run_dir: Path, results: list, spec, tasks: dict, *, base_dir=None, seed=0, resamples=1000):
    """`calibration` (before the arms) or `pairs` (after them). Returns a console line or None;
    a failure is written to the step's file and returned as a line, never raised: the arms stand."""
    path = Path(run_dir) / (CALIBRATION if step == "calibration" else FIGURES)
    if (step == "calibration" and not spec.calibration) or (step == "pairs" and spec.mode != "pairwise_arms"):
        return None
    try:
        if step == "calibration":
            from harness.eval.judge_calibration import calibrate

            golden = Path(base_dir or ".") / spec.calibration  # relative to the experiment file, like golden sets
            found = calibrate(spec, golden, base_dir=base_dir, seed=seed, resamples=resamples)
            atomic_write_text(path, json.dumps(found, indent=2))
            from harness.eval.judge_reliability import calibration_lines

            return calibration_lines({"judge_calibration": found})[0]
        judge_arm_pairs(run_dir, results, spec, tasks, base_dir=base_dir, seed=seed, resamples=resamples)
        return None  # the pairs' lines come with the run's summary
    except Exception as err:  # noqa: BLE001 - a judge that cannot load must not cost the arms
        error = str(err) if isinstance(err, HarnessError) else f"{type(err).__name__}: {err}"
        atomic_write_text(path, json.dumps({"error": error}))
        return f"judge {step} not done: {error}"


def run_results(run_dir: Path) -> dict:
    """What results.json records of the run-level steps."""
    out = {}
    for key, name in (("judge_pairwise", FIGURES), ("judge_calibration", CALIBRATION)):
        path = Path(run_dir) / name
        if path.is_file():
            out[key] = json.loads(path.read_text(encoding="utf-8"))
    return out


# ------------------------------------------------------------------ arm against arm


def _answers(arm_dir: Path) -> dict[str, dict]:
    return {str(r["id"]): r for r in read_predictions(arm_dir / PREDICTIONS)}


def judge_arm_pairs(run_dir: Path, results: list, spec, tasks: dict, *, base_dir=None, seed=0, resamples=1000) -> dict:
    """Judge the pairs of ok arms of each generation task; write and return the figures. A failed
    reply is counted by class, never raised."""
    run_dir = Path(run_dir)
    jobs, pair_ids = [], {}  # (task, a, b, item id, answers of a, answers of b)
    for task_key, arms in _generation_arms(results, tasks).items():
        answers = {r.arm["name"]: _answers(run_dir / "arms" / r.arm["slug"]) for r in arms}
        if spec.vs is not None and spec.vs not in answers:
            raise HarnessError(
                f"budget.judge.vs: {spec.vs!r} is not an ok arm of task {task_key} (its ok arms: "
                f"{', '.join(answers)}); name one of them, or drop vs to judge every pair"
            )
        for a, b in pairs_of(list(answers), spec.vs):
            ids = sorted(set(answers[a]) & set(answers[b]))
            pair_ids[(task_key, a, b)] = ids
            jobs += [(task_key, a, b, i, answers[a][i], answers[b][i]) for i in ids]
    asker = Asker(make_judge(spec, base_dir)) if jobs else None
    start = time.perf_counter()

    def judge_one(job):
        task_key, _, _, _, row_a, row_b = job
        instruction = (tasks.get(task_key) or {}).get("instruction")
        question = "\n".join(x for x in (instruction, row_a.get("input")) if x)
        return both_orders(asker, spec, question, row_a["prediction"], row_b["prediction"])

    done = asker.map(judge_one, jobs) if jobs else []
    outcomes: dict[tuple, dict[str, tuple]] = {key: {} for key in pair_ids}
    lines = []
    for (task_key, a, b, item, _, _), (score, replies, agreed) in zip(jobs, done):
        outcomes[(task_key, a, b)][item] = (score, agreed, failure_of(replies, score), replies)
        lines.append(
            json.dumps(
                {"task": task_key, "arm_a": a, "arm_b": b, "id": item, "score_a": score}
                | {"replies": [r.text for r in replies], "error": failure_of(replies, score)}
            )
        )
    pairs = [
        _pair_figures(key, found, seed=seed, resamples=resamples) | {"items": len(pair_ids[key])}
        for key, found in outcomes.items()
    ]
    _correct(pairs)
    figures = {
        "judge": asker.judge.identity if asker else None,
        "vs": spec.vs,
        "judge_seconds": round(time.perf_counter() - start, 3),
        "pairs": pairs,
        "arms": _arm_win_rates(pairs),
        "ranking": {
            task: _ranking(task, {k: v for k, v in outcomes.items() if k[0] == task}, seed, resamples)
            for task in dict.fromkeys(k[0] for k in outcomes)
        },
    }
    figures["reliability"] = _reliability(pairs, spec)
    if figures["reliability"]["withheld"]:
        for p in pairs:
            p["winner"], p["significant"] = None, False
    _add_strengths(results, figures)
    atomic_write_text(run_dir / FIGURES, json.dumps(figures, indent=2))
    atomic_write_text(run_dir / ITEMS, "".join(line + "\n" for line in lines))
    return figures


def _add_strengths(results: list, figures: dict) -> None:
    """Each ranked arm's strength becomes a metric of the arm in results.json (the table, the
    exports and the agreement with reference metrics read it there), unless withheld."""
    ranked = {(t, r["arm"]): r for t, ranking in figures["ranking"].items() for r in ranking}
    for result in results:
        found = ranked.get((result.arm.get("task_key"), result.arm.get("name")))
        result.metrics.pop(STRENGTH, None)
        if hasattr(result, "ci"):
            result.ci.pop(STRENGTH, None)
        if found is None or figures["reliability"]["withheld"]:
            continue
        result.metrics[STRENGTH] = found["strength"]
        if found["strength_ci"] and hasattr(result, "ci"):
            result.ci[STRENGTH] = found["strength_ci"]


def _generation_arms(results: list, tasks: dict) -> dict[str, list]:
    by_task: dict[str, list] = {}
    for r in results:
        task = tasks.get(r.arm.get("task_key")) or {}
        if r.status == "ok" and task.get("type") == "generation":
            by_task.setdefault(r.arm["task_key"], []).append(r)
    return by_task


def _pair_figures(key: tuple, found: dict, *, seed: int, resamples: int) -> dict:
    from scipy.stats import binomtest

    task, a, b = key
    scores = [s for s, _, _, _ in found.values() if s is not None]
    agreed = [g for _, g, _, _ in found.values() if g is not None]
    failures: dict[str, int] = {}
    for score, _, failure, replies in found.values():
        if score is None:
            failures[failure] = failures.get(failure, 0) + 1
    wins, losses = scores.count(1.0), scores.count(0.0)
    table = np.asarray(scores, dtype=float).reshape(-1, 1)
    return {
        "task": task,
        "arm_a": a,
        "arm_b": b,
        "judged": len(scores),
        "a_wins": wins,
        "b_wins": losses,
        "ties": len(scores) - wins - losses,
        "failed": sum(failures.values()),
        "failures": failures,
        "win_rate_a": round(float(table.mean()), 6) if scores else None,
        "win_rate_a_ci": stats.bootstrap_ci(table, resamples=resamples, seed=seed) if scores else None,
        "position_consistency": round(sum(agreed) / len(agreed), 6) if agreed else None,
        # Sign test: with no real difference, each decided item is a coin flip.
        "p_value": round(float(binomtest(wins, wins + losses).pvalue), 6) if wins + losses else None,
        "p_adjusted": None,
        "significant": False,
        "winner": None,
        "judge_tokens": sum(r.tokens for _, _, _, replies in found.values() for r in replies),
        "cached_replies": sum(r.cached for _, _, _, replies in found.values() for r in replies),
    }


def _correct(pairs: list[dict]) -> None:
    """Holm over the pairs of each task (the family: every pair the judge compared on it)."""
    for task in {p["task"] for p in pairs}:
        family = [p for p in pairs if p["task"] == task and p["p_value"] is not None]
        for p, adjusted in zip(family, stats.adjust_p_values([p["p_value"] for p in family], "holm")):
            p["p_adjusted"] = round(adjusted, 6)
            p["significant"] = adjusted < stats.ALPHA
            p["winner"] = (p["arm_a"] if p["a_wins"] > p["b_wins"] else p["arm_b"]) if p["significant"] else None


def _arm_win_rates(pairs: list[dict]) -> list[dict]:
    """Each arm's share of won items (ties half) over all its pairings on a task."""
    totals: dict[tuple, list[float]] = {}
    for p in pairs:
        if not p["judged"]:
            continue
        for name, rate in ((p["arm_a"], p["win_rate_a"]), (p["arm_b"], 1 - p["win_rate_a"])):
            entry = totals.setdefault((p["task"], name), [0.0, 0])
            entry[0] += rate * p["judged"]
            entry[1] += p["judged"]
    return [
        {"task": task, "arm": name, "win_rate": round(won / judged, 6), "judged": judged}
        for (task, name), (won, judged) in totals.items()
    ]


def _reliability(pairs: list[dict], spec) -> dict:
    items = sum(p["items"] for p in pairs)
    failed = sum(p["failed"] for p in pairs)
    judged = sum(p["judged"] for p in pairs)
    consistent = sum((p["position_consistency"] or 0) * p["judged"] for p in pairs)
    consistency = round(consistent / judged, 6) if judged else None
    return {
        "items": items,
        "failed": failed,
        "failure_rate": round(failed / items, 6) if items else None,
        "position_consistency": consistency,
        "withheld": unreliable(items, failed, consistency, spec.reliability),
        "rules": spec.reliability.model_dump(),
    }


# ------------------------------------------------------------------ Bradley-Terry


def bradley_terry(wins: np.ndarray, prior: float = 0.5, steps: int = 500) -> np.ndarray:
    """Log-strengths (mean 0) maximising the Bradley-Terry likelihood of `wins[i, j]` (how often i
    beat j; a tie counts half to each), by the minorise-maximise updates of Hunter (2004).
    `prior` virtual wins each way for every compared pair keep an arm that won every item finite."""
    compared = (wins + wins.T) > 0
    w = wins + prior * compared
    games = w + w.T
    strength = np.ones(len(wins))
    for _ in range(steps):
        denominator = (games / (strength[:, None] + strength[None, :])).sum(1)
        updated = np.where(denominator > 0, w.sum(1) / np.where(denominator > 0, denominator, 1), strength)
        updated /= np.exp(np.log(updated).mean())
        if np.allclose(updated, strength, rtol=1e-10, atol=1e-12):
            strength = updated
            break
        strength = updated
    return np.log(strength)


def _ranking(task: str, outcomes: dict[tuple, dict], seed: int, resamples: int) -> list[dict]:
    """Bradley-Terry log-strength per arm of a task, with 95% percentile CIs from resampling the
    test items (every pair's outcome on a resampled item goes with it)."""
    names = list(dict.fromkeys(name for (_, a, b) in outcomes for name in (a, b)))
    index = {n: i for i, n in enumerate(names)}
    items = sorted({i for found in outcomes.values() for i in found})
    row = {item: k for k, item in enumerate(items)}
    wins = np.zeros((len(items), len(names), len(names)))  # per item: how often i beat j (ties half)
    for (_, a, b), found in outcomes.items():
        for item, (score, *_rest) in found.items():
            if score is not None:
                wins[row[item], index[a], index[b]] += score
                wins[row[item], index[b], index[a]] += 1 - score
    if not wins.any():
        return []
    point = bradley_terry(wins.sum(0))
    intervals = [None] * len(names)
    if resamples > 0 and len(items) > 1:
        rng = np.random.default_rng(seed)
        draws = np.array(
            [bradley_terry(wins[rng.integers(0, len(items), len(items))].sum(0)) for _ in range(resamples)]
        )
        low, high = np.percentile(draws, [100 * stats.ALPHA / 2, 100 * (1 - stats.ALPHA / 2)], axis=0)
        intervals = [[round(float(lo), 4), round(float(hi), 4)] for lo, hi in zip(low, high)]
    order = np.argsort(-point, kind="stable")
    return [
        {"arm": names[i], "rank": rank + 1, "strength": round(float(point[i]), 4), "strength_ci": intervals[i]}
        for rank, i in enumerate(order)
    ]


# ------------------------------------------------------------------ words
