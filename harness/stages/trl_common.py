"""What the TRL-based stages share: one TrainingArguments recipe from the budget, the example
order (the same seeded order for every arm, fed sequentially), progress through on_step, the
frozen reference, and what a stage consumed."""

from __future__ import annotations

import copy
import math
import os
import time

from transformers import TrainerCallback

from harness.data.order import order_digest
from harness.training.consumed import Consumed

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


def trl_args(config_cls, ctx, lr: float, *, per_device: int | None = None, accum: int | None = None, **extra):
    """A TRL config from the budget: fp32 on CPU, no saving, no reporting, logged every step."""
    import torch

    b = ctx.budget
    return config_cls(
        output_dir=str(ctx.work_dir),
        max_steps=ctx.steps,
        learning_rate=lr,
        per_device_train_batch_size=per_device or b.batch_size // b.grad_accum,
        gradient_accumulation_steps=accum or b.grad_accum,
        lr_scheduler_type=SCHEDULES[b.lr_schedule],
        warmup_steps=int(b.warmup_ratio * ctx.steps),
        weight_decay=b.weight_decay,
        max_grad_norm=b.max_grad_norm,
        seed=b.seed,
        data_seed=b.seed,
        bf16=False,
        fp16=False,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
        **extra,
    )


class Progress(TrainerCallback):
    """Forwards each logged step to the runner's on_step and keeps the curves of the stage."""

    def __init__(self, name: str, on_step, keys: dict[str, str]):
        self.name, self.on_step, self.keys = name, on_step, keys  # keys: trainer log key -> curve name
        self.curves: dict[str, list] = {curve: [] for curve in keys.values()}

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        for key, curve in self.keys.items():
            if key in logs and isinstance(logs[key], (int, float)):
                self.curves[curve].append([state.global_step, round(float(logs[key]), 6)])
        if "loss" in logs:
            loss = float(logs["loss"])
            if not math.isfinite(loss):
                raise RuntimeError(f"{self.name} loss became {loss} at step {state.global_step}; lower the lr")
            if self.on_step:
                self.on_step(state.global_step, state.max_steps, loss)


def is_peft(model) -> bool:
    return hasattr(model, "peft_config")


def frozen_copy(model):
    """The model as it stands now, frozen: the reference of a non-peft arm (full or partial FT).

    An earlier TRL stage may have patched `forward` on the instance (add_fused_lm_head: a closure
    over the ORIGINAL model's forward). deepcopy keeps closures as they are, so the copy would
    silently run the policy; the patch is left out of the copy (the trainer patches it anew)."""
    patched = {m: m.__dict__.pop("forward") for m in model.modules() if "forward" in m.__dict__}
    try:
        ref = copy.deepcopy(model).eval()
    finally:
        for module, forward in patched.items():
            module.forward = forward
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def drop_ref_adapter(model) -> None:
    """TRL's frozen copy of the adapter ("ref") has done its job once the stage is over."""
    if is_peft(model) and "ref" in model.peft_config:
        model.delete_adapter("ref")
        model.set_adapter("default")


def run_trainer(trainer, items: list[dict], tokens: int, planned: int) -> Consumed:
    """Train and record what was consumed: the items in the order they were fed, their tokens."""
    start = time.perf_counter()
    trainer.train()
    consumed = Consumed(
        planned_steps=planned,
        steps=trainer.state.global_step,
        examples=len(items),
        tokens=tokens,
        seconds=round(time.perf_counter() - start, 3),
        order_hash=order_digest([i["id"] for i in items]),
    )
    if consumed.steps < planned:
        consumed.stopped_early, consumed.stop_reason = True, f"trainer stopped after {consumed.steps} steps"
    return consumed


def completion_tokens(tokenizer, items: list[dict], fields=("chosen", "rejected")) -> int:
    cache: dict[str, int] = {}
    total = 0
    for item in items:
        for f in fields:
            text = item[f]
            if text not in cache:
                cache[text] = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            total += cache[text]
    return total
