"""The cpt stage: continual pretraining, the causal-LM loss on every token of unlabelled domain
text, packed into max_seq_len blocks (no padding), through the shared loop.

Its unit is tokens: each step reads batch_size full blocks, so a cpt stage of S steps consumes
exactly S x batch_size x max_seq_len tokens. `tokens:` sets the stage's steps from a token budget
(rounded up to whole steps); otherwise budget.stage_steps.cpt (default max_steps). Blocks are read
in the budget's seeded order, like examples, so every arm with the same corpus reads the same text.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field

from harness.plugins import Params
from harness.stages.registry import Stage, StageContext, StageOutcome, register_stage


@register_stage("cpt")
class ContinualPretraining(Stage):
    description = "continual pretraining: causal-LM loss on every token of packed unlabelled text"
    preference = False

    class Params(Params):
        corpus: str = Field(
            "corpus:aclsum-papers", description="corpus:<name>, a .txt/.jsonl file or a folder of .txt files"
        )
        tokens: int | None = Field(None, gt=0, description="token budget (sets the steps); default: the stage's steps")
        lr: float | None = Field(None, gt=0, description="learning rate; default: the arm's (method's) lr")

    def problem(self, params: dict, base_dir):
        from harness.data.corpus import source_problem

        found = source_problem(params.get("corpus") or self.Params().corpus, base_dir)
        return ("corpus", *found) if found else None

    def steps_for(self, params: Params, budget) -> int | None:
        if not params.tokens:
            return None
        return math.ceil(params.tokens / (budget.batch_size * budget.max_seq_len))

    def train(self, ctx: StageContext, params: Params) -> StageOutcome:
        from harness.data.corpus import iter_documents, pack
        from harness.errors import HarnessError
        from harness.training import loop

        block = ctx.budget.max_seq_len
        blocks = pack(ctx.tokenizer, iter_documents(params.corpus, ctx.base_dir, key="stages.cpt.corpus"), block)
        if not len(blocks):
            raise HarnessError(
                f"cpt corpus '{params.corpus}' holds less than one block of {block} tokens",
                key="stages.cpt.corpus",
                fix="give more text or lower budget.max_seq_len",
            )

        def make_batch(indices):
            ids = torch.from_numpy(np.stack([blocks[i] for i in indices])).long()  # rows of the memory map
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}, ids.numel()

        lr = params.lr if params.lr is not None else ctx.method_lr
        consumed, curve = loop.train(
            ctx.model,
            n_examples=len(blocks),
            ids=[f"block-{i}" for i in range(len(blocks))],
            make_batch=make_batch,
            budget=ctx.budget,
            lr=lr,
            on_step=ctx.on_step,
        )
        consumed.extra = {
            "unit": "tokens",
            "block_tokens": block,
            "corpus_blocks": len(blocks),
            "corpus_epochs": round(consumed.examples / len(blocks), 3),
        }
        return StageOutcome(consumed, {"cpt_loss": curve})
