"""Training throughput of the loop on accelerate against an earlier loop, and the cost of a
checkpoint: `python bench/loop_throughput.py OLD_LOOP.py [--steps 6] [--reps 3] [--precision fp32]`.

OLD_LOOP.py is an earlier harness/training/loop.py (e.g. `git show <commit>:harness/training/loop.py
> /tmp/old_loop.py`; the one before accelerate trains with the same `train(...)` signature). Runs
alternate old/new in one process so that a shared machine's load hits both alike; each figure is
printed with the load average at that moment. SmolLM2-135M (packaged) on the prepared sentiment
set, LoRA and full fine-tuning, batch 8 x up to 96 tokens.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
from pathlib import Path


def load_module(path: str):
    spec = importlib.util.spec_from_file_location("old_loop", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fresh_model(method_name: str, model_dir, seed: int = 0):
    import torch

    from harness import models
    from harness.methods import ArmContext, get_method

    method = get_method(method_name)
    params = method.Params().model_dump()
    torch.manual_seed(seed)
    model = models.load_model(model_dir, "causal_lm")
    ctx = ArmContext(
        kind="causal_lm",
        task_type="classification",
        model_type=model.config.model_type,
        device="cpu",
        seed=seed,
        model_dir=str(model_dir),
    )
    return method.wrap(model, params, ctx)


def batches(model_dir, budget):
    from harness import models
    from harness.data.encoding import pad_batch
    from harness.data.formatting import PromptFormatter, target_of
    from harness.data.task_examples import load_task

    task_spec = {
        "type": "classification",
        "data": {"prepared": "sentiment"},
        "labels": ["negative", "positive"],
        "instruction": "Classify the sentiment of the movie review as positive or negative.",
        "prompt": "Review: {text}",
    }
    train, _, task = load_task(task_spec, budget.model_copy(update={"eval_examples": 8}))
    tokenizer = models.load_tokenizer(model_dir)
    formatter = PromptFormatter(tokenizer, task)
    encoded = [formatter.encode(e, target_of(e, task), budget.max_seq_len) for e in train[:2000]]
    return (
        len(encoded),
        [e["id"] for e in train[:2000]],
        lambda idx: pad_batch([encoded[i] for i in idx], tokenizer.pad_token_id),
    )


def load_average() -> float:
    return os.getloadavg()[0]


def main() -> None:
    import torch

    from harness import models
    from harness.config.schema import Budget
    from harness.training import loop
    from harness.training.sft import predicted_tokens

    parser = argparse.ArgumentParser()
    parser.add_argument("old_loop")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--methods", default="lora,full_ft")
    args = parser.parse_args()
    old = load_module(args.old_loop)
    model_dir = models.resolve_model_dir("packaged:smollm2-135m-instruct")
    # A Budget: the new loop reads attributes, the old one items (Budget answers both).
    budget = Budget(
        max_steps=args.steps,
        batch_size=8,
        grad_accum=1,
        max_seq_len=96,
        seed=0,
        lr_schedule="linear",
        warmup_ratio=0.1,
        weight_decay=0.0,
        max_grad_norm=1.0,
        precision=args.precision,
    )
    n, ids, make_batch = batches(model_dir, budget)
    print(f"torch threads {torch.get_num_threads()}, {args.steps} steps x batch 8, {args.reps} alternations")
    for method in args.methods.split(","):
        figures = {"old": [], "new": []}
        for rep in range(args.reps):
            for name in ("old", "new") if rep % 2 == 0 else ("new", "old"):
                model = fresh_model(method, model_dir)
                if name == "old":
                    consumed, _ = old.train(model, n_examples=n, ids=ids, make_batch=make_batch, budget=budget, lr=1e-4)
                else:
                    consumed, _ = loop.train(
                        model,
                        n_examples=n,
                        ids=ids,
                        make_batch=make_batch,
                        budget=budget,
                        lr=1e-4,
                        loss_items=predicted_tokens,
                    )
                rate = consumed.tokens / consumed.seconds
                figures[name].append(rate)
                print(
                    f"{method:8s} {name} rep {rep}: {rate:8.1f} tokens/s ({consumed.seconds:.1f} s)"
                    f"  load {load_average():.1f}",
                    flush=True,
                )
        o, w = statistics.median(figures["old"]), statistics.median(figures["new"])
        print(f"{method:8s} median old {o:.1f} new {w:.1f} tokens/s: new/old = {w / o:.3f}  load {load_average():.1f}")
        seconds = checkpoint_seconds(model, tmp=Path(os.environ.get("TMPDIR", "/tmp")) / "bench-checkpoints")
        per_step = consumed.seconds / consumed.steps
        print(
            f"{method:8s} one checkpoint: {seconds:.2f} s = {seconds / per_step:.2f} training steps; a 300-step "
            f"arm checkpoints every 30 steps (the default 10%): {100 * seconds / (30 * per_step):.1f}% of its "
            f"train time  load {load_average():.1f}",
            flush=True,
        )


def checkpoint_seconds(model, tmp: Path, reps: int = 3) -> float:
    """Seconds to write one checkpoint of this arm: trainable weights + AdamW state (filled by one
    step) + the rest, as the loop writes it."""
    import torch

    from harness.training import checkpoint

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-9)
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    times = []
    for step in range(reps):
        t0 = time.perf_counter()
        checkpoint.save(
            tmp,
            step + 1,
            {
                "trainable": checkpoint.trainable_state(model),
                "optimizer": optimizer.state_dict(),
                "rng": [checkpoint.rng_state()],
            },
        )
        times.append(time.perf_counter() - t0)
    checkpoint.discard(tmp)
    return statistics.median(times)


if __name__ == "__main__":
    main()
