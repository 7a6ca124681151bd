"""The one training loop (hand-written, like peft's method comparison, so nothing about it
differs between methods): AdamW, warmup + schedule, grad accumulation, clipping, budget stops."""

from __future__ import annotations

import math
import time
from typing import Callable

import torch

from harness.config.schema import Budget
from harness.data.order import example_order, order_digest
from harness.training.consumed import Consumed

# make_batch(indices) -> (tensors for model(**batch) including labels, trained-on token count)
MakeBatch = Callable[[list[int]], tuple[dict, int]]
OnStep = Callable[[int, int, float], None]


def train(model, *, n_examples: int, ids: list[str], make_batch: MakeBatch, budget: Budget, lr: float,
          on_step: OnStep | None = None) -> tuple[Consumed, list[list[float]]]:
    start = time.perf_counter()  # time_limit_s holds from here, set-up included
    steps, batch, accum = budget.max_steps, budget.batch_size, budget.grad_accum
    micro = batch // accum
    order = example_order(n_examples, steps * batch, budget.seed)  # lazy: nothing built up front
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise RuntimeError("the method left no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=budget.weight_decay)
    scheduler = _scheduler(optimizer, budget)
    device = next(model.parameters()).device
    consumed = Consumed(planned_steps=steps)
    curve: list[list[float]] = []
    trained_ids: list[str] = []
    model.train()
    for step in range(steps):
        step_loss = 0.0
        for m in range(accum):
            indices = order[(step * accum + m) * micro:(step * accum + m + 1) * micro]
            tensors, tokens = make_batch(indices)
            tensors = {k: v.to(device) for k, v in tensors.items()}
            loss = model(**tensors).loss / accum
            loss.backward()
            step_loss += loss.item()
            consumed.examples += len(indices)
            consumed.tokens += tokens
            trained_ids.extend(ids[i] for i in indices)
        if not math.isfinite(step_loss):
            raise RuntimeError(f"training loss became {step_loss} at step {step + 1}; lower the learning rate")
        torch.nn.utils.clip_grad_norm_(params, budget.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        consumed.steps = step + 1
        curve.append([step + 1, round(step_loss, 6)])
        if on_step:
            on_step(step + 1, steps, step_loss)
        reason = _stop_reason(consumed, budget, time.perf_counter() - start)
        if reason and consumed.steps < steps:
            consumed.stopped_early, consumed.stop_reason = True, reason
            break
    consumed.seconds = round(time.perf_counter() - start, 3)
    consumed.order_hash = order_digest(trained_ids)
    model.eval()
    return consumed, curve


class BatcherObjective:
    """An objective that is only a way of making batches: `batcher(...)` returns make_batch, and
    training is the shared loop over the task's examples."""

    def batcher(self, tokenizer, train: list[dict], task: dict, budget: Budget) -> MakeBatch:
        raise NotImplementedError

    def train(self, model, tokenizer, examples: list[dict], task: dict, budget: Budget, lr: float, on_step=None):
        return train(model, n_examples=len(examples), ids=[e["id"] for e in examples],
                     make_batch=self.batcher(tokenizer, examples, task, budget), budget=budget, lr=lr, on_step=on_step)


def _stop_reason(consumed: Consumed, budget: Budget, elapsed: float) -> str | None:
    if budget.max_train_tokens and consumed.tokens >= budget.max_train_tokens:
        return f"max_train_tokens {budget.max_train_tokens} reached"
    if budget.time_limit_s and elapsed >= budget.time_limit_s:
        return f"time_limit_s {budget.time_limit_s} reached"
    return None


def _scheduler(optimizer, budget: Budget):
    from transformers import get_scheduler

    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[budget.lr_schedule]
    warmup = int(budget.warmup_ratio * budget.max_steps)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=budget.max_steps)
