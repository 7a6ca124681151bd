"""The judge against people (`budget.judge.calibration`): before the judge grades the arms, its
verdicts on a golden set that people labelled, asked exactly as the arms are asked (both orders for
the pairwise modes), and its agreement with them: accuracy and Cohen's kappa (agreement beyond
what two raters with the same label frequencies reach by chance), each with a bootstrap CI over
the golden items. Run by harness.eval.judge_pairs.run_step; results.json → judge_calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.errors import HarnessError
from harness.eval import stats
from harness.eval.judge import Asker, both_orders, failure_of, make_judge, parse_grade


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file ([] when there is none): the calibration set."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def calibrate(spec, path: Path, *, base_dir=None, seed=0, resamples=1000) -> dict:
    """The judge's agreement with human labels on a golden set (.jsonl): for grade, rows
    {question, answer, reference?, grade}; for the pairwise modes, {question, answer_a, answer_b,
    preference: A | B | tie}. Accuracy and Cohen's kappa, each with a bootstrap CI over items."""
    try:
        rows = read_jsonl(path)
    except (OSError, ValueError) as err:
        raise HarnessError(
            f"budget.judge.calibration: {path} is not readable JSON lines ({type(err).__name__}); "
            "give a .jsonl file with one labelled item per line"
        ) from err
    need = ("answer", "grade") if spec.mode == "grade" else ("answer_a", "answer_b", "preference")
    bad = next((i for i, r in enumerate(rows, 1) if not isinstance(r, dict) or any(k not in r for k in need)), None)
    if not rows or bad is not None:
        raise HarnessError(
            f"budget.judge.calibration: {path} line {bad or 1} lacks {', '.join(need)}; "
            f"every line of a {spec.mode} golden set needs them"
        )
    asker = Asker(make_judge(spec, base_dir))

    def label(row: dict):
        question = str(row.get("question", ""))
        if spec.mode == "grade":
            prompt = spec.rubric.format(question=question, answer=row["answer"], reference=row.get("reference", ""))
            reply = asker.ask(prompt)
            return parse_grade(reply.text), failure_of([reply], parse_grade(reply.text))
        score, replies, _ = both_orders(asker, spec, question, str(row["answer_a"]), str(row["answer_b"]))
        return ({1.0: "A", 0.0: "B", 0.5: "tie"}.get(score), failure_of(replies, score))

    judged = asker.map(label, rows)
    human = [str(r["grade"] if spec.mode == "grade" else r["preference"]).strip() for r in rows]
    pairs = [(h, str(j)) for h, (j, _) in zip(human, judged) if j is not None]
    failures: dict[str, int] = {}
    for _, failure in judged:
        if failure:
            failures[failure] = failures.get(failure, 0) + 1
    out = {"file": str(path), "mode": spec.mode, "items": len(rows), "failed": len(rows) - len(pairs)}
    out["failures"] = failures
    if not pairs:
        return out | {"accuracy": None, "kappa": None}
    a, b = (np.array(x) for x in zip(*pairs))
    out["accuracy"] = round(float((a == b).mean()), 6)
    out["kappa"] = cohen_kappa(a, b)
    rng = np.random.default_rng(seed)
    if resamples > 0 and len(a) > 1:
        draws = [rng.integers(0, len(a), len(a)) for _ in range(resamples)]
        for key, fn in (("accuracy", lambda x, y: float((x == y).mean())), ("kappa", cohen_kappa)):
            values = [v for v in (fn(a[d], b[d]) for d in draws) if v is not None]
            if values:
                low, high = np.percentile(values, [100 * stats.ALPHA / 2, 100 * (1 - stats.ALPHA / 2)])
                out[f"{key}_ci"] = [round(float(low), 4), round(float(high), 4)]
    return out


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float | None:
    """Cohen's kappa of two label vectors: (observed - chance agreement) / (1 - chance); None when
    chance agreement is 1 (both gave one label only)."""
    observed = float((a == b).mean())
    labels = set(a) | set(b)
    chance = sum(float((a == x).mean()) * float((b == x).mean()) for x in labels)
    return None if chance >= 1 else round((observed - chance) / (1 - chance), 6)
