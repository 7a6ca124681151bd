"""Read a task's examples from jsonl, csv or parquet and map the file's columns to ours.

Our field names (id, text, label, reference, ...) are what every other module reads; the
experiment's `columns:` block says which column of the user's file holds each of them.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
from pathlib import Path
from typing import Callable, Iterable, Iterator

from harness.errors import HarnessError, did_you_mean

FORMAT_BY_SUFFIX = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
SUPPORTED = "jsonl (.jsonl/.json), csv (.csv), parquet (.parquet)"


# ---------------------------------------------------------------- readers, one per format


def _read_jsonl(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8-sig") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise HarnessError(
                    f"line {line_no} is not valid JSON ({err.msg})",
                    file=str(path),
                    line=line_no,
                    fix="write one JSON object per line",
                ) from None
            if not isinstance(row, dict):
                raise HarnessError(
                    f"line {line_no} is a JSON {type(row).__name__}, not an object",
                    file=str(path),
                    line=line_no,
                    fix="write one JSON object per line",
                ) from None
            yield row


def _read_csv(path: Path) -> Iterator[dict]:
    # The csv module keeps every cell a string, so ids like "007" survive (pandas would not).
    with path.open(encoding="utf-8-sig", newline="") as handle:
        yield from (dict(row) for row in csv.DictReader(handle))


def _read_parquet(path: Path) -> Iterator[dict]:
    import pyarrow.parquet as pq  # imported here: most runs never read parquet

    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):  # streamed, a batch at a time
        yield from batch.to_pylist()


def _peek_jsonl(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig") as handle:
        for line in handle:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise HarnessError(
                        f"the first row is not valid JSON ({err.msg})",
                        file=str(path),
                        fix="write one JSON object per line",
                    ) from None
                return list(row) if isinstance(row, dict) else []
    return []


def _peek_csv(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return next(csv.reader(handle), [])


def _peek_parquet(path: Path) -> list[str]:
    import pyarrow.parquet as pq  # the schema lives in the footer: no rows are read

    return list(pq.read_schema(path).names)


READERS: dict[str, Callable[[Path], Iterator[dict]]] = {
    "jsonl": _read_jsonl,
    "csv": _read_csv,
    "parquet": _read_parquet,
}
PEEKERS: dict[str, Callable[[Path], list[str]]] = {"jsonl": _peek_jsonl, "csv": _peek_csv, "parquet": _peek_parquet}


def _format_of(path: Path, fmt: str | None, yaml_file: str | None, yaml_key: str | None) -> str:
    if fmt:
        fmt = "jsonl" if fmt == "json" else fmt
        if fmt not in READERS:
            raise HarnessError(
                f"unknown data format '{fmt}' ({did_you_mean(fmt, READERS)})",
                file=yaml_file,
                key=yaml_key,
                fix=f"use one of: {SUPPORTED}",
            )
        return fmt
    try:
        return FORMAT_BY_SUFFIX[path.suffix.lower()]
    except KeyError:
        raise HarnessError(
            f"cannot tell the format of data file {path} from its suffix '{path.suffix}'",
            file=yaml_file,
            key=yaml_key,
            fix=f"use one of: {SUPPORTED}",
        ) from None


def _check_exists(path: Path, yaml_file: str | None, yaml_key: str | None) -> None:
    if not path.is_file():
        raise HarnessError(
            f"data file not found: {path}",
            file=yaml_file,
            key=yaml_key,
            fix="check the path (relative paths are relative to the experiment file)",
        )


# ---------------------------------------------------------------- public API


def format_of(path: Path, fmt: str | None = None) -> str:
    """The reader a data file gets: `format:` when given, else from its suffix; HarnessError if neither."""
    return _format_of(Path(path), fmt, None, None)


def peek_columns(path: Path, fmt: str | None = None) -> list[str]:
    """Column names from the header (csv), first row (jsonl) or schema (parquet), cheaply."""
    path = Path(path)
    _check_exists(path, None, None)
    fmt = _format_of(path, fmt, None, None)
    with _unreadable_as_error(path, fmt):
        return PEEKERS[fmt](path)


@contextlib.contextmanager
def _unreadable_as_error(path: Path, fmt: str):
    """A file that is not what its format says (not UTF-8, a broken parquet footer, a NUL byte in
    a csv) is one sentence naming it, not the reader's traceback."""
    try:
        yield
    except HarnessError:
        raise
    except UnicodeDecodeError as err:
        raise HarnessError(
            f"data file {path} is not UTF-8 text (it has the byte 0x{err.object[err.start]:02x})",
            file=str(path),
            fix="save it as UTF-8",
        ) from None
    except csv.Error as err:
        raise HarnessError(
            f"data file {path} is not readable csv ({err})", file=str(path), fix="save it as comma-separated UTF-8 text"
        ) from None
    except OSError as err:
        raise HarnessError(
            f"data file {path} cannot be read ({err.strerror or err})",
            file=str(path),
            fix="check the file and its permissions",
        ) from None
    except Exception as err:  # noqa: BLE001 - pyarrow's errors (ArrowInvalid, ...) share no base we import
        if fmt != "parquet":
            raise
        first = (str(err).splitlines() or [""])[0][:200]
        raise HarnessError(
            f"data file {path} is not a readable parquet file ({type(err).__name__}: {first})",
            file=str(path),
            fix="write it again with pandas.DataFrame.to_parquet",
        ) from None


