"""When is an LLM judge's number a measurement? A judge that failed on many items, or that gives
the same answer whichever position an answer is shown in no more often than a coin would, yields
a number that looks like a result and is not one. Its metric is then withheld: left out of the
arm's metrics (so out of the results table, the headline and the paired tests) and kept in
metrics_detail.judge.withheld with its value and the reason, which the report shows greyed and
the console says in one line. The thresholds are budget.judge.reliability (defaults argued in
docs/judge.md)."""

from __future__ import annotations

JUDGE_METRIC = {"grade": "judge_score", "pairwise_reference": "judge_win_rate"}


def unreliable(items: int, failed: int, consistency: float | None, rules) -> str | None:
    """Why these judgements are not a measurement, or None when they pass the rules."""
    if items and failed / items > rules.max_failure_rate:
        return f"{failed} of {items} items failed (more than {rules.max_failure_rate:.0%})"
    if consistency is not None and consistency < rules.min_position_consistency:
        return (
            f"position consistency {consistency:.2f} is below {rules.min_position_consistency:.2f} "
            "(a judge answering by coin gets 0.5)"
        )
    return None


def gate_arm(values: dict, ci: dict, rows: list[dict], detail: dict, spec) -> None:
    """Withhold the arm's judge metric in place when its judgements fail the reliability rules;
    record the reliability figures either way."""
    name = JUDGE_METRIC.get(spec.mode)
    items, failed = detail["items"], detail["failed"]
    consistency = values.get("judge_position_consistency")
    detail["reliability"] = {
        "failure_rate": round(failed / items, 6) if items else None,
        "position_consistency": consistency,
        "score_spread": detail.get("score_spread"),
        "rules": spec.reliability.model_dump(),
    }
    reason = unreliable(items, failed, consistency, spec.reliability)
    if name is None or reason is None:
        return
    detail["withheld"] = {"metric": name, "value": values.pop(name, None), "reason": reason}
    ci.pop(name, None)
    for row in rows:
        (row.get("scores") or {}).pop(name, None)


def console_lines(results: dict) -> list[str]:
    """At most two lines: the arms whose judge items failed (by failure class), and the judge
    metrics withheld; then the arm-against-arm lines (harness.eval.judge_pairs)."""
    failed, withheld = [], []
    for arm in results.get("arms") or []:
        detail = (arm.get("metrics_detail") or {}).get("judge")
        if not detail:
            continue
        name = arm["arm"].get("name")
        if detail.get("failed"):
            classes = ", ".join(f"{k} {v}" for k, v in sorted(detail.get("failures", {}).items()))
            failed.append(f"{name} {detail['failed']} of {detail['items']} ({classes})")
        if detail.get("withheld"):
            withheld.append(f"{detail['withheld']['metric']} of {name} ({detail['withheld']['reason']})")
    lines = []
    if failed:
        lines.append("judge: items failed: " + "; ".join(failed))
    if withheld:
        lines.append("judge metric withheld, not a measurement: " + "; ".join(withheld))
    return lines + pair_lines(results.get("judge_pairwise") or {}) + calibration_lines(results)


def calibration_lines(results: dict) -> list[str]:
    found = results.get("judge_calibration")
    if not found:
        return []
    if found.get("error"):
        return [f"judge calibration not done: {found['error']}"]
    kappa, ci = found.get("kappa"), found.get("kappa_ci")
    interval = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
    return [
        f"judge calibration on {found['items']} human-labelled items: accuracy {found['accuracy']:.2f}, "
        f"Cohen's kappa {'undefined' if kappa is None else f'{kappa:.2f}'}{interval}, {found['failed']} failed"
        if found.get("accuracy") is not None
        else f"judge calibration: every one of {found['items']} items failed"
    ]


def pair_lines(pairwise: dict) -> list[str]:
    """The console's lines on the arm-against-arm verdicts: the ranking per task, or why withheld."""
    if not pairwise:
        return []
    if pairwise.get("error"):
        return [f"judge, arm against arm: not done ({pairwise['error']})"]
    reliability, lines = pairwise.get("reliability") or {}, []
    if reliability.get("failed"):
        classes: dict[str, int] = {}
        for p in pairwise.get("pairs") or []:
            for name, count in p["failures"].items():
                classes[name] = classes.get(name, 0) + count
        found = ", ".join(f"{k} {v}" for k, v in sorted(classes.items()))
        lines.append(
            f"judge, arm against arm: {reliability['failed']} of {reliability['items']} items failed ({found})"
        )
    if reliability.get("withheld"):
        return lines + [f"judge ranking withheld, not a measurement: {reliability['withheld']}"]
    for task, ranking in (pairwise.get("ranking") or {}).items():
        if not ranking:
            lines.append(f"judge, arm against arm on {task}: no item judged")
            continue
        parts = [
            f"{r['arm']} {r['strength']:+.2f}"
            + (f" [{r['strength_ci'][0]:+.2f}, {r['strength_ci'][1]:+.2f}]" if r["strength_ci"] else "")
            for r in ranking
        ]
        winners = [
            f"{p['winner']} beats {p['arm_b'] if p['winner'] == p['arm_a'] else p['arm_a']}"
            for p in pairwise.get("pairs") or []
            if p["task"] == task and p.get("winner")
        ]
        lines.append(
            f"judge ranking on {task} (Bradley-Terry log-strength, 95% CI): "
            + ", ".join(parts)
            + ("; " + ", ".join(winners) + " (sign test, Holm)" if winners else "; no pair differs (sign test, Holm)")
        )
    return lines
