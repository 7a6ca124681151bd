"""Batched prediction vs a per-example loop, on the same model and data, side by side.

    python bench/eval_batching.py [--examples 48] [--batch-size 16] [--modes score generate]

Uses the packaged SmolLM2-135M-Instruct when it is prepared (else the tiny test llama) and the
packaged movie-review sentiment test split (else generated reviews). For each mode it times
harness's own predictor over all examples in batches, then one example at a time, and asserts
the predictions are identical. Modes: `score` (label log-likelihood, the default for decoders
on classification), `generate` (greedy generation, then the label it names) and `summarize`
(greedy free-text generation of --max-new-tokens on the same reviews).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LABELS = ["negative", "positive"]
TASK = {
    "type": "classification",
    "labels": LABELS,
    "instruction": "Classify the sentiment as positive or negative.",
    "prompt": "Review: {text}",
}


def load_model(threads: int | None):
    import torch

    from harness import models

    if threads:
        torch.set_num_threads(threads)
    try:
        folder, name = models.resolve_model_dir("packaged:smollm2-135m-instruct"), "packaged:smollm2-135m-instruct"
    except Exception as err:  # noqa: BLE001 - fall back to the tiny model, say so
        print(f"packaged SmolLM2 unavailable ({err}); using the tiny test llama", file=sys.stderr)
        from tests.tiny_models import build_tiny_models

        folder, name = build_tiny_models(Path(tempfile.mkdtemp()))["llama"], "tiny-llama (tests)"
    tokenizer = models.load_tokenizer(folder)
    return models.load_model(folder, "causal_lm", tokenizer=tokenizer).eval(), tokenizer, name


def load_examples(n: int) -> tuple[list[dict], str]:
    try:
        from harness.data import prepared

        path = prepared.prepared_dir("sentiment") / "test.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()[:n]]
        return [{"id": r["id"], "text": r["text"], "label": r["label"]} for r in rows], "prepared:sentiment (test)"
    except Exception:  # noqa: BLE001
        from tests.conftest import sentiment_rows

        rows = sentiment_rows(n, 0)
        return [{"id": r["uid"], "text": r["review"], "label": r["sentiment"]} for r in rows], "generated reviews"


def timed(predictor, examples: list[dict], batch_size: int) -> tuple[list[str], float]:
    """harness's own batching (what every arm's evaluation runs); batch_size 1 is the loop."""
    from harness.eval.predict import predict_in_batches

    start = time.perf_counter()
    predictions, _ = predict_in_batches(predictor, examples, batch_size)
    return predictions, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-seq-len", type=int, default=96)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument(
        "--modes", nargs="+", default=["score", "generate", "summarize"], choices=["score", "generate", "summarize"]
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)

    import torch

    from harness.eval import predict
    from harness.eval.profile import device_name

    model, tokenizer, model_name = load_model(args.threads)
    examples, data_name = load_examples(args.examples)
    from harness.config.schema import Budget

    budget = Budget(max_seq_len=args.max_seq_len, max_new_tokens=args.max_new_tokens)
    print(
        f"model {model_name} | data {data_name}, {len(examples)} examples | device {device_name()} "
        f"| torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"{'mode':<10} {'batched (bs=' + str(args.batch_size) + ')':>18} {'per-example':>12} {'speed-up':>9}  identical"
    )
    results = []
    for mode in args.modes:
        task = (
            {**TASK, "decoder_eval": "score"}
            if mode == "score"
            else {**TASK, "decoder_eval": "generate"}
            if mode == "generate"
            else {
                "type": "generation",
                "instruction": "Summarise the review in a few words.",
                "prompt": "Review: {text}",
            }
        )
        predictor = predict.make_predictor(model, tokenizer, kind="causal_lm", task=task, budget=budget, shots=[])
        predictor(examples[:2])  # warm-up: first-call allocations are not what we measure
        batched, t_batched = timed(predictor, examples, args.batch_size)
        single, t_single = timed(predictor, examples, 1)
        same = batched == single
        print(f"{mode:<10} {t_batched:>16.2f} s {t_single:>10.2f} s {t_single / t_batched:>8.2f}x  {same}")
        if not same:
            diff = [(e["id"], b, s) for e, b, s in zip(examples, batched, single) if b != s]
            print(f"  {len(diff)} differ, e.g. {diff[:3]}")
        results.append(
            {
                "mode": mode,
                "batched_s": round(t_batched, 3),
                "per_example_s": round(t_single, 3),
                "speedup": round(t_single / t_batched, 2),
                "identical": same,
            }
        )
    print(
        json.dumps(
            {
                "model": model_name,
                "examples": len(examples),
                "batch_size": args.batch_size,
                "device": device_name(),
                "results": results,
            }
        )
    )
    assert all(r["identical"] for r in results), "batched and per-example predictions differ"
    return 0


if __name__ == "__main__":
    sys.exit(main())
