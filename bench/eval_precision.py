"""Evaluation in bf16 against fp32 on this machine: speed, predictions that change, log-prob differences.

    python bench/eval_precision.py [--items 64] [--repeats 2] [--threads 2] [--max-new-tokens 8]

SmolLM2-135M-Instruct (packaged) on the first --items sentiment test items of
experiments/encoder_vs_decoder.yaml: label scoring (the lm-eval-compatible rule) and greedy
generation, each timed in fp32 and bf16 alternately (fp32, bf16, fp32, bf16, ...) in one process
on two copies of the model. Prints whether the CPU has native bf16 (AVX512-BF16/AMX), what
`budget.eval_precision: auto` resolves to here, and the load average beside the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--modes", nargs="+", choices=["score", "generate"], default=["score", "generate"])
    args = parser.parse_args()

    import torch

    from harness import models
    from harness.data.task_examples import load_task
    from harness.eval import precision, predict
    from harness.planning.experiment_loader import load_experiment

    torch.set_num_threads(args.threads)
    root = Path(__file__).resolve().parents[1]
    exp = load_experiment(root / "experiments" / "encoder_vs_decoder.yaml")
    _, test, task = load_task(
        exp.tasks["sentiment"].model_dump(), exp.budget.model_copy(update={"eval_examples": args.items})
    )
    folder = models.resolve_model_dir("packaged:smollm2-135m-instruct")
    tok = models.load_tokenizer(folder)
    budget = exp.budget.model_copy(update={"max_new_tokens": args.max_new_tokens})
    nets = {
        p: precision.for_evaluation(models.load_model(folder, "causal_lm", tokenizer=tok).eval(), p)
        for p in ("fp32", "bf16")
    }
    modes = {
        name: mode_task
        for name, mode_task, flag in (
            ("label scoring", task, "score"),
            ("generation", {**task, "decoder_eval": "generate"}, "generate"),
        )
        if flag in args.modes
    }
    seconds = {(m, p): [] for m in modes for p in nets}
    outputs = {}
    for round_ in range(args.repeats):
        for mode, mode_task in modes.items():
            for p, net in nets.items():
                predictor = predict.make_predictor(net, tok, kind="causal_lm", task=mode_task, budget=budget, shots=[])
                start = time.perf_counter()
                with torch.inference_mode():
                    outputs[mode, p] = predict.predict_in_batches(predictor, test, budget.eval_batch_size)
                seconds[mode, p].append(time.perf_counter() - start)
                print(  # as it goes: a figure from a busy machine is kept even if the run is cut short
                    f"round {round_ + 1}: {mode} {p} {seconds[mode, p][-1]:.2f} s (load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
    print(
        f"CPU native bf16: {precision.cpu_has_native_bf16()}; eval_precision auto -> {precision.resolve('auto')}; "
        f"{args.items} items, {args.threads} threads, {args.repeats} alternating runs; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"
    )
    print("| | fp32 s | bf16 s | bf16 speed-up | predictions changed | max log-prob diff |\n|---|---|---|---|---|---|")
    for mode in modes:
        (p32, x32), (p16, x16) = outputs[mode, "fp32"], outputs[mode, "bf16"]
        changed = sum(a != b for a, b in zip(p32, p16))
        diff = "–"
        if mode == "label scoring":
            diff = (
                f"{max(abs(a['logprobs'][k] - b['logprobs'][k]) for a, b in zip(x32, x16) for k in a['logprobs']):.3f}"
            )
        s32, s16 = statistics.median(seconds[mode, "fp32"]), statistics.median(seconds[mode, "bf16"])
        print(f"| {mode} | {s32:.2f} | {s16:.2f} | {s32 / s16:.2f}x | {changed}/{len(p32)} | {diff} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
