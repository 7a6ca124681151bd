"""Run-level statistics, written into results.json: pairwise comparisons of arms on the same
test items (McNemar's exact test for correctness, paired bootstrap for per-item scores) and the
mean/std over seeds of arms run once per seed."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from harness.eval import metrics, stats
from harness.naming import base_name


def _item_scores(arm_dir: Path) -> dict[str, dict]:
    path = arm_dir / "predictions.jsonl"
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out[str(row["id"])] = row.get("scores") or {}
    return out


def comparisons(run_dir: Path, results: list, *, resamples: int = stats.DEFAULT_RESAMPLES, seed: int = 0) -> list[dict]:
    """Every pair of ok arms on the same task and seed, on every metric that declares a paired test."""
    ok = [r for r in results if r.status == "ok"]
    scores = {r.arm["name"]: _item_scores(Path(run_dir) / "arms" / r.arm["slug"]) for r in ok}
    out = []
    for a, b in itertools.combinations(ok, 2):
        if a.arm.get("task_key") != b.arm.get("task_key") or a.arm.get("seed") != b.arm.get("seed"):
            continue
        sa, sb = scores[a.arm["name"]], scores[b.arm["name"]]
        ids = sorted(set(sa) & set(sb))
        if len(ids) < 2:
            continue
        for name, metric in metrics.METRICS.items():
            # Items scored in both arms: all of them, except where a judge could not score an item.
            both = [i for i in ids if name in sa[i] and name in sb[i]]
            if not metric.paired_test or len(both) < 2:
                continue
            out.append(stats.compare(name, metric.paired_test, a.arm["name"], [sa[i][name] for i in both],
                                     b.arm["name"], [sb[i][name] for i in both],
                                     higher_is_better=metric.higher_is_better, resamples=resamples, seed=seed))
    return out


def seed_summary(results: list) -> list[dict]:
    """Arms that ran under several seeds: mean, std and each seed's value of every metric."""
    groups: dict[str, list] = {}
    for r in results:
        if r.status == "ok":
            groups.setdefault(base_name(r.arm["name"]), []).append((r.arm.get("seed"), r.metrics))
    groups = {k: sorted(v, key=lambda x: (x[0] is None, x[0])) for k, v in groups.items() if len(v) > 1}
    names = [n for n in metrics.METRICS if any(n in m for runs in groups.values() for _, m in runs)]
    return stats.seed_summary(groups, names)


def run_statistics(run_dir: Path, results: list, budget: dict) -> dict:
    """What write_run_results adds to results.json."""
    resamples = int(budget.get("bootstrap_resamples", stats.DEFAULT_RESAMPLES))
    return {"comparisons": comparisons(run_dir, results, resamples=resamples, seed=int(budget.get("seed", 0))),
            "seed_summary": seed_summary(results), "alpha": stats.ALPHA, "metric_info": metrics.describe(),
            "judge_agreement": judge_agreement(results)}


JUDGE_METRICS, REFERENCE_METRICS = ("judge_score", "judge_win_rate"), ("rougeL", "bertscore_f1", "embedding_cosine")


def judge_agreement(results: list) -> list[dict]:
    """Does the judge rank the arms of a task like the reference metrics do? Spearman's rho
    across the ok arms (three or more) of each task, judge metric against each reference metric."""
    from scipy.stats import spearmanr

    by_task: dict[str, list] = {}
    for r in results:
        if r.status == "ok":
            by_task.setdefault(r.arm.get("task_key"), []).append(r.metrics)
    out = []
    for task, rows in by_task.items():
        for judge, reference in itertools.product(JUDGE_METRICS, REFERENCE_METRICS):
            pairs = [(m[judge], m[reference]) for m in rows if m.get(judge) is not None and m.get(reference) is not None]
            if len(pairs) < 3:
                continue
            rho, p = spearmanr(*zip(*pairs))
            out.append({"task": task, "judge_metric": judge, "reference_metric": reference, "arms": len(pairs),
                        "spearman_rho": None if rho != rho else round(float(rho), 6),
                        "p_value": None if p != p else round(float(p), 6)})
    return out


def _p_text(p: float) -> str:
    # results.json rounds p to 6 decimals: a 0 there means smaller than that, never zero.
    return "< 1e-06" if p == 0 else f"= {p:.3g}"


def summary_lines(results: dict) -> list[str]:
    """Plain sentences for the console: significant differences, and the spread over seeds."""
    lines = []
    for c in results.get("comparisons", []):
        if c.get("significant") and c.get("better"):
            worse = c["b"] if c["better"] == c["a"] else c["a"]
            lines.append(f"{c['better']} beats {worse} on {c['metric']} "
                         f"(by {abs(c['difference']):.3f}, p {_p_text(c['p_value'])}, {c.get('test', '')})")
    tested = len(results.get("comparisons", []))
    if tested and not lines:
        lines.append(f"no significant difference at p < {results.get('alpha', stats.ALPHA)} in {tested} paired test(s)")
    for entry in results.get("seed_summary", []):
        parts = [f"{m} {v['mean']:.3f} ± {v['std']:.3f}" for m, v in entry["metrics"].items()
                 if m in metrics.METRICS and metrics.METRICS[m].kind == "quality"]
        if parts:
            lines.append(f"{entry['arm']} over seeds {entry['seeds']}: " + ", ".join(parts))
    return lines
