"""Any model source -> a folder transformers can load: a local folder (relative to the experiment
file), a hub id (only when online), or packaged:<name>; its kind (decoder or encoder) and a content
fingerprint for arm hashes."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from harness.errors import HarnessError
from harness.models.packaged import (
    PACKAGED,
    PACKAGED_PREFIX,
    ModelKind,
    _package_version,
    _packaged,
    _packaged_dir,
    _require_package,
)

# model_type -> kind, for folders whose architectures do not say (e.g. a bare "BertModel").
_ENCODER_TYPES = [
    "bert",
    "roberta",
    "deberta",
    "deberta-v2",
    "distilbert",
    "electra",
    "xlm-roberta",
    "albert",
    "camembert",
    "mpnet",
    "modernbert",
]
_DECODER_TYPES = [
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3_text",
    "phi",
    "phi3",
    "gpt2",
    "gpt_neox",
    "gptj",
    "opt",
    "falcon",
    "bloom",
    "olmo",
    "olmo2",
    "stablelm",
    "smollm3",
    "granite",
]
_KIND_BY_MODEL_TYPE: dict[str, ModelKind] = {
    **{t: "causal_lm" for t in _DECODER_TYPES},
    **{t: "encoder" for t in _ENCODER_TYPES},
}

# What a hub download fetches: config, tokenizer and safetensors; never .bin, .gguf or ONNX copies.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "tokenizer*"]
# "org/name", or a legacy bare name ("roberta-base") that the hub still resolves.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Files whose names and sizes identify a local checkpoint (with config.json's bytes).
_IDENTITY_GLOBS = [
    "*.safetensors",
    "*.safetensors.index.json",
    "*.bin",
    "*.gguf",
    "tokenizer*",
    "*.model",
    "vocab.*",
    "merges.txt",
    "chat_template.jinja",
]


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def find_local(source: str, base_dir: Path | None) -> Path | None:
    """An existing folder: absolute, else relative to base_dir (the experiment file), then cwd."""
    path = Path(source).expanduser()
    candidates = [path] if path.is_absolute() else [*([Path(base_dir) / path] if base_dir else []), Path.cwd() / path]
    return next((c.resolve() for c in candidates if c.is_dir()), None)


def _offline_error(source: str, reason: str, file, key) -> HarnessError:
    choices = ", ".join(PACKAGED_PREFIX + n for n in PACKAGED)
    return HarnessError(
        f"model '{source}' is neither a local folder nor a packaged model, and the hub is unreachable ({reason})",
        file=file,
        key=key,
        fix=f"use one of {choices} or a local folder",
    )


def _from_hub(source: str, file, key) -> Path:
    """A hub snapshot: downloaded only when online; offline, only what the HF cache already holds."""
    offline = hub_offline()
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id=source, allow_patterns=_HUB_PATTERNS, local_files_only=offline))
    except Exception as exc:  # offline, unknown repo, gated, no network: all the same to a user
        reason = "offline" if offline else f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        raise _offline_error(source, reason, file, key) from None
    if not (folder / "config.json").is_file():
        raise HarnessError(
            f"hub model '{source}' has no config.json", file=file, key=key, fix="name a transformers checkpoint"
        )
    return folder


def resolve_model_dir(
    source: str, *, base_dir: Path | None = None, yaml_file: str | None = None, yaml_key: str | None = None
) -> Path:
    """The folder holding `source`: packaged:<name>, a local folder, or a hub id "org/name".

    A packaged GGUF model is converted on first use. A hub id is downloaded only when online.
    Errors are HarnessErrors naming yaml_file and yaml_key.
    """
    if source.startswith(PACKAGED_PREFIX):
        return _packaged_dir(source[len(PACKAGED_PREFIX) :], yaml_file, yaml_key)
    local = find_local(source, base_dir)
    if local is not None:
        if not (local / "config.json").is_file():
            raise HarnessError(
                f"model folder {local} has no config.json",
                file=yaml_file,
                key=yaml_key,
                fix="point at a transformers checkpoint folder",
            )
        return local
    if not _HUB_ID.match(source):  # a path that does not exist, not an "org/name" id
        where = f" (relative paths are read from {base_dir})" if base_dir else ""
        raise HarnessError(
            f"model folder '{source}' does not exist{where}",
            file=yaml_file,
            key=yaml_key,
            fix=f"use one of {', '.join(PACKAGED_PREFIX + n for n in PACKAGED)} or an existing folder",
        )
    return _from_hub(source, yaml_file, yaml_key)


def source_problem(source: str, *, base_dir: Path | None = None) -> tuple[str, str] | None:
    """(problem, fix) when a non-packaged source cannot be loaded, found without loading or
    downloading anything: a missing folder, a folder without config.json, a hub id that is neither
    cached nor reachable. None when it looks loadable."""
    local = find_local(source, base_dir)
    if local is not None:
        if not (local / "config.json").is_file():
            return f"model folder {local} has no config.json", "point at a transformers checkpoint folder"
        return None
    choices = ", ".join(PACKAGED_PREFIX + n for n in PACKAGED)
    if not _HUB_ID.match(source):
        where = f" (relative paths are read from {base_dir})" if base_dir else ""
        return f"model folder '{source}' does not exist{where}", f"use an existing folder or one of {choices}"
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(source, "config.json"), str):
        return None
    if hub_offline():
        return (
            f"'{source}' is no folder, and as a hub model it is not in the local Hugging Face cache "
            "and the hub is off (HF_HUB_OFFLINE)",
            f"download it once while online, or use a local folder or one of {choices}",
        )
    if not _hub_reachable():
        return (
            f"'{source}' is no folder, and as a hub model it is not in the local Hugging Face cache "
            "and the hub cannot be reached",
            f"download it once while online, or use a local folder or one of {choices}",
        )
    return None


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the hub answers at all (any HTTP status counts), in at most a few seconds."""
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(endpoint + "/api/whoami-v2", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


def _kind_from_config(config: dict) -> ModelKind | None:
    architectures = config.get("architectures") or []
    if any("CausalLM" in a or "LMHead" in a for a in architectures):
        return "causal_lm"
    return _KIND_BY_MODEL_TYPE.get(config.get("model_type", ""))


def _read_json(path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def infer_kind(source: str, *, base_dir: Path | None = None) -> ModelKind | None:
    """causal_lm or encoder from metadata only (no weights, no conversion, no network); None if unsure."""
    if source.startswith(PACKAGED_PREFIX):
        return _packaged(source[len(PACKAGED_PREFIX) :]).kind
    local = find_local(source, base_dir)
    config_path = local / "config.json" if local else None
    if config_path is None and _HUB_ID.match(source):  # a hub model already in the HF cache
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "config.json")
        config_path = cached if isinstance(cached, str) else None
    config = _read_json(config_path) if config_path else None
    return _kind_from_config(config) if config else None


def model_fingerprint(source: str, base_dir: Path | None = None) -> str:
    """A cheap identity for content hashes: no weights are read.

    packaged -> "packaged:<name>@<package version>"; local folder -> "local:" + sha256 of
    config.json and the names and sizes of weight and tokenizer files; else "hub:<id>".
    """
    if source.startswith(PACKAGED_PREFIX):
        entry = _packaged(source[len(PACKAGED_PREFIX) :])
        _require_package(entry)
        return f"{PACKAGED_PREFIX}{entry.name}@{_package_version(entry)}"
    local = find_local(source, base_dir)
    if local is None or not (local / "config.json").is_file():
        return f"hub:{source}"
    digest = hashlib.sha256((local / "config.json").read_bytes())
    files = sorted({f for pattern in _IDENTITY_GLOBS for f in local.glob(pattern) if f.is_file()})
    for f in files:
        digest.update(f"\0{f.name}:{f.stat().st_size}".encode())
    return f"local:{digest.hexdigest()[:16]}"
