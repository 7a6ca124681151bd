"""Joint training of a MultiTaskModel: batches interleaved round-robin over the tasks (task t at
steps t, t+n, t+2n, ...), max_steps per task (n x max_steps optimizer steps in all), each task's
loss times its weight. Each task draws its examples from budget.example_order exactly as its
single-task arm does, so per task the examples, their order (order hash) and the trained-on
tokens match that arm's; the budget audit compares them per task."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from harness.config.schema import Budget
from harness.data.order import example_order, order_digest
from harness.training.consumed import Consumed
from harness.training.loop import _scheduler, _stop_reason


@dataclass
class TaskData:
    make_batch: Callable   # indices -> (tensors, trained-on tokens), the single-task objective's batcher
    ids: list[str]


def train(model, data: dict[str, TaskData], budget: Budget, *, lr: float, head_lr, loss_weights: dict,
          on_step=None) -> tuple[dict[str, Consumed], dict[str, list]]:
    keys = list(data)
    steps, batch, accum = budget.max_steps, budget.batch_size, budget.grad_accum
    micro, total = batch // accum, steps * len(keys)
    orders = {k: example_order(len(data[k].ids), steps * batch, budget.seed) for k in keys}
    optimizer = torch.optim.AdamW(model.param_groups(lr, head_lr), weight_decay=budget.weight_decay)
    scheduler = _scheduler(optimizer, budget.model_copy(update={"max_steps": total}))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    device = next(model.parameters()).device
    consumed = {k: Consumed(planned_steps=steps) for k in keys}
    curves: dict[str, list] = {k: [] for k in keys}
    trained: dict[str, list[str]] = {k: [] for k in keys}
    model.train()
    start = time.perf_counter()
    for step in range(total):
        key, task_step = keys[step % len(keys)], step // len(keys)
        weight, t0, step_loss = float(loss_weights.get(key, 1.0)), time.perf_counter(), 0.0
        for m in range(accum):
            indices = orders[key][(task_step * accum + m) * micro:(task_step * accum + m + 1) * micro]
            tensors, tokens = data[key].make_batch(indices)
            loss = model(task=key, **{k: v.to(device) for k, v in tensors.items()}).loss / accum
            (loss * weight).backward()
            step_loss += loss.item()
            consumed[key].examples += len(indices)
            consumed[key].tokens += tokens
            trained[key].extend(data[key].ids[i] for i in indices)
        if not math.isfinite(step_loss):
            raise RuntimeError(f"training loss of task '{key}' became {step_loss} at its step {task_step + 1}; "
                               "lower the learning rate")
        torch.nn.utils.clip_grad_norm_(params, budget.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        consumed[key].steps = task_step + 1
        consumed[key].seconds += time.perf_counter() - t0
        curves[key].append([task_step + 1, round(step_loss, 6)])  # unweighted, comparable with single-task
        if on_step:
            on_step(step + 1, total, step_loss)
        reason = _stop_reason(consumed[key], budget, time.perf_counter() - start)
        if reason and step + 1 < total:
            for c in consumed.values():
                c.stopped_early, c.stop_reason = True, reason
            break
    for key in keys:
        consumed[key].seconds = round(consumed[key].seconds, 3)
        consumed[key].order_hash = order_digest(trained[key])
    model.eval()
    return consumed, curves


class MultiTaskObjective:
    """Named so that `objective != "none"` reads right; harness.execution.multi_task calls `train` above."""

    train = staticmethod(train)
