"""Unlabelled text for continual pretraining and domain perplexity: documents from a packaged
corpus (`corpus:NAME`), a .txt file (documents separated by blank lines), a .jsonl file (a
"text" field) or a folder of .txt files (one document each, in name order).

Files are streamed: read PIECE_CHARS characters at a time and tokenised piece by piece, and the
packed token stream goes to a temporary file read back as a memory map, so memory does not grow
with the length of a line or the size of a file (a 100 MB single-line .txt peaks at a few hundred
MB, tests/test_cpt.py). A .jsonl line is one JSON value and must be read whole: lines longer than
MAX_JSONL_LINE are refused with a sentence. `harness validate` reads every file the same way, so a
binary file, a non-UTF-8 file, a bad line or a file of another kind is named before the run."""

from __future__ import annotations

import codecs
import json
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from harness.errors import HarnessError, did_you_mean

PIECE_CHARS = 1 << 18  # characters read (and tokenised) at a time
MAX_JSONL_LINE = 1 << 24  # characters of one .jsonl line (one document)
TEXT_SUFFIXES = (".txt",)
FILE_SUFFIXES = (".txt", ".jsonl")


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


def _path(source: str, base_dir: Path | None) -> Path:
    return Path(source) if Path(source).is_absolute() or base_dir is None else Path(base_dir) / source


def source_problem(source: str, base_dir: Path | None) -> tuple[str, str] | None:
    """(problem, fix) when a text source cannot be read, checked at `harness validate` by reading
    every file of it the way the run will (in bounded pieces): a missing or binary file, text that
    is not UTF-8, a broken .jsonl line, a file of a kind the corpus does not read."""
    try:
        for document in iter_documents(source, base_dir):
            for _ in document:
                pass
    except HarnessError as err:
        return err.bare if not err.file else f"{err.file}{f':{err.line}' if err.line else ''}: {err.bare}", err.fix
    return None


def iter_documents(source: str, base_dir: Path | None = None, *, key: str = "corpus") -> Iterator[Iterator[str]]:
    """The documents of a source, each an iterator of text pieces of at most about 2 x PIECE_CHARS
    characters (a document's pieces joined are the document, stripped of surrounding whitespace).
    A document must be read to its end before the next one is asked for."""
    if source.startswith("corpus:"):
        name = source.split(":", 1)[1]
        if name not in CORPORA:
            raise HarnessError(
                f"unknown corpus '{name}'",
                key=key,
                fix=did_you_mean(name, CORPORA)
                or f"use one of {', '.join(sorted(CORPORA))}, or a .txt/.jsonl file or a folder",
            )
        yield from (iter([d]) for d in CORPORA[name][1]() if d.strip())
        return
    path = _path(source, base_dir)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if not f.name.startswith("."))
        for f in files:
            if not (f.is_file() and f.suffix in TEXT_SUFFIXES):
                raise HarnessError(
                    f"{f.name} in the corpus folder {path} is not a .txt file",
                    key=key,
                    fix="a corpus folder holds .txt files only (one document each): convert it to text or move it out",
                )
        for f in files:
            yield _stripped(_pieces(f, key))
    elif path.is_file() and path.suffix == ".jsonl":
        yield from (iter([d]) for d in _jsonl_texts(path, key))
    elif path.is_file() and path.suffix in TEXT_SUFFIXES:
        yield from _blank_line_documents(path, key)
    elif path.is_file():
        raise HarnessError(
            f"{path.name} is not a kind of file a corpus reads ({', '.join(FILE_SUFFIXES)} or a folder of .txt files)",
            key=key,
            fix="convert it to a .txt file (documents separated by blank lines) or a .jsonl file with a 'text' field",
        )
    else:
        raise HarnessError(
            f"text '{source}' not found",
            key=key,
            fix="name corpus:<name>, a .txt or .jsonl file or a folder of .txt files (relative to the experiment file)",
        )


def load_documents(source: str, base_dir: Path | None = None, *, key: str = "corpus") -> list[str]:
    """Every document whole (small sources: tests, the packaged corpora); the run streams them."""
    documents = ["".join(document) for document in iter_documents(source, base_dir, key=key)]
    documents = [d for d in documents if d]
    if not documents:
        raise HarnessError(f"text '{source}' has no documents", key=key, fix="give a file or folder with text in it")
    return documents


def passages(source: str, base_dir: Path | None, *, key: str, limit: int, max_chars: int) -> list[str]:
    """The first `limit` non-empty documents, each cut to its first `max_chars` characters (the rest
    of a long document is read past in pieces, never held)."""
    out = []
    for document in iter_documents(source, base_dir, key=key):
        if len(out) == limit:
            break
        text = ""
        for piece in document:
            if len(text) < max_chars:
                text += piece[: max_chars - len(text)]
        if text:
            out.append(text)
    if not out:
        raise HarnessError(f"text '{source}' has no documents", key=key, fix="give a file or folder with text in it")
    return out


