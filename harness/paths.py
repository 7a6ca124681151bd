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
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
