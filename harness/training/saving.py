"""Keeping what a full fine-tune trained (`budget.save: full`): its weights as sharded safetensors
with its config and tokenizer, a folder `transformers.from_pretrained` loads (and the gate can
score as a candidate). Written by rank 0 from the plain model evaluation uses, which under FSDP
is the full state gathered from every rank (harness.training.fsdp).

The default is `none`: a 7B full fine-tune is 27 GiB in fp32 (its master weights), per arm and per
seed; adapters, a few MiB, are always kept by their method. Ask for `full` for the arms worth it.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = "model"
MAX_SHARD = "5GB"  # several files for a 7B model, one for a small one


def save_full_model(model, tokenizer, out_dir: Path) -> Path:
    path = out_dir / FOLDER
    model.save_pretrained(path, max_shard_size=MAX_SHARD)  # safetensors, the transformers default
    tokenizer.save_pretrained(path)
    return path