def iter_examples(
    path: Path, columns: dict[str, str] | None = None, *, fmt: str | None = None, required: tuple[str, ...] = ("text",)
) -> Iterator[dict]:
    """The rows of `path` one at a time, as load_examples maps them (for `validate`, which reads
    every row of a large file without holding it in memory)."""
    path = Path(path)
    columns = dict(columns or {})
    _check_exists(path, None, None)
    fmt = _format_of(path, fmt, None, None)
    mapped_sources = set(columns.values())
    with _unreadable_as_error(path, fmt):
        for index, row in enumerate(READERS[fmt](path)):
            yield _to_ours(row, index, columns, mapped_sources, path, required)


def load_examples(
    path: Path,
    columns: dict[str, str] | None = None,
    *,
    fmt: str | None = None,
    yaml_file: str | None = None,
    yaml_key: str | None = None,
    required: tuple[str, ...] = ("text",),
) -> list[dict]:
    """Rows of `path` as dicts keyed by our field names; every row gets a string `id`."""
    path = Path(path)
    columns = dict(columns or {})
    _check_exists(path, yaml_file, yaml_key)
    fmt = _format_of(path, fmt, yaml_file, yaml_key)
    with _unreadable_as_error(path, fmt):
        rows = list(READERS[fmt](path))
    available = _columns_of(rows)
    for field, source in columns.items():
        if source not in available:
            raise _missing_column(source, field, path, available, yaml_file, _join_key(yaml_key, "columns", field))
    mapped_sources = set(columns.values())
    for field in required:
        if field not in columns and field not in available:
            raise _missing_column(field, field, path, available, yaml_file, yaml_key)
    return [_to_ours(row, index, columns, mapped_sources, path, required) for index, row in enumerate(rows)]


def fingerprint_files(paths: Iterable[Path]) -> str:
    """First 16 hex chars of a sha256 over the files' contents, in the order given."""
    total = hashlib.sha256()
    for path in paths:
        one = hashlib.sha256()
        with Path(path).open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                one.update(chunk)
        # Hash of hashes: concatenating raw bytes would let "ab"+"c" equal "a"+"bc".
        total.update(one.digest())
    return total.hexdigest()[:16]


# ---------------------------------------------------------------- helpers


def _columns_of(rows: list[dict]) -> list[str]:
    # jsonl rows may differ; a column any row has counts as available.
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _join_key(*parts: str | None) -> str | None:
    joined = ".".join(part for part in parts if part)
    return joined or None


def _missing_column(
    column: str, field: str, path: Path, available: list[str], yaml_file: str | None, key: str | None
) -> HarnessError:
    role = f" (for '{field}')" if field != column else ""
    hint = did_you_mean(column, available) if available else ""
    hint = f" ({hint})" if hint.startswith("did you mean") else ""
    listed = ", ".join(available) or "none"
    return HarnessError(
        f"column '{column}'{role} is not in data file {path}{hint}; its columns are: {listed}",
        file=yaml_file,
        key=key,
        fix=f"set columns.{field} to one of those columns",
    )


def _to_ours(
    row: dict, index: int, columns: dict[str, str], mapped_sources: set[str], path: Path, required: tuple[str, ...]
) -> dict:
    out = {key: value for key, value in row.items() if key not in mapped_sources}
    for field, source in columns.items():
        out[field] = row.get(source)
    for field in required:
        if _is_missing(out.get(field)):
            raise HarnessError(
                f"row {index} has no value for '{field}'", file=str(path), fix="fill it in or drop the row"
            )
    out["id"] = f"{path.stem}-{index}" if _is_missing(out.get("id")) else str(out["id"])
    if not _is_missing(out.get("label")):
        out["label"] = _label_text(out["label"])
    return out


def _is_missing(value) -> bool:
    # pandas writes a missing cell as NaN, which is not None (and NaN != NaN).
    return value is None or (isinstance(value, float) and value != value)


def _label_text(value) -> str:
    # parquet/pandas turns an int column with a gap into floats; "1.0" must still match "1".
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
