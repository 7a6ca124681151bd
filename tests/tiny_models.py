"""Tiny models built from configs in about a second, so tests need no download.

Not a test file: tests and conftest import `build_tiny_models(root)`. The models are random
(seeded), but real in every other way: a trained tokenizer, a chat template, safetensors, and
config.json files that harness.models reads like any checkpoint's.
"""

from __future__ import annotations

import itertools
from pathlib import Path

# The label words the classification tests use; they must be whole tokens in both vocabularies.
LABEL_WORDS = ("positive", "negative")

# Turns end in "</s>" (the eos), like SmolLM2's end in <|im_end|>, so generation stops on eos.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '</s>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

_SUBJECTS = ["the movie", "this film", "the plot", "the acting", "the ending", "the music", "the story", "the cast"]
_GOOD = ["good", "great", "wonderful", "excellent", "fun", "moving"]
_BAD = ["bad", "terrible", "boring", "awful", "dull", "weak"]
_FRAMES = ["{s} was {a}.", "i think {s} is {a}.", "honestly, {s} felt {a}!", "{s} is so {a}"]


def corpus() -> list[str]:
    """A few hundred short review-like sentences with their labels, generated, never downloaded."""
    lines = []
    for (words, label), subject, frame in itertools.product(
        [(_GOOD, "positive"), (_BAD, "negative")], _SUBJECTS, _FRAMES
    ):
        for adjective in words:
            text = frame.format(s=subject, a=adjective)
            lines.append(f"review: {text} sentiment: {label}")
    return lines + ["What is the capital of France? Paris is the capital of France."]


def _llama_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]  # ids 0..3, in this order
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
    )


def _bert_tokenizer():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    # Without this post-processor the encoder would never see [CLS], which its pooler reads.
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )


def build_tiny_llama(out: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _llama_tokenizer()
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tok),
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_tiny_bert(out: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    tok = _bert_tokenizer()
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    # A bare BertModel, like a real base checkpoint (and like packaged:minilm-l6): a
    # classification head is then new when harness loads it with num_labels.
    BertModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_tiny_models(root: Path) -> dict[str, Path]:
    """Build {"llama": root/tiny-llama, "bert": root/tiny-bert}; reuses folders already built."""
    root = Path(root)
    builders = {"llama": (build_tiny_llama, root / "tiny-llama"), "bert": (build_tiny_bert, root / "tiny-bert")}
    out = {}
    for name, (build, folder) in builders.items():
        if not (folder / "config.json").exists():
            build(folder)
        out[name] = folder
    return out


def write_tiny_gguf(model_dir: Path, gguf_path: Path) -> Path:
    """Write a tiny Llama folder as a GGUF file (F32, llama.cpp's tensor names and layout).

    This is what `convert_hf_to_gguf.py` would write, reduced to what transformers reads back, so
    harness's GGUF conversion can be tested without the 98 MB packaged file.
    """
    import json

    import gguf
    import numpy as np
    import torch
    from safetensors.torch import load_file

    config = json.loads((Path(model_dir) / "config.json").read_text())
    tok = json.loads((Path(model_dir) / "tokenizer.json").read_text())
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config["hidden_size"] // n_head

    writer = gguf.GGUFWriter(str(gguf_path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.get("rope_theta") or config["rope_parameters"]["rope_theta"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])

    # Byte-level BPE is llama.cpp's "gpt2" tokenizer model; added tokens are CONTROL tokens.
    vocab = tok["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    special = {t["content"] for t in tok["added_tokens"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
    for add, key in [
        (writer.add_bos_token_id, "bos_token_id"),
        (writer.add_eos_token_id, "eos_token_id"),
        (writer.add_pad_token_id, "pad_token_id"),
    ]:
        add(config[key])
    writer.add_chat_template(CHAT_TEMPLATE)

    def permute(w: np.ndarray, heads: int) -> np.ndarray:
        # llama.cpp stores q/k rows interleaved for its rope; transformers undoes exactly this.
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    weights = load_file(str(Path(model_dir) / "model.safetensors"))
    for hf_name, tensor in weights.items():
        base, suffix = hf_name.rsplit(".", 1)
        data = tensor.to(torch.float32).numpy()
        if base.endswith("q_proj"):
            data = permute(data, n_head)
        elif base.endswith("k_proj"):
            data = permute(data, n_kv)
        writer.add_tensor(f"{names.get_name(base)}.{suffix}", np.ascontiguousarray(data))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return gguf_path
