"""Measurements of an untrained base model that are the same for every arm on it, computed once
per machine and cached under <cache>/base_measurements/ (the base's forgetting "before" loss,
golden-set results of the arms that train nothing).

The key names everything the value depends on: the model (its fingerprint, the stamp of its
weight files, how it was loaded), the text or golden set (a hash of the content), the settings
and the torch/transformers versions. A value is reused only when its stored key equals the key
asked for; anything else is measured again and overwrites it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.paths import atomic_write_text, cache_dir

# The files a measurement of the folder's model depends on: weights, config, tokenizer.
MODEL_FILE_PATTERNS = (
    "*.safetensors",
    "*.bin",
    "*.gguf",
    "config.json",
    "tokenizer*",
    "*.jinja",
    "vocab*",
    "merges.txt",
)


def text_fingerprint(parts: list[str] | str) -> str:
    parts = [parts] if isinstance(parts, str) else parts
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8") + b"\0")
    return digest.hexdigest()


def model_identity(source: str, model_dir: Path, model, *, base_dir: Path | None, precision: str) -> dict:
    """What a base measurement depends on about the model: the source's fingerprint (package
    version or config), the weight and tokenizer files (name, size, modification time: a model
    rewritten in place measures again), how it was loaded (dtype, quantisation) and the evaluation precision."""
    from harness import models

    files = sorted({f for pattern in MODEL_FILE_PATTERNS for f in Path(model_dir).glob(pattern) if f.is_file()})
    quantization = getattr(model.config, "quantization_config", None)
    if quantization is not None and hasattr(quantization, "to_dict"):
        quantization = quantization.to_dict()
    return {
        "fingerprint": models.model_fingerprint(source, base_dir=base_dir),
        "files": [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files],
        "class": type(model).__name__,
        "dtype": str(next(model.parameters()).dtype),
        "quantization": quantization,
        "precision": precision,
    }


def _versions() -> dict:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def _path(key: dict) -> Path:
    name = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return cache_dir() / "base_measurements" / f"{key['what']}-{name}.json"


def cached(what: str, key: dict, compute: Callable[[], Any]) -> tuple[Any, bool]:
    """(value, reused): the stored value when its key matches exactly, else compute() stored."""
    full = json.loads(json.dumps({"what": what, **key, "versions": _versions()}, sort_keys=True, default=str))
    path = _path(full)
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored.get("key") == full:
                return stored["value"], True
        except (OSError, ValueError):
            pass  # a broken entry is measured again
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"key": full, "value": value}, default=str))
    return value, False
