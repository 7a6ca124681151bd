"""The rft stage: rejection-sampling (reward-filtered) fine-tuning. Each round samples `samples`
completions per training prompt from the current model, scores them with reward plugins (summed,
as in grpo), keeps the best completion of each prompt when it reaches `threshold`, and trains on
the kept ones with the SFT loss (completion tokens only) in the shared loop; `rounds` times.

Budget: the stage's steps (budget.stage_steps.rft, default max_steps) are its SFT optimizer steps,
split evenly over the rounds, so consumed.steps is matched against other arms like any stage.
Sampling is not free and is counted too: consumed.extra holds per round the prompts, completions
sampled, tokens generated and completions kept (and generated_tokens for the stage), and
consumed.seconds includes the sampling time. consumed.tokens is the trained-on tokens, as for
sft. A round where no completion reaches the threshold trains nothing and the stage is marked
stopped early (the audit then shows it). Every sampled completion and its reward is written to
rft_round<r>.jsonl in the stage's work folder.
"""

from __future__ import annotations

import json
import time

from pydantic import Field, field_validator

from harness.plugins import Params
from harness.stages.registry import Stage, StageContext, StageOutcome, register_stage
from harness.stages.rewards import rewards_list


def best_above(scores: list[float], threshold: float) -> int | None:
    """Index of the best score (the first on ties) when it reaches the threshold, else None."""
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return best if scores[best] >= threshold else None


