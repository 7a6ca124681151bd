"""Where harness keeps things it makes once and reuses (converted models, prepared data)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$HARNESS_CACHE, else ~/.cache/harness. Converted models and prepared data live here."""
    root = os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "harness"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file and rename, so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves neither the file nor a half-written temp
        raise


def read_json_file(path: Path, *, what: str, fix: str):
    """A JSON file harness wrote (results.json, result.json, a baseline), or one HarnessError:
    missing, unreadable, not UTF-8, truncated or otherwise not JSON (with its line)."""
    import json

    from harness.errors import HarnessError

    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{what} {path} does not exist", fix=fix)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise HarnessError(f"{what} {path} cannot be read ({os_problem(err)})", fix=fix) from None
    except UnicodeDecodeError:
        raise HarnessError(f"{what} {path} is not UTF-8 text", fix=fix) from None
    except json.JSONDecodeError as err:
        raise HarnessError(
            f"{what} is not valid JSON ({err.msg}; it may be truncated)", file=str(path), line=err.lineno, fix=fix
        ) from None
    except RecursionError:
        raise HarnessError(f"{what} {path} nests too deeply to read", fix=fix) from None


def read_jsonl_objects(path: Path, *, fix: str) -> list[dict]:
    """A JSON-lines file harness wrote (predictions.jsonl), every line a JSON object, or one
    HarnessError naming the file and the first bad line (a truncated copy, a torn write)."""
    import json

    from harness.errors import HarnessError

    rows, number = [], 0
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ValueError("not a JSON object")
                    rows.append(row)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:  # JSONDecodeError is a ValueError
        raise HarnessError(
            f"line {number} is not a JSON object ({str(err).splitlines()[0][:120]}; the file may be truncated)",
            file=str(path),
            line=number,
            fix=fix,
        ) from None
    except OSError as err:
        raise HarnessError(f"cannot be read ({os_problem(err)})", file=str(path), fix=fix) from None
    return rows


def os_problem(err: OSError) -> str:
    """What an OSError means for a user, in words (a full disk, a file where a folder should be)."""
    import errno

    words = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is used up",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENOTDIR: "a file is in the way where a folder should be",
        errno.EEXIST: "a file is in the way where a folder should be",
    }
    return words.get(err.errno, err.strerror or str(err))


# How libraries that write in Rust or C++ word a full disk: safetensors' SafetensorError says
# `IoError(Os { code: 28, kind: StorageFull, .. })`, torch's writer the C library's message.
_FULL_DISK_WORDS = ("StorageFull", "QuotaExceeded", "No space left on device", "Disk quota exceeded")


def disk_full(err: BaseException | None) -> bool:
    """Whether an error, or one it was raised from, is a full disk or a used-up quota."""
    import errno

    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(words in str(err) for words in _FULL_DISK_WORDS):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def disk_full_sentence(folder: Path) -> str:
    return f"the disk is full: cannot write in {folder}; free some space and rerun (completed arms are kept)"