def _pieces(path: Path, key: str) -> Iterator[str]:
    """A file's text, PIECE_CHARS characters at a time; a NUL byte or bytes that are not UTF-8
    are one sentence naming the file."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        with open(path, "rb") as fh:
            while True:
                raw = fh.read(PIECE_CHARS)
                text = decoder.decode(raw, final=not raw)
                if "\x00" in text:
                    raise HarnessError(
                        f"{path} is a binary file (it holds NUL bytes), not text",
                        key=key,
                        fix="give a UTF-8 text file, or move the binary file out of the corpus",
                    )
                if text:
                    yield text
                if not raw:
                    return
                offset += len(raw)
    except UnicodeDecodeError as err:
        raise HarnessError(
            f"{path} is not UTF-8 text (byte {offset + err.start})",
            key=key,
            fix="convert it to UTF-8 (e.g. `iconv -t utf-8`) or move it out of the corpus",
        ) from None
    except OSError as err:
        from harness.paths import os_problem

        raise HarnessError(f"cannot read {path} ({os_problem(err)})", key=key, fix="check the file") from None


def _stripped(pieces: Iterable[str]) -> Iterator[str]:
    """Pieces of one document without its leading and trailing whitespace: the whitespace at the
    end of a piece is held back until more text follows it."""
    started, held = False, ""
    for piece in pieces:
        if not started:
            piece = piece.lstrip()
            started = bool(piece)
        body = piece.rstrip()
        if body:
            yield held + body
            held = piece[len(body) :]
        else:
            held += piece
            if len(held) > PIECE_CHARS and started:  # a run of whitespace is not held without end
                yield held
                held = ""


def _blank_line_documents(path: Path, key: str) -> Iterator[Iterator[str]]:
    """Documents of a .txt file, separated by blank lines ("\n\n"), each as pieces."""
    source = _pieces(path, key)
    state = {"buffer": "", "done": False}

    def one_document() -> Iterator[str]:
        while True:
            buffer = state["buffer"]
            end = buffer.find("\n\n")
            if end >= 0:
                state["buffer"] = buffer[end + 2 :]
                if buffer[:end]:
                    yield buffer[:end]
                return
            if state["done"]:
                state["buffer"] = ""
                if buffer:
                    yield buffer
                return
            if len(buffer) > PIECE_CHARS:  # keep the last character: it may begin a "\n\n"
                state["buffer"] = buffer[-1:]
                yield buffer[:-1]
                continue
            try:
                state["buffer"] = buffer + next(source)
            except StopIteration:
                state["done"] = True

    while True:
        yield _stripped(one_document())
        if state["done"] and not state["buffer"]:
            return


def _jsonl_texts(path: Path, key: str) -> Iterator[str]:
    """The "text" of each line of a .jsonl file, one line in memory at a time (at most MAX_JSONL_LINE)."""
    try:
        with open(path, encoding="utf-8") as fh:
            number = 0
            while True:
                line = fh.readline(MAX_JSONL_LINE + 1)
                if not line:
                    return
                number += 1
                if len(line) > MAX_JSONL_LINE:
                    raise HarnessError(
                        f"line {number} is longer than {MAX_JSONL_LINE:,} characters",
                        file=str(path),
                        line=number,
                        fix="split the document into several lines, or give it as a .txt file (read in pieces)",
                    )
                if not line.strip():
                    continue
                if "\x00" in line:
                    raise HarnessError(f"{path} is a binary file (it holds NUL bytes), not text", key=key)
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError):
                    row = None
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise HarnessError(
                        f'line {number} is not a JSON object with a "text" string',
                        file=str(path),
                        line=number,
                        fix='write one {"text": "..."} object per line',
                    )
                if row["text"].strip():
                    yield row["text"].strip()
    except UnicodeDecodeError:
        raise HarnessError(
            f"{path} is not UTF-8 text", key=key, fix="convert it to UTF-8 (e.g. `iconv -t utf-8`)"
        ) from None


def pack(tokenizer, documents: Iterable, block: int) -> np.ndarray:
    """Documents tokenized, each ended with eos, concatenated and cut into full blocks of `block`
    tokens (no padding: the last partial block is dropped): an (n, block) array. A document is a
    string or an iterator of pieces (iter_documents); the token stream is written to a temporary
    file and read back as a memory map, so a large corpus is not held in memory."""
    with tempfile.TemporaryFile(prefix="harness-corpus-") as fh:
        count = 0
        for document in documents:
            written = 0
            for text in _word_aligned([document] if isinstance(document, str) else document):
                ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int32)
                fh.write(ids.tobytes())
                written += len(ids)
            if written and tokenizer.eos_token_id is not None:
                fh.write(np.int32(tokenizer.eos_token_id).tobytes())
                written += 1
            count += written
        fh.flush()
        n = count // block
        if n == 0:
            return np.zeros((0, block), dtype=np.int32)
        return np.memmap(fh, dtype=np.int32, mode="r", shape=(n, block))  # the map outlives the closed file


def _word_aligned(pieces: Iterable[str]) -> Iterator[str]:
    """A document's pieces re-cut before whitespace, so no word is split between two calls of the
    tokenizer (a piece without whitespace is cut anyway once it passes PIECE_CHARS)."""
    carry = ""
    for piece in pieces:
        text = carry + piece
        cut = max(text.rfind(" "), text.rfind("\n"))
        if cut <= 0 and len(text) <= PIECE_CHARS:
            carry = text
            continue
        cut = cut if cut > 0 else len(text)
        yield text[:cut]
        carry = text[cut:]
    if carry:
        yield carry
