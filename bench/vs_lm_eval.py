"""harness's label scoring against lm-evaluation-harness's own `HFLM.loglikelihood`, side by side.

    pip install -c constraints.txt ".[bench]"        # lm-eval[hf] 0.4.13, for this benchmark only
    python bench/vs_lm_eval.py [--items 128] [--repeats 3] [--threads 2] [--rule lm-eval|end-of-turn]

The same converted model folder (SmolLM2-135M-Instruct in fp32, no hub access), the same test
items of experiments/encoder_vs_decoder.yaml (the first --items of the packaged sentiment test
split, written to a local JSON file both sides read), the same chat-templated context strings,
the same thread count. Each scoring run is a fresh process (so each has its own peak memory),
alternating harness, lm-eval, harness, lm-eval, ...; a run loads the model, then times scoring
only. Printed: agreement of the chosen labels (asserted 100% under the lm-eval-compatible rule:
label only, summed log-prob, which is lm-eval's `multiple_choice` `acc`), the largest
difference of a label's log-prob, the median scoring seconds of each and their ratio, and the
peak resident memory of each process. `--rule end-of-turn` appends the end-of-turn token to
lm-eval's continuations and scores harness with `label_scoring: {end_of_turn: true}`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "packaged:smollm2-135m-instruct"
EXPERIMENT = ROOT / "experiments" / "encoder_vs_decoder.yaml"


# ---------------------------------------------------------------- the items, written once


def write_items(n: int, rule: str, path: Path) -> dict:
    """The test items with their context strings and label continuations, as both sides see them."""
    from harness import models
    from harness.config.schema import Budget
    from harness.data.formatting import PromptFormatter
    from harness.data.task_examples import load_task
    from harness.planning.experiment_loader import load_experiment

    exp = load_experiment(EXPERIMENT)
    task = exp.tasks["sentiment"].model_dump()
    task["data"] = {**task["data"]}
    _, test, task = load_task(task, Budget(eval_examples=n))
    folder = models.resolve_model_dir(MODEL)
    tokenizer = models.load_tokenizer(folder)
    formatter = PromptFormatter(tokenizer, task)
    end_of_turn = rule == "end-of-turn"
    payload = {
        "model_dir": str(folder),
        "labels": task["labels"],
        "end_of_turn": end_of_turn,
        "items": [{"id": e["id"], "context": formatter.prompt(e), "label": e["label"]} for e in test],
        "continuations": [formatter.completion(label, end_of_turn) for label in task["labels"]],
        "task": {k: task[k] for k in ("type", "labels", "instruction", "prompt")},
    }
    path.write_text(json.dumps(payload), encoding="utf-8")
    return payload


# ---------------------------------------------------------------- one scoring run (a child process)


def peak_rss_mb() -> float:
    from harness.eval.profile import peak_rss_mb as peak

    return peak()


def score_with_harness(payload: dict, batch_size: int) -> tuple[list[list[float]], float]:
    import torch

    from harness import models
    from harness.data.formatting import PromptFormatter
    from harness.eval.predict import label_scoring_predictor, predict_in_batches
    from harness.eval.scoring_rule import ScoringRule

    folder = Path(payload["model_dir"])
    tokenizer = models.load_tokenizer(folder)
    model = models.load_model(folder, "causal_lm", tokenizer=tokenizer, dtype="float32").eval()

    class Verbatim(PromptFormatter):  # the context strings as written in the items file
        def prompt(self, example):
            return example["context"]

    formatter = Verbatim(tokenizer, payload["task"])
    predictor = label_scoring_predictor(
        model,
        tokenizer,
        formatter,
        payload["labels"],
        max_len=10_000,
        rule=ScoringRule(end_of_turn=payload["end_of_turn"]),
    )
    with torch.inference_mode():
        start = time.perf_counter()
        _, extras = predict_in_batches(predictor, payload["items"], batch_size)
        seconds = time.perf_counter() - start
    return [[extra["logprobs"][label] for label in payload["labels"]] for extra in extras], seconds


def score_with_lm_eval(payload: dict, batch_size: int) -> tuple[list[list[float]], float]:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=payload["model_dir"], device="cpu", dtype="float32", batch_size=batch_size)
    requests = [
        Instance(request_type="loglikelihood", doc=item, arguments=(item["context"], continuation), idx=j)
        for item in payload["items"]
        for j, continuation in enumerate(payload["continuations"])
    ]
    start = time.perf_counter()
    results = lm.loglikelihood(requests, disable_tqdm=True)
    seconds = time.perf_counter() - start
    k = len(payload["continuations"])
    return [[results[i * k + j][0] for j in range(k)] for i in range(len(payload["items"]))], seconds


def worker(side: str, items: Path, out: Path, threads: int, batch_size: int) -> None:
    import torch

    torch.set_num_threads(threads)
    payload = json.loads(items.read_text(encoding="utf-8"))
    scores, seconds = (score_with_harness if side == "harness" else score_with_lm_eval)(payload, batch_size)
    out.write_text(json.dumps({"scores": scores, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


# ---------------------------------------------------------------- the parent: alternate, compare, print


def run_side(side: str, items: Path, threads: int, batch_size: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = Path(fh.name)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            side,
            "--items-file",
            str(items),
            "--out",
            str(out),
            "--threads",
            str(threads),
            "--batch-size",
            str(batch_size),
        ],
        check=True,
        env=env,
    )
    result = json.loads(out.read_text())
    out.unlink()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="scoring runs of each side, alternating")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rule", choices=["lm-eval", "end-of-turn"], default="lm-eval")
    parser.add_argument("--worker", choices=["harness", "lm-eval"], help=argparse.SUPPRESS)
    parser.add_argument("--items-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.items_file, args.out, args.threads, args.batch_size)
        return 0

    try:
        import lm_eval  # noqa: F401
    except ImportError:
        print('lm-eval is not installed: pip install -c constraints.txt ".[bench]" (lm-eval[hf]==0.4.13)')
        return 2
    items = Path(tempfile.mkdtemp()) / "items.json"
    payload = write_items(args.items, args.rule, items)
    runs: dict[str, list[dict]] = {"harness": [], "lm-eval": []}
    for i in range(args.repeats):
        for side in ("harness", "lm-eval"):
            runs[side].append(run_side(side, items, args.threads, args.batch_size))
            print(
                f"run {i + 1} {side}: {runs[side][-1]['seconds']:.2f} s scoring, "
                f"peak {runs[side][-1]['peak_rss_mb']:.0f} MiB (load {os.getloadavg()[0]:.2f})",
                flush=True,
            )

    ours, theirs = runs["harness"][0]["scores"], runs["lm-eval"][0]["scores"]
    labels = payload["labels"]

    def pick(row):
        return labels[max(range(len(row)), key=row.__getitem__)]

    agree = sum(pick(a) == pick(b) for a, b in zip(ours, theirs))
    diff = max(abs(x - y) for a, b in zip(ours, theirs) for x, y in zip(a, b))
    gold = [item["label"] for item in payload["items"]]
    accuracy = {side: sum(pick(row) == g for row, g in zip(runs[side][0]["scores"], gold)) / len(gold) for side in runs}
    seconds = {side: statistics.median(r["seconds"] for r in runs[side]) for side in runs}
    memory = {side: max(r["peak_rss_mb"] for r in runs[side]) for side in runs}
    n = len(payload["items"])
    print(
        f"\n{n} items, {len(labels)} labels, rule: {args.rule}, {args.threads} threads, batch {args.batch_size}, "
        f"{args.repeats} alternating runs each; load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
        f"{os.cpu_count()} CPUs"
    )
    print("| | harness | lm-eval 0.4.13 | ratio |\n|---|---|---|---|")
    print(
        f"| scoring seconds (median) | {seconds['harness']:.2f} | {seconds['lm-eval']:.2f} | "
        f"{seconds['lm-eval'] / seconds['harness']:.2f}x faster |"
    )
    print(
        f"| peak memory (MiB, process) | {memory['harness']:.0f} | {memory['lm-eval']:.0f} | "
        f"{memory['harness'] / memory['lm-eval']:.2f}x |"
    )
    print(f"| accuracy | {accuracy['harness']:.4f} | {accuracy['lm-eval']:.4f} | |")
    print(f"\nsame label on {agree}/{n} items ({agree / n:.1%}); largest log-prob difference {diff:.2e}")
    if args.rule == "lm-eval":
        assert agree == n, f"harness and lm-eval disagree on {n - agree} items under the lm-eval-compatible rule"
    return 0


if __name__ == "__main__":
    sys.exit(main())
