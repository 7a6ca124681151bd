"""The one training loop, for every method and for multi-task arms, on accelerate.

Hand-written (like peft's method comparison) so nothing about it differs between methods:
AdamW, warmup + schedule, gradient accumulation, clipping, budget stops, the seeded example
order and the consumed-budget record. accelerate supplies what one device lacks: mixed
precision (harness.training.mixed_precision), DDP across the arm's devices (harness.training.distributed)
and the fp16 loss scaler. FSDP is torch's FSDP2, applied here (harness.training.fsdp); activation
checkpointing is transformers' (harness.training.activations). Checkpoints
(harness.training.checkpoint, sharded under FSDP: harness.training.sharded_checkpoint) let a
killed arm go on from its last one.

Several example streams (tasks) share the loop; `next_batch(step) -> (stream, its step)` says
which one feeds each optimizer step (round-robin by default; one stream for a single-task arm).

Gradient accumulation and devices never change what a step computes: the loss of a step is
summed over its micro-batches and ranks and divided by the step's target items (tokens for SFT,
as transformers' `num_items_in_batch`; examples for a classification head), so 1 x batch 8 and
4 x batch 2, on one device or two, give the same gradient.
"""

from __future__ import annotations

import gc
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness.config.schema import Budget
from harness.data.order import example_order, order_digest
from harness.training import checkpoint, fsdp, sharded_checkpoint
from harness.training.activations import enable_activation_checkpointing
from harness.training.consumed import Consumed
from harness.training.distributed import all_ranks_max, all_ranks_sum, gather_from_ranks, make_accelerator, release
from harness.training.fsdp import plain_skeleton
from harness.training.mixed_precision import resolve_precision, upcast_trainable

# make_batch(indices) -> (tensors for model(**batch) including labels, trained-on token count)
MakeBatch = Callable[[list[int]], tuple[dict, int]]
OnStep = Callable[[int, int, float], None]


def examples_in(tensors: dict) -> int:
    """Items a head's loss averages over: one per example (classification, extractive QA)."""
    return int(next(iter(tensors.values())).shape[0])


@dataclass
class Stream:
    """One task's examples as the loop reads them."""

    make_batch: MakeBatch
    ids: list[str]
    loss_items: Callable[[dict], int] = examples_in  # what the model's mean loss divides by, per batch
    weight: float = 1.0  # multi-task loss weight
    forward_kwargs: dict = field(default_factory=dict)  # e.g. {"task": key} for a MultiTaskModel


