"""Unlabelled text for continual pretraining and domain perplexity: documents from a packaged
corpus (`corpus:NAME`), a .txt file (documents separated by blank lines), a .jsonl file (a
"text" field) or a folder of .txt files (one document each, in name order)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.errors import HarnessError, did_you_mean


def _aclsum_papers(split_file: str) -> list[str]:
    """Title, abstract, introduction and conclusion of each ACLSum paper of one split file. The
    summarisation task (prepared:aclsum) tests on the papers of test.jsonl; no paper id is in two
    split files (checked by tests/test_cpt.py), so text from train/val never contains a test paper."""
    from harness.data.prepared import package_dir

    path = package_dir("aclsum", "aclsum") / "dataset" / split_file
    papers = sorted(
        (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()),
        key=lambda paper: paper["id"],
    )
    return [
        " ".join(
            [paper["title"].strip()]
            + [s.strip() for section in ("abstract", "introduction", "conclusion") for s in paper["sentences"][section]]
        )
        for paper in papers
    ]


# name -> (what it is, how to read it)
CORPORA = {
    "aclsum-papers": (
        "the 100 ACLSum train papers (title, abstract, introduction, conclusion; ~100k words)",
        lambda: _aclsum_papers("train.jsonl"),
    ),
    "aclsum-papers-heldout": (
        "the 50 ACLSum validation papers, same sections (held-out domain text)",
        lambda: _aclsum_papers("val.jsonl"),
    ),
}


def source_problem(source: str, base_dir: Path | None) -> tuple[str, str] | None:
    """(problem, fix) when a text source cannot be read, checked at `harness validate` without reading it."""
    if source.startswith("corpus:"):
        name = source.split(":", 1)[1]
        return None if name in CORPORA else (f"unknown corpus '{name}'", did_you_mean(name, CORPORA))
    path = Path(source) if Path(source).is_absolute() or base_dir is None else Path(base_dir) / source
    if not path.exists():
        return (
            f"text not found: {path}",
            "name corpus:<name>, a .txt/.jsonl file or a folder (relative to the experiment file)",
        )
    return None


def load_documents(source: str, base_dir: Path | None = None, *, key: str = "corpus") -> list[str]:
    if source.startswith("corpus:"):
        name = source.split(":", 1)[1]
        if name not in CORPORA:
            raise HarnessError(
                f"unknown corpus '{name}'",
                key=key,
                fix=did_you_mean(name, CORPORA)
                or f"use one of {', '.join(sorted(CORPORA))}, or a .txt/.jsonl file or a folder",
            )
        return CORPORA[name][1]()
    path = Path(source) if Path(source).is_absolute() or base_dir is None else Path(base_dir) / source
    if path.is_dir():
        documents = [f.read_text(encoding="utf-8").strip() for f in sorted(path.glob("*.txt"))]
    elif path.is_file() and path.suffix == ".jsonl":
        documents = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif path.is_file():
        documents = [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n")]
    else:
        raise HarnessError(
            f"text '{source}' not found",
            key=key,
            fix="name corpus:<name>, a .txt or .jsonl file or a folder of .txt files (relative to the experiment file)",
        )
    documents = [d for d in documents if d]
    if not documents:
        raise HarnessError(f"text '{source}' has no documents", key=key, fix="give a file or folder with text in it")
    return documents


def pack(tokenizer, documents: list[str], block: int) -> list[list[int]]:
    """Documents tokenized, each ended with eos, concatenated and cut into full blocks of `block`
    tokens (no padding: the last partial block is dropped)."""
    stream: list[int] = []
    for document in documents:
        stream += tokenizer(document, add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            stream.append(tokenizer.eos_token_id)
    return [stream[i : i + block] for i in range(0, len(stream) - block + 1, block)]
