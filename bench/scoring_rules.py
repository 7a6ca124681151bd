"""Accuracy of each decoder arm of a finished run under every label scoring rule.

    python bench/scoring_rules.py reports/encoder_vs_decoder/<run-id> [--items 128]

For each decoder arm that scored labels and whose weights can be rebuilt (the base model for
prompting arms, base + saved adapter for peft arms; full fine-tuning saves no weights and is
skipped), the test items are scored twice (label only; label + end-of-turn) and every rule's
accuracy is computed from those log-probs: the evidence behind the default rule (README, "How
decoders pick a label").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rebuild(arm, arm_dir: Path, result: dict):
    """(model, tokenizer, shots) of a finished arm, or None when its weights were not saved."""
    from harness import models
    from harness.data.task_examples import load_task
    from harness.methods import ArmContext, get_method

    method = get_method(arm.method)
    kind = arm.model.kind
    folder = models.resolve_model_dir(arm.model.source, base_dir=Path(arm.base_dir))
    tok = models.load_tokenizer(folder)
    train, _, task = load_task(arm.task.model_dump(), arm.budget)
    ctx = ArmContext(
        kind=kind, task_type=task["type"], model_type="", device="cpu", seed=arm.seed, model_dir=str(folder)
    )
    trained = method.objective_for(kind) != "none"
    adapter = result.get("artifacts", {}).get("adapter")
    if trained and not adapter:
        return None
    model = models.load_model(folder, kind, tokenizer=tok, extra_kwargs=method.load_kwargs(arm.params, ctx))
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, arm_dir / adapter)
    return model.eval(), tok, method.shots(arm.params, train, ctx), task


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--items", type=int, default=None, help="test items (default: the run's eval_examples)")
    args = parser.parse_args()

    import torch

    from harness.data.formatting import PromptFormatter
    from harness.data.task_examples import load_task
    from harness.eval.predict import make_predictor, predict_in_batches
    from harness.eval.scoring_rule import ScoringRule
    from harness.planning.plan import Arm

    rules = [ScoringRule(e, n) for e in (False, True) for n in ("none", "tokens", "chars")]
    print("| arm | " + " | ".join(f"{'eot' if r.end_of_turn else 'label'}/{r.normalize}" for r in rules) + " |")
    print("|---" * (len(rules) + 1) + "|")
    for arm_dir in sorted((args.run_dir / "arms").iterdir()):
        arm = Arm.from_json((arm_dir / "arm.json").read_text())
        result = json.loads((arm_dir / "result.json").read_text())
        if arm.model.kind != "causal_lm" or result["status"] != "ok" or arm.stages:
            continue
        built = rebuild(arm, arm_dir, result)
        if built is None:
            print(f"| {arm.name} | " + " | ".join("(no saved weights)" for _ in rules) + " |")
            continue
        model, tok, shots, task = built
        _, test, _ = load_task(
            arm.task.model_dump(),
            arm.budget.model_copy(update={"eval_examples": args.items or arm.budget.eval_examples}),
        )
        summed = {}
        for end_of_turn in (False, True):
            rule_task = {**task, "label_scoring": {"end_of_turn": end_of_turn, "normalize": "none"}}
            predictor = make_predictor(model, tok, kind="causal_lm", task=rule_task, budget=arm.budget, shots=shots)
            with torch.inference_mode():
                _, extras = predict_in_batches(predictor, test, arm.budget.eval_batch_size)
            summed[end_of_turn] = torch.tensor([[e["logprobs"][label] for label in task["labels"]] for e in extras])
        formatter = PromptFormatter(tok, task, shots)
        completions = {e: [formatter.completion_ids(label, e) for label in task["labels"]] for e in (False, True)}
        gold = [e["label"] for e in test]
        cells = []
        for rule in rules:
            scores = rule.compare(summed[rule.end_of_turn], completions[rule.end_of_turn], task["labels"])
            picked = [task["labels"][i] for i in scores.argmax(-1).tolist()]
            cells.append(f"{sum(p == g for p, g in zip(picked, gold)) / len(gold):.3f}")
        print(f"| {arm.name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