def round_robin(keys: list[str]) -> Callable[[int], tuple[str, int]]:
    """Stream t feeds steps t, t+n, t+2n...; each stream's own step counts from 0."""
    return lambda step: (keys[step % len(keys)], step // len(keys))


def train(
    model,
    *,
    n_examples: int,
    ids: list[str],
    make_batch: MakeBatch,
    budget: Budget,
    lr: float,
    on_step: OnStep | None = None,
    loss_items: Callable[[dict], int] = examples_in,
    checkpoint_dir: Path | None = None,
) -> tuple[Consumed, list[list[float]]]:
    """A single-task arm: one stream."""
    assert n_examples == len(ids)
    consumed, curves = train_streams(
        model, {"": Stream(make_batch, ids, loss_items)}, budget, lr=lr, on_step=on_step, checkpoint_dir=checkpoint_dir
    )
    return consumed[""], curves[""]


def train_streams(
    model,
    streams: dict[str, Stream],
    budget: Budget,
    *,
    lr: float,
    param_groups=None,
    on_step: OnStep | None = None,
    checkpoint_dir: Path | None = None,
    next_batch: Callable[[int], tuple[str, int]] | None = None,
):
    """Train `model` for budget.max_steps optimizer steps per stream. Returns (consumed, curves),
    each keyed by stream. On a rank other than 0 of a multi-device arm the same, for the caller
    to drop (only rank 0 evaluates and writes)."""
    start = time.perf_counter()  # time_limit_s holds from here, set-up (accelerator, optimizer) included
    import torch

    keys = list(streams)
    steps, batch, accum = budget.max_steps, budget.batch_size, budget.grad_accum
    micro, total = batch // accum, steps * len(keys)
    next_batch = next_batch or round_robin(keys)
    orders = {k: example_order(len(s.ids), steps * batch, budget.seed) for k, s in streams.items()}
    accelerator = make_accelerator(budget)
    world, rank = accelerator.num_processes, accelerator.process_index
    if micro % world:
        raise RuntimeError(f"a micro-batch of {micro} examples cannot be split over {world} devices")
    share = micro // world

    if budget.gradient_checkpointing:
        enable_activation_checkpointing(model)  # per block, before sharding wraps the blocks
    sharded = budget.strategy == "fsdp"  # FSDP2 at any world size, 1 included: the same code path
    skeleton, layout = None, None
    if sharded:
        if param_groups is not None:
            raise RuntimeError("FSDP shards one model's parameters; an arm with parameter groups uses ddp")
        skeleton = plain_skeleton(model) if rank == 0 else None  # what rank 0 evaluates after training
        layout = fsdp.shard(model, resolve_precision(budget.precision))  # rank 0's weights to every shard
    else:
        upcast_trainable(model)  # fp32 master weights whatever the dtype the base was loaded in
    groups = param_groups if param_groups is not None else [p for p in model.parameters() if p.requires_grad]
    if not groups:
        raise RuntimeError("the method left no trainable parameters")
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=budget.weight_decay)
    # The scheduler stays unprepared: a prepared one steps once per process (ANCHORS).
    scheduler = _scheduler(optimizer, budget, total)

    consumed = {k: Consumed(planned_steps=steps) for k in keys}
    curves: dict[str, list] = {k: [] for k in keys}
    first_step, seconds_before = 0, 0.0
    every = checkpoint.interval(budget, total) if checkpoint_dir else 0
    checkpoints = {"written": 0, "seconds": 0.0, "mb": 0.0}  # their cost, reported for FSDP arms
    saved = None
    if checkpoint_dir and sharded:
        saved = sharded_checkpoint.load_latest(checkpoint_dir, world)
    elif checkpoint_dir:
        saved = checkpoint.load_latest(checkpoint_dir, fits=lambda s: _mismatch(s, model))
    if saved:
        first_step, seconds_before = _restore(saved, model, optimizer, scheduler, consumed, curves, rank, sharded)
    trained = {k: [streams[k].ids[i] for i in orders[k][: consumed[k].examples]] for k in keys}

    if world > 1 and not sharded:  # DDP: the wrapped model syncs gradients; `model` stays the plain module
        wrapped, optimizer = accelerator.prepare(model, optimizer)
    else:  # one device, or FSDP: the sharded model reduce-scatters its own gradients
        wrapped, optimizer = model, accelerator.prepare(optimizer)
    if saved and saved.get("scaler") and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(saved["scaler"])
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    wrapped.train()
    for step in range(first_step, total):
        key, task_step = next_batch(step)
        stream, t0 = streams[key], time.perf_counter()
        micro_batches = []
        for m in range(accum):
            first = (task_step * accum + m) * micro
            indices = orders[key][first : first + micro]
            tensors, tokens = stream.make_batch(indices[rank * share : (rank + 1) * share])  # this rank's share
            micro_batches.append((tensors, stream.loss_items(tensors), tokens))
            consumed[key].examples += len(indices)
            trained[key].extend(stream.ids[i] for i in indices)
        items, tokens = all_ranks_sum(accelerator, [sum(b[1] for b in micro_batches), sum(b[2] for b in micro_batches)])
        if items == 0:
            raise RuntimeError(f"step {step + 1} has no target tokens left after truncation; raise budget.max_seq_len")
        consumed[key].tokens += int(tokens)
        step_loss = backward_step(
            accelerator, wrapped, stream, [(t, n) for t, n, _ in micro_batches], items, sync_each=sharded
        )
        step_loss = all_ranks_sum(accelerator, [step_loss])[0] if world > 1 else step_loss
        if not math.isfinite(step_loss):
            where = f"of task '{key}' " if len(keys) > 1 else ""
            raise RuntimeError(
                f"training loss {where}became {step_loss} at step {task_step + 1}; lower the learning rate"
            )
        accelerator.clip_grad_norm_(trainable, budget.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        consumed[key].steps = task_step + 1
        consumed[key].seconds += time.perf_counter() - t0
        curves[key].append([task_step + 1, round(step_loss, 6)])  # unweighted, comparable with single-task
        if on_step:
            on_step(step + 1, total, step_loss)
        elapsed = seconds_before + time.perf_counter() - start
        if budget.time_limit_s and world > 1:
            elapsed = all_ranks_max(accelerator, elapsed)  # every rank stops at the same step
        reason = _stop_reason(consumed[key], budget, elapsed)
        if reason and step + 1 < total:
            for c in consumed.values():
                c.stopped_early, c.stop_reason = True, reason
            break
        if every and (step + 1) % every == 0 and step + 1 < total:
            seconds = seconds_before + time.perf_counter() - start
            cost = _save(checkpoint_dir, step + 1, accelerator, model, optimizer, scheduler, consumed, curves, seconds)
            if cost:
                checkpoints = {"written": checkpoints["written"] + 1, **{k: checkpoints[k] + cost[k] for k in cost}}
    if wrapped is not model:
        # Free the DDP wrapper while its process group lives. Freed after destroy_process_group
        # (when this function returns), the group's last reference goes with the wrapper and its
        # destructor joins a gloo thread that waits for the GIL the joining thread holds: rank 0
        # hung for good after training, now and then (seen twice in one test run).
        accelerator.free_memory()  # accelerate's references to the wrapper
        del wrapped
        gc.collect()  # a module with hooks sits in reference cycles: freed only by a collection
    for key in keys:
        consumed[key].seconds = round(consumed[key].seconds, 3)
        consumed[key].order_hash = order_digest(trained[key])
    if sharded or world > 1:
        ranks = gather_from_ranks(accelerator, fsdp.rank_report(model, optimizer, layout))
        for c in consumed.values():
            c.extra["devices"] = {"world_size": world, "strategy": budget.strategy, "ranks": ranks}
            if sharded and checkpoints["written"]:
                c.extra["devices"]["checkpoints"] = {k: round(v, 3) for k, v in checkpoints.items()}
    if sharded:
        fsdp.gather(model, skeleton, accelerator.device)  # before the group goes: evaluation needs it
    release()
    model.eval()
    return consumed, curves


def backward_step(
    accelerator, wrapped, stream: Stream, micro_batches: list[tuple[dict, int]], items: float, sync_each: bool = False
) -> float:
    """Forward and backward over one optimizer step's micro-batches (this rank's), gradients
    normalised by the step's `items` over all micro-batches and ranks. Returns this rank's part of
    the step's loss (the ranks' parts add up to the step's loss). DDP syncs once per step (no_sync
    on the others: it keeps full-size gradients anyway); FSDP (`sync_each`) reduce-scatters every
    micro-batch, so only gradient shards accumulate."""
    world, step_loss = accelerator.num_processes, 0.0
    for m, (tensors, n_items) in enumerate(micro_batches):
        last = m == len(micro_batches) - 1
        with nullcontext() if last or world == 1 or sync_each else accelerator.no_sync(wrapped):
            with accelerator.autocast():
                loss = wrapped(
                    **stream.forward_kwargs, **{k: v.to(accelerator.device) for k, v in tensors.items()}
                ).loss
            # The model's loss is a mean over this micro-batch's n_items; weigh it by its share of
            # the step's items. DDP and FSDP average gradients over ranks, hence x world.
            share_of_step = n_items / items
            accelerator.backward(loss * (share_of_step * world) * stream.weight)
            step_loss += loss.item() * share_of_step
    return step_loss


class BatcherObjective:
    """An objective that is only a way of making batches: `batcher(...)` returns make_batch, and
    training is the shared loop over the task's examples."""

    loss_items = staticmethod(examples_in)

    def batcher(self, tokenizer, train: list[dict], task: dict, budget: Budget) -> MakeBatch:
        raise NotImplementedError

    def train(
        self,
        model,
        tokenizer,
        examples: list[dict],
        task: dict,
        budget: Budget,
        lr: float,
        on_step=None,
        checkpoint_dir: Path | None = None,
    ):
        return train(
            model,
            n_examples=len(examples),
            ids=[e["id"] for e in examples],
            make_batch=self.batcher(tokenizer, examples, task, budget),
            budget=budget,
            lr=lr,
            on_step=on_step,
            loss_items=self.loss_items,
            checkpoint_dir=checkpoint_dir,
        )


def _save(folder, step, accelerator, model, optimizer, scheduler, consumed, curves, seconds) -> dict | None:
    """Write checkpoint `step`: one file from rank 0, or under FSDP every rank's shards (DCP).
    Returns the sharded checkpoint's cost (seconds, MB), else None."""
    blobs = gather_from_ranks(accelerator, checkpoint.rng_state_bytes())  # a collective: every rank calls it
    rank = accelerator.process_index
    payload = {
        "scheduler": scheduler.state_dict(),
        "rng": [checkpoint.rng_state_from_bytes(blob) for blob in blobs] if rank == 0 else [],
        "seconds": seconds,
        "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
        "consumed": {k: c.to_dict() for k, c in consumed.items()},
        "curves": curves,
        "world_size": accelerator.num_processes,
    }
    if fsdp.is_sharded(model):
        return sharded_checkpoint.save(folder, step, model, optimizer, payload, rank)
    if rank == 0:
        trainable = {"trainable": checkpoint.trainable_state(model), "optimizer": optimizer.state_dict()}
        checkpoint.save(folder, step, {**trainable, **payload})
    return None


def _mismatch(saved: dict, model) -> str | None:
    """What makes a readable checkpoint another arm's: trainable weights of other names or shapes."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    weights = saved["trainable"]
    if not isinstance(weights, dict) or set(weights) != set(params):
        return "its trainable weights are not this model's"
    for name, value in weights.items():
        if getattr(value, "shape", None) != params[name].shape:
            return f"weight {name} has another shape than the model's {tuple(params[name].shape)}"
    return None


def _restore(saved: dict, model, optimizer, scheduler, consumed, curves, rank: int, sharded: bool) -> tuple[int, float]:
    """Load a checkpoint into the loop's objects; returns (first step, seconds already trained)."""
    import torch

    if sharded:
        sharded_checkpoint.restore(saved["path"], model, optimizer)
    else:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in saved["trainable"].items():
                params[name].copy_(value)
        optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    checkpoint.set_rng_state(saved["rng"][rank])
    for key, record in saved["consumed"].items():
        consumed[key] = Consumed(**record)
        consumed[key].extra["resumed_from_step"] = saved["step"]
    curves.update(saved["curves"])
    return saved["step"], saved["seconds"]


def _stop_reason(consumed: Consumed, budget: Budget, elapsed: float) -> str | None:
    if budget.max_train_tokens and consumed.tokens >= budget.max_train_tokens:
        return f"max_train_tokens {budget.max_train_tokens} reached"
    if budget.time_limit_s and elapsed >= budget.time_limit_s:
        return f"time_limit_s {budget.time_limit_s} reached"
    return None


def _scheduler(optimizer, budget: Budget, total_steps: int):
    """Warmup then the schedule over all the loop's optimizer steps (n x max_steps for n tasks)."""
    from transformers import get_scheduler

    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[budget.lr_schedule]
    warmup = int(budget.warmup_ratio * total_steps)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