@register_stage("rft")
class RFT(Stage):
    description = "rejection-sampling fine-tuning: sample, keep the best completion above a threshold, SFT on it"
    preference = False

    class Params(Params):
        lr: float | None = Field(None, gt=0, description="learning rate; default: the arm's (method's) lr")
        rounds: int = Field(1, ge=1, description="sample-filter-train rounds; the stage's steps split over them")
        samples: int = Field(4, ge=1, description="completions sampled per prompt")
        threshold: float = Field(1.0, description="the best completion is kept only when its reward reaches this")
        prompts: int | None = Field(None, gt=0, description="prompts per round; default: the round's steps x batch")
        rewards: list[str | dict] = Field(
            ["label_correct"], min_length=1, description="reward plugins summed per completion, as in grpo"
        )

        @field_validator("rewards", mode="before")
        @classmethod
        def _rewards(cls, value):
            return rewards_list(value)

    def train(self, ctx: StageContext, params: Params) -> StageOutcome:
        from harness.data.order import order_digest
        from harness.stages.rewards import build_rewards
        from harness.training.consumed import Consumed

        start = time.perf_counter()
        rounds = params.rounds
        steps = [ctx.steps // rounds + (r < ctx.steps % rounds) for r in range(rounds)]
        per_round = [params.prompts or max(s, 1) * ctx.budget.batch_size for s in steps]
        items = ctx.pairs(sum(per_round))
        rewards = build_rewards(params.rewards, ctx)
        lr = params.lr if params.lr is not None else ctx.method_lr
        total = Consumed(planned_steps=ctx.steps)
        curves, rounds_done, hashes, sampled_rewards, kept_count = {"rft_loss": []}, [], [], [], 0
        for r, (round_steps, count) in enumerate(zip(steps, per_round)):
            prompts = items[sum(per_round[:r]) : sum(per_round[:r]) + count]
            samples = sample(ctx, prompts, params.samples, seed=ctx.budget.seed + r)
            kept, log = [], []
            for item, group in zip(prompts, samples):
                texts = [s["text"] for s in group]
                scores = [0.0] * len(texts)
                for _, reward in rewards:
                    n = len(texts)
                    got = reward.score(texts, [item["prompt"]] * n, [item["target"]] * n, [item["labels"]] * n)
                    scores = [a + float(b) for a, b in zip(scores, got)]
                best = best_above(scores, params.threshold)
                sampled_rewards += scores
                log.append({"id": item["id"], "completions": texts, "rewards": scores, "kept": best})
                if best is not None:
                    kept.append((f"{item['id']}:r{r}", group[best]["prompt_ids"], group[best]["ids"]))
            write_log(ctx, r, log)
            kept_count += len(kept)
            record = {
                "round": r,
                "prompts": len(prompts),
                "sampled": sum(len(g) for g in samples),
                "generated_tokens": sum(len(s["ids"]) for g in samples for s in g),
                "kept": len(kept),
            }
            rounds_done.append(record)
            if not kept or not round_steps:
                if round_steps:
                    total.stopped_early = True
                    total.stop_reason = total.stop_reason or f"round {r}: no completion reached the threshold"
                continue
            consumed, curve = fine_tune(ctx, kept, round_steps, lr, offset=total.steps)
            curves["rft_loss"] += curve
            hashes.append(consumed.order_hash)
            total.steps += consumed.steps
            total.examples += consumed.examples
            total.tokens += consumed.tokens
        total.seconds = round(time.perf_counter() - start, 3)
        total.order_hash = order_digest(hashes)
        total.extra = {
            "unit": "sft steps",
            "rounds": rounds_done,
            "generated_tokens": sum(r["generated_tokens"] for r in rounds_done),
            "sampled": sum(r["sampled"] for r in rounds_done),
        }
        prompts_seen = sum(r["prompts"] for r in rounds_done)
        metrics = {
            "rft_kept_fraction": round(kept_count / prompts_seen, 6) if prompts_seen else None,
            "rft_mean_reward": round(sum(sampled_rewards) / len(sampled_rewards), 6) if sampled_rewards else None,
        }
        return StageOutcome(total, curves, metrics)


def sample(ctx: StageContext, prompts: list[dict], n: int, *, seed: int) -> list[list[dict]]:
    """n sampled completions per prompt (budget.alignment: temperature, max_completion_len), in
    batches of eval_batch_size prompts with left padding; each completion's token ids end at
    (and include) its first end-of-sequence token."""
    import torch

    from harness.data.encoding import left_padded
    from harness.data.formatting import PromptFormatter
    from harness.eval.predict import generated_lengths

    tok, knobs = ctx.tokenizer, ctx.budget.alignment
    chat = PromptFormatter(tok, ctx.task).chat  # a chat template writes its own BOS
    room = max(ctx.budget.max_seq_len - knobs.max_completion_len, 1)
    device = next(ctx.model.parameters()).device
    torch.manual_seed(seed)
    ctx.model.eval()
    out = []
    size = ctx.budget.eval_batch_size
    for start in range(0, len(prompts), size):
        texts = [p["prompt"] for p in prompts[start : start + size]]
        batch = [tok(text, add_special_tokens=not chat)["input_ids"][-room:] for text in texts]
        ids, mask = left_padded(batch, tok.pad_token_id, device)
        width = ids.shape[1]
        with torch.no_grad():
            generated = ctx.model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=knobs.temperature,
                top_k=0,
                max_new_tokens=knobs.max_completion_len,
                num_return_sequences=n,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )[:, width:]
        lengths = generated_lengths(generated, tok.eos_token_id)
        rows = generated.tolist()
        for i, prompt_ids in enumerate(batch):
            group = []
            for j in range(i * n, (i + 1) * n):
                completion = rows[j][: lengths[j]]
                text = tok.decode(completion, skip_special_tokens=True).strip()
                group.append({"prompt_ids": prompt_ids, "ids": completion, "text": text})
            out.append(group)
    return out


def fine_tune(ctx: StageContext, kept: list[tuple[str, list[int], list[int]]], steps: int, lr: float, offset: int):
    """The SFT loss (completion tokens only) on the kept completions, in the shared loop."""
    from harness.data.encoding import pad_batch
    from harness.training import loop
    from harness.training.sft import predicted_tokens

    max_len = ctx.budget.max_seq_len

    def make_batch(indices):
        rows = [(kept[i][1][-max(max_len - len(kept[i][2]), 1) :], kept[i][2]) for i in indices]
        return pad_batch(rows, ctx.tokenizer.pad_token_id)

    on_step = (lambda s, t, loss: ctx.on_step(offset + s, ctx.steps, loss)) if ctx.on_step else None
    consumed, curve = loop.train(
        ctx.model,
        n_examples=len(kept),
        ids=[k[0] for k in kept],
        make_batch=make_batch,
        budget=ctx.budget.model_copy(update={"max_steps": steps}),
        lr=lr,
        on_step=on_step,
        loss_items=predicted_tokens,
    )
    return consumed, [[offset + step, loss] for step, loss in curve]


def write_log(ctx: StageContext, round_index: int, log: list[dict]) -> None:
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    with open(ctx.work_dir / f"rft_round{round_index}.jsonl", "w", encoding="utf-8") as fh:
        for row in log:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
