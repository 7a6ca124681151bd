"""The LLM judge's part of a task's report section: judge metrics withheld as unreliable (greyed,
with the reason), the arm-against-arm ranking and pairwise win rates, and the calibration
against people. Kept apart from view.py so the judge's display changes without touching the
rest of the report (rendered by templates/judge.html.j2)."""

from __future__ import annotations


def for_task(results: dict, task: str, arms: list[dict]) -> dict | None:
    withheld = [
        {"arm": a["arm"]["name"], **a["metrics_detail"]["judge"]["withheld"]}
        for a in arms
        if ((a.get("metrics_detail") or {}).get("judge") or {}).get("withheld")
    ]
    pairwise = results.get("judge_pairwise") or {}
    ranking = (pairwise.get("ranking") or {}).get(task) or []
    pairs = [p for p in pairwise.get("pairs") or [] if p["task"] == task]
    calibration = results.get("judge_calibration")
    if not (withheld or ranking or pairs or calibration or pairwise.get("error")):
        return None
    return {
        "withheld": withheld,
        "ranking": ranking,
        "pairs": pairs,
        "pairs_withheld": (pairwise.get("reliability") or {}).get("withheld"),
        "reliability": pairwise.get("reliability"),
        "error": pairwise.get("error"),
        "calibration": calibration,
    }
