"""Harness overhead: one LoRA arm through `harness run` vs a plain transformers+peft script that
does the same work (load SmolLM2-135M, the same LoRA, the same steps on the same examples,
then label-scoring the same test items), side by side in one run, alternating, on this machine.

    python bench/overhead.py [--steps 20] [--batch 8] [--eval 64] [--repeats 2] [--forgetting]

Prints each wall time and the ratio harness / plain (target: <= 1.10). Not a test.
The harness arm is configured to measure what the script measures: forgetting (two extra
forward passes over general text, which the script does not do) is off unless --forgetting,
which shows what that measurement adds on top.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import yaml

PLAIN_SCRIPT = textwrap.dedent("""
    import json, random, sys, torch
    from pathlib import Path
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

    model_dir, data_dir, steps, batch, n_eval, max_len = sys.argv[1:7]
    steps, batch, n_eval, max_len = int(steps), int(batch), int(n_eval), int(max_len)
    read = lambda split: [json.loads(l) for l in open(Path(data_dir) / f"{split}.jsonl")]
    train, test = read("train"), read("test")[:n_eval]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.05,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    instruction = "Classify the sentiment of the movie review as positive or negative. Answer with one word."
    def prompt(text):
        return tok.apply_chat_template([{"role": "system", "content": instruction},
                                        {"role": "user", "content": "Review: " + text}],
                                       tokenize=False, add_generation_prompt=True)
    def encode(text, label):
        p = tok(prompt(text), add_special_tokens=False)["input_ids"]
        c = tok(label + tok.eos_token, add_special_tokens=False)["input_ids"]
        return p[-(max_len - len(c)):], c
    def collate(rows):
        width = max(len(p) + len(c) for p, c in rows)
        ids = [p + c + [tok.pad_token_id] * (width - len(p) - len(c)) for p, c in rows]
        mask = [[1] * (len(p) + len(c)) + [0] * (width - len(p) - len(c)) for p, c in rows]
        labels = [[-100] * len(p) + c + [-100] * (width - len(p) - len(c)) for p, c in rows]
        return torch.tensor(ids), torch.tensor(mask), torch.tensor(labels)
    order = []
    rng = random.Random(0)
    while len(order) < steps * batch:
        epoch = list(range(len(train))); rng.shuffle(epoch); order += epoch
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-4, weight_decay=0.0)
    sched = get_scheduler("linear", opt, num_warmup_steps=int(0.1 * steps), num_training_steps=steps)
    model.train()
    for step in range(steps):
        rows = [encode(train[i]["text"], train[i]["label"]) for i in order[step * batch:(step + 1) * batch]]
        ids, mask, labels = collate(rows)
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step(); sched.step(); opt.zero_grad()
    model.eval()
    labels_ = ["negative", "positive"]
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(test), 16):
            chunk = test[i:i + 16]
            rows = [encode(e["text"], l) for e in chunk for l in labels_]
            ids, mask, lab = collate(rows)
            logp = model(input_ids=ids, attention_mask=mask).logits[:, :-1].log_softmax(-1)
            tgt = lab[:, 1:]
            picked = logp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            tot = (picked * (tgt != -100)).sum(-1).view(len(chunk), 2)
            correct += sum(labels_[j] == e["label"] for j, e in zip(tot.argmax(-1).tolist(), chunk))
    print(json.dumps({"accuracy": correct / len(test)}))
""")


def experiment(steps: int, batch: int, n_eval: int, max_len: int, forgetting: bool) -> dict:
    return {
        "name": "overhead_bench",
        "tasks": {
            "sentiment": {
                "type": "classification",
                "data": {"prepared": "sentiment"},
                "labels": ["negative", "positive"],
                "instruction": (
                    "Classify the sentiment of the movie review as positive or negative. Answer with one word."
                ),
                "prompt": "Review: {text}",
            }
        },
        "models": {"smollm2": {"source": "packaged:smollm2-135m-instruct"}},
        "budget": {
            "max_steps": steps,
            "batch_size": batch,
            "max_seq_len": max_len,
            "eval_examples": n_eval,
            "eval_batch_size": 16,
            "latency_examples": 0,
            "warmup_ratio": 0.1,
            **({} if forgetting else {"forgetting_text": None}),
        },
        "arms": [{"method": "lora", "model": "smollm2", "lr": 3e-4}],
        "tracking": {"enabled": False},
    }


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{cmd[:3]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--eval", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--forgetting", action="store_true", help="let the harness arm also measure forgetting")
    args = ap.parse_args()

    from harness import models
    from harness.data import prepared

    model_dir = models.resolve_model_dir("packaged:smollm2-135m-instruct")
    data_dir = prepared.prepared_dir("sentiment")
    work = Path(tempfile.mkdtemp(prefix="harness-overhead-"))
    (work / "exp.yaml").write_text(
        yaml.safe_dump(experiment(args.steps, args.batch, args.eval, args.max_len, args.forgetting))
    )
    (work / "plain.py").write_text(PLAIN_SCRIPT)
    harness_cmd = [sys.executable, "-m", "harness", "run", "exp.yaml", "--force"]
    plain_cmd = [
        sys.executable,
        "plain.py",
        str(model_dir),
        str(data_dir),
        str(args.steps),
        str(args.batch),
        str(args.eval),
        str(args.max_len),
    ]
    times: dict[str, list[float]] = {"harness": [], "plain": []}
    for r in range(args.repeats):
        for name, cmd in (
            (("plain", plain_cmd), ("harness", harness_cmd))
            if r % 2 == 0
            else (("harness", harness_cmd), ("plain", plain_cmd))
        ):
            times[name].append(timed(cmd, work))
            print(f"run {r + 1} {name:8s} {times[name][-1]:7.1f} s", flush=True)
    h, p = statistics.median(times["harness"]), statistics.median(times["plain"])
    print(f"\nmedian wall time: harness {h:.1f} s, plain script {p:.1f} s, ratio {h / p:.3f} (target <= 1.10)")
    print(f"work: {args.steps} LoRA steps x batch {args.batch}, {args.eval} test items scored; folder {work}")


if __name__ == "__main__":
    main()
