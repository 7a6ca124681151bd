"""Rebuild the shipped golden sets from the prepared data, reproducibly.

    python golden_sets/build.py            # writes golden_sets/{sentiment,topics,summarization}.yaml

Items drawn from the prepared *test* splits (never train: a golden set must not be trained on)
by fixed rules and a fixed seed, plus the hand-written hard cases below. Running it twice gives
identical files. Bump VERSION when the rules or the hand-written cases change, so recorded
baselines (golden_sets/baselines/<set>@<version>.json) are not compared across versions.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from harness.data.prepared import prepared_dir  # noqa: E402

VERSION = "1"
SEED = 0
LONG_ARTICLE_CHARS = 2500  # long BBC articles are cut here (at a sentence end) to keep the file small


def _split(name: str, split: str = "test") -> list[dict]:
    with open(prepared_dir(name) / f"{split}.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


# ---------------------------------------------------------------- sentiment

SENTIMENT_HARD = [
    # (id, text, label, tags, must)
    (
        "neg-not-bad",
        "Honestly, this was not bad at all; I was smiling the whole way through.",
        "positive",
        ["negation"],
        False,
    ),
    (
        "neg-not-good",
        "I wanted to like it, but it is not good, not funny and not worth your evening.",
        "negative",
        ["negation"],
        True,
    ),
    ("neg-never-boring", "Never once boring, never once predictable.", "positive", ["negation"], False),
    (
        "neg-cant-recommend",
        "I can't recommend this to anyone, no matter how patient they are.",
        "negative",
        ["negation"],
        False,
    ),
    (
        "sarcasm-great",
        "Oh great, another two hours of my life I will never get back. Truly a masterpiece of tedium.",
        "negative",
        ["sarcasm"],
        False,
    ),
    ("sarcasm-wow", "Wow, what a bold choice to have no plot at all. Bravo.", "negative", ["sarcasm"], False),
    (
        "mixed-but-skip",
        "The acting is superb, but the plot is such a mess that I would skip it.",
        "negative",
        ["mixed"],
        False,
    ),
    (
        "mixed-flawed-worth",
        "Flawed and far too long, yet moving and ultimately worth seeing.",
        "positive",
        ["mixed"],
        False,
    ),
    ("mixed-pretty-empty", "Gorgeous to look at and completely empty inside.", "negative", ["mixed"], False),
    (
        "plain-masterpiece",
        "A wonderful, warm and brilliantly acted film. I loved every minute of it.",
        "positive",
        ["plain"],
        True,
    ),
    ("plain-awful", "An awful, boring and badly acted film. I hated every minute of it.", "negative", ["plain"], True),
]
SENTIMENT_CHAT = [
    ("chat-positive", "Is this review positive or negative? 'A delightful, clever comedy.'", "positive"),
    ("chat-negative", "Is this review positive or negative? 'A dull, lifeless slog.'", "negative"),
]


def sentiment_set() -> dict:
    rng = random.Random(SEED)
    strong = [r for r in _split("sentiment") if abs(r["score"]) >= 2.0]
    items = []
    for label in ("positive", "negative"):
        pool = sorted((r for r in strong if r["label"] == label), key=lambda r: r["id"])
        for r in rng.sample(pool, 11):
            items.append(
                {
                    "id": r["id"],
                    "input": r["text"],
                    "tags": ["data", label],
                    "must": abs(r["score"]) >= 3.0,
                    "expect": {"label": label},
                }
            )
    for item_id, text, label, tags, must in SENTIMENT_HARD:
        items.append({"id": item_id, "input": text, "tags": ["hard", *tags], "must": must, "expect": {"label": label}})
    for item_id, text, label in SENTIMENT_CHAT:
        items.append(
            {"id": item_id, "input": [{"role": "user", "content": text}], "tags": ["chat"], "expect": {"label": label}}
        )
    return {
        "name": "sentiment",
        "task": "classification",
        "version": VERSION,
        "description": "Movie-review sentiment: strongly rated snippets from the prepared test split "
        "(|human score| >= 2, must when >= 3) and hand-written negation, sarcasm and mixed cases.",
        "labels": ["negative", "positive"],
        "instruction": "Classify the sentiment of the movie review as positive or negative. Answer with one word.",
        "prompt": "Review: {text}",
        "items": items,
    }


# ---------------------------------------------------------------- topics

TOPICS_HARD = [
    ("headline-business", "Bank raises interest rates as inflation climbs", "business"),
    ("headline-sports", "Striker's late goal sends United into the cup final", "sports"),
    ("headline-tech", "New smartphone chip doubles battery life, engineers say", "tech"),
    ("headline-politics", "Prime minister faces rebellion over election pledge", "politics"),
    ("headline-entertainment", "Oscar-winning director casts newcomer in lead role", "entertainment"),
]


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = text[:limit]
    return head[: head.rfind(". ") + 1] or head


def topics_set() -> dict:
    rows = _split("topics")
    items = []
    for label in sorted({r["label"] for r in rows}):
        by_length = sorted((r for r in rows if r["label"] == label), key=lambda r: (len(r["text"]), r["id"]))
        middle = len(by_length) // 2
        picks = [
            (by_length[0], "short"),
            (by_length[1], "short"),
            (by_length[middle], "medium"),
            (by_length[middle + 1], "medium"),
            (by_length[-1], "long"),
            (by_length[-2], "long"),
        ]
        for r, size in picks:
            items.append(
                {
                    "id": r["id"],
                    "input": _cut(r["text"], LONG_ARTICLE_CHARS),
                    "tags": ["data", label, size],
                    "must": size == "medium" and r is by_length[middle],
                    "expect": {"label": label},
                }
            )
    for item_id, text, label in TOPICS_HARD:
        items.append(
            {"id": item_id, "input": text, "tags": ["hard", "headline-only", label], "expect": {"label": label}}
        )
    return {
        "name": "topics",
        "task": "classification",
        "version": VERSION,
        "description": "BBC News topic: the two shortest, two median-length and two longest test articles "
        f"per topic (long ones cut at {LONG_ARTICLE_CHARS} characters), plus headline-only cases.",
        "labels": ["business", "entertainment", "politics", "sports", "tech"],
        "instruction": "Classify the news article into one topic: business, entertainment, politics, sports "
        "or tech. Answer with one word.",
        "prompt": "Article: {text}",
        "items": items,
    }


# ---------------------------------------------------------------- summarization (ACLSum)


def summarization_set() -> dict:
    rows = _split("aclsum")
    papers: dict[str, list[dict]] = {}
    for r in rows:
        papers.setdefault(r["paper_id"], []).append(r)
    by_length = sorted(papers, key=lambda p: (len(papers[p][0]["text"]), p))
    middle = len(by_length) // 2
    chosen = (
        [(p, "short") for p in by_length[:3]]
        + [(p, "medium") for p in by_length[middle - 2 : middle + 2]]
        + [(p, "long") for p in by_length[-3:]]
    )
    items = []
    for paper_id, size in chosen:
        for r in sorted(papers[paper_id], key=lambda r: r["aspect"]):
            items.append(
                {
                    "id": r["id"],
                    "input": f"Aspect: {r['aspect']}\nAbstract: {r['text']}",
                    "reference": r["reference"],
                    "tags": ["data", r["aspect"], size],
                    "expect": {"rouge_l": 0.15, "max_tokens": 80, "not_contains": ["as an ai"]},
                }
            )
    sample = papers[by_length[0]][0]
    items += [
        {
            "id": "format-one-sentence",
            "input": f"Aspect: outcome\nAbstract: {sample['text']}",
            "tags": ["hard", "format"],
            "must": True,
            "expect": {"regex": r"\w", "max_tokens": 80, "not_contains": ["<|im_start|>", "Abstract:"]},
        },
        {
            "id": "format-json",
            "tags": ["hard", "format", "chat"],
            "input": [
                {"role": "system", "content": "You reply with JSON only."},
                {
                    "role": "user",
                    "content": 'Return a JSON object {"title": ...} holding the title of this paper: '
                    + sample["title"],
                },
            ],
            "expect": {"json_valid": True, "contains": ["title"]},
        },
        {
            "id": "chat-aspect-challenge",
            "tags": ["hard", "chat"],
            "reference": sample["reference"],
            "input": [
                {
                    "role": "user",
                    "content": f"In one sentence, what problem does this paper address?\n\n{sample['text']}",
                }
            ],
            "expect": {"rouge_l": 0.1, "max_tokens": 80},
        },
    ]
    return {
        "name": "summarization",
        "task": "generation",
        "version": VERSION,
        "description": "ACLSum one-sentence aspect summaries (challenge, approach, outcome) of the three "
        "shortest, four median and three longest test abstracts, plus format checks.",
        "instruction": "Summarize the given aspect (challenge, approach or outcome) of the paper's abstract "
        "in one sentence.",
        "prompt": "{text}",
        "max_new_tokens": 64,
        "items": items,
    }


def write(data: dict, path: Path) -> None:
    header = "# Generated by golden_sets/build.py from the prepared data; edit the script, not this file.\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120), encoding="utf-8")


def main() -> int:
    from harness.eval.golden import load_golden

    for name, build in (("sentiment", sentiment_set), ("topics", topics_set), ("summarization", summarization_set)):
        path = HERE / f"{name}.yaml"
        write(build(), path)
        golden = load_golden(path)  # what we ship must validate
        print(f"{path}: {len(golden.items)} items, {sum(i.must for i in golden.items)} must")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
