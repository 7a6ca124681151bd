"""Every method on the tiny models: trains a few steps through execute_arm (in-process), has the
trainable parameter count its formula says, saves and reloads its adapter to identical
predictions, and (LoRA, IA3) merges into the base with the same logits."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch

from harness.eval import precision
from harness.execution.single_task_arm import execute_arm
from harness.planning.experiment_loader import load_experiment
from harness.planning.plan import plan
from tests.tolerances import RECOMPUTED

# Tiny Llama: hidden 64, MLP 128, 2 layers, 4 heads of 16, 2 key/value heads (kv width 32).
H, FF, L, KV = 64, 128, 2, 32
# Tiny BERT: hidden 64, FFN 128, 2 layers; its new head is Linear(64, 2).
HEAD = H * 2 + 2


def lora_count(r: int, shapes: list[tuple[int, int]], layers: int = L) -> int:
    return layers * sum(r * (fan_in + fan_out) for fan_in, fan_out in shapes)


ATTN = [(H, H), (H, KV), (H, KV), (H, H)]  # q, k, v, o
MLP = [(H, FF), (H, FF), (FF, H)]  # gate, up, down
BOTTLENECK = (H * 4 + 4) + (4 * H + H)  # reduction 16: 64 -> 4 -> 64, with biases

CASES = {
    # name: (arm, expected trainable parameters)
    "lora": ({"method": "lora", "model": "llama"}, lora_count(16, ATTN)),
    "lora_r4_all_linear": (
        {"method": "lora", "model": "llama", "params": {"r": 4, "target_modules": "all-linear"}},
        lora_count(4, ATTN + MLP),
    ),
    "lora_list_rslora": (
        {
            "method": "lora",
            "model": "llama",
            "params": {"r": 8, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "use_rslora": True},
        },
        lora_count(8, [(H, H), (H, KV)]),
    ),
    "dora": (
        {"method": "lora", "model": "llama", "params": {"r": 8, "use_dora": True}},
        lora_count(8, ATTN) + L * (H + KV + KV + H),
    ),  # + a magnitude per output feature
    "qlora": ({"method": "qlora", "model": "llama", "params": {"r": 8}}, lora_count(8, ATTN)),
    "prompt_tuning_text": ({"method": "prompt_tuning", "model": "llama", "params": {"num_virtual_tokens": 8}}, 8 * H),
    "prompt_tuning_random": ({"method": "prompt_tuning", "model": "llama", "params": {"init": "random"}}, 16 * H),
    "prefix_tuning": (
        {"method": "prefix_tuning", "model": "llama", "params": {"num_virtual_tokens": 4}},
        4 * L * 2 * KV,
    ),  # a key and a value prefix per layer, as wide as the kv heads
    "p_tuning": (
        {"method": "p_tuning", "model": "llama", "params": {"num_virtual_tokens": 4, "encoder_hidden_size": 32}},
        4 * H + (H * 32 + 32) + (32 * 32 + 32) + (32 * H + H),
    ),  # embedding + 3-layer MLP
    "ia3": ({"method": "ia3", "model": "llama"}, L * (KV + KV + FF)),  # k, v outputs; down_proj input
    "bottleneck": ({"method": "bottleneck", "model": "llama"}, L * BOTTLENECK),
    "bottleneck_houlsby": (
        {"method": "bottleneck", "model": "llama", "params": {"placement": "houlsby"}},
        2 * L * BOTTLENECK,
    ),
    "partial_ft": (
        {"method": "partial_ft", "model": "llama", "params": {"top_layers": 1, "train_head": False}},
        (H * H * 2 + H * KV * 2) + 3 * H * FF + 2 * H + H,
    ),  # one layer + final norm
    "lora_bert": ({"method": "lora", "model": "bert", "params": {"r": 8}}, L * 3 * 8 * (H + H) + HEAD),
    "ia3_bert": ({"method": "ia3", "model": "bert"}, L * (H + H + H + FF) + HEAD),
    "bottleneck_bert": ({"method": "bottleneck", "model": "bert"}, L * BOTTLENECK + HEAD),
    "partial_ft_bert": ({"method": "partial_ft", "model": "bert", "params": {"top_layers": 0}}, HEAD),
}


def test_every_method_is_registered_and_listed():
    from typer.testing import CliRunner

    from harness.cli.main import app
    from harness.methods import method_names

    new = {"partial_ft", "qlora", "ia3", "bottleneck", "prompt_tuning", "prefix_tuning", "p_tuning"}
    assert new <= set(method_names())
    listed = CliRunner().invoke(app, ["methods"], env={"COLUMNS": "300"}).output
    assert all(name in listed for name in new)


def run_arm(write_experiment, tmp_path: Path, arm: dict, budget: dict | None = None, **task):
    def edit(data):
        data["tasks"]["sentiment"].update(task)

    arm = {"lr": 1e-3, **arm}
    planned = plan(load_experiment(write_experiment([arm], budget=budget, edit=edit)))[0]
    out = tmp_path / planned.slug
    return planned, execute_arm(planned, out), out


@pytest.mark.parametrize("case", list(CASES))
def test_method_trains_with_the_trainable_count_of_its_formula(case, write_experiment, tmp_path):
    arm, expected = CASES[case]
    planned, result, out = run_arm(write_experiment, tmp_path, arm)
    assert result.status == "ok"
    assert result.consumed["steps"] == 2 and result.consumed["examples"] == 8
    assert all(loss == loss for _, loss in result.curves["train_loss"])  # finite, recorded
    assert result.metrics["trainable_params"] == expected
    assert 0 < result.metrics["trainable_pct"] < 100
    assert 0.0 <= result.metrics["accuracy"] <= 1.0


def test_qlora_counts_packed_4bit_weights_as_whole_parameters(write_experiment, tmp_path):
    _, lora, _ = run_arm(write_experiment, tmp_path, {"method": "lora", "model": "llama", "params": {"r": 8}})
    _, qlora, _ = run_arm(write_experiment, tmp_path, {"method": "qlora", "model": "llama", "params": {"r": 8}})
    assert qlora.metrics["total_params"] == lora.metrics["total_params"]


# ------------------------------------------------------------------ save, reload, merge


def reload(method: str, model_dir: Path, adapter: Path, kind: str = "causal_lm"):
    from harness import models
    from harness.methods import get_method
    from harness.methods.bottleneck import load_adapters

    head = kind == "encoder"
    extra = get_method(method).load_kwargs(get_method(method).Params(), _ctx(kind))
    model = models.load_model(
        model_dir,
        kind,
        num_labels=2 if head else None,
        id2label={0: "negative", 1: "positive"} if head else None,
        extra_kwargs=extra,
    )
    if method == "bottleneck":
        return load_adapters(model, adapter).eval()
    if method == "qlora":  # what the method does after loading (STACK_NOTES: bnb on AVX512-BF16)
        from harness.methods.qlora import disable_avx512_bf16_repack

        disable_avx512_bf16_repack(model)
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter).eval()


def _ctx(kind):
    from harness.methods import ArmContext

    return ArmContext(kind=kind, task_type="classification", model_type="", device="cpu", seed=0)


def predict_again(model, model_dir: Path, planned, tiny_data, kind: str) -> list[dict]:
    from harness import models
    from harness.data.task_examples import load_task
    from harness.eval import predict

    tok = models.load_tokenizer(model_dir)
    _, test, task = load_task(planned.task.model_dump(), planned.budget)
    predictor = predict.make_predictor(model, tok, kind=kind, task=task, budget=planned.budget, shots=[])
    rows, _, _ = predict.run_predictions(predictor, test, task, batch_size=4, latency_examples=0)
    return rows


SAVED = [
    "lora",
    "dora",
    "qlora",
    "prompt_tuning_text",
    "prefix_tuning",
    "p_tuning",
    "ia3",
    "bottleneck_houlsby",
    "lora_bert",
    "ia3_bert",
    "bottleneck_bert",
]


@pytest.mark.parametrize("case", SAVED)
def test_adapter_saves_and_reloads_to_identical_predictions(case, write_experiment, tmp_path, tiny_models, tiny_data):
    arm, _ = CASES[case]
    planned, result, out = run_arm(write_experiment, tmp_path, {**arm, "lr": 5e-2})
    assert result.artifacts["adapter"] == "adapter"
    saved = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    kind = planned.model.kind
    # Reloaded and evaluated in the precision the arm evaluated in
    evaluated_in = planned.budget.eval_precision
    model = reload(arm["method"], tiny_models[arm["model"]], out / "adapter", kind)
    model = precision.for_evaluation(model, evaluated_in)
    again = predict_again(model, tiny_models[arm["model"]], planned, tiny_data, kind)
    score_key = "probs" if kind == "encoder" else "logprobs"
    assert [r["prediction"] for r in again] == [r["prediction"] for r in saved]
    # The 4-bit CPU kernels of QLoRA may pick another summation order when called again.
    for new, old in zip(again, saved):
        assert new[score_key] == pytest.approx(old[score_key], abs=RECOMPUTED[evaluated_in])
    # The trained adapter changed something: the base without it predicts differently.
    with without_adapter(model, arm["method"]):
        base = predict_again(model, tiny_models[arm["model"]], planned, tiny_data, kind)
    assert [r[score_key] for r in base] != [r[score_key] for r in saved]


@contextlib.contextmanager
def without_adapter(model, method):
    if method != "bottleneck":
        with model.disable_adapter():
            yield
        return
    saved = {k: v.clone() for k, v in model.bottleneck_adapters.state_dict().items()}
    for adapter in model.bottleneck_adapters.values():  # a zero up-projection is the identity
        torch.nn.init.zeros_(adapter.up.weight)
        torch.nn.init.zeros_(adapter.up.bias)
    yield
    model.bottleneck_adapters.load_state_dict(saved)


@pytest.mark.parametrize("case", ["lora", "dora", "ia3", "lora_bert", "ia3_bert"])
def test_merge_and_unload_gives_the_same_logits(case, write_experiment, tmp_path, tiny_models):
    arm, _ = CASES[case]
    planned, result, out = run_arm(write_experiment, tmp_path, {**arm, "lr": 5e-2})
    kind = planned.model.kind
    model = reload(arm["method"], tiny_models[arm["model"]], out / "adapter", kind)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        merged = model.merge_and_unload()
        after = merged(input_ids=ids).logits
    assert not hasattr(merged, "peft_config")
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------ virtual tokens in evaluation


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning", "p_tuning"])
def test_label_scoring_and_generation_line_up_with_virtual_tokens(method, tiny_models, tiny_data):
    """peft prepends virtual tokens (and returns their logits for prompt/P-tuning): a label's score
    must equal the model's own loss on the completion, and batching with padding changes nothing."""
    from harness import models
    from harness.data.encoding import pad_batch
    from harness.data.formatting import PromptFormatter
    from harness.data.loaders import load_examples
    from harness.eval import predict
    from harness.eval.scoring_rule import ScoringRule
    from harness.methods import ArmContext, get_method

    folder = tiny_models["llama"]
    tok = models.load_tokenizer(folder)
    m = get_method(method)
    ctx = ArmContext(
        kind="causal_lm", task_type="classification", model_type="llama", device="cpu", seed=0, model_dir=str(folder)
    )
    torch.manual_seed(0)
    model = m.wrap(models.load_model(folder, "causal_lm"), m.Params(num_virtual_tokens=4), ctx).eval()
    with torch.no_grad():  # make the virtual tokens matter
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    task = {
        "type": "classification",
        "labels": ["negative", "positive"],
        "instruction": "Say positive or negative.",
        "prompt": "Review: {text}",
    }
    examples = load_examples(tiny_data / "test.jsonl", {"id": "uid", "text": "review", "label": "sentiment"})[:4]
    examples[1] = {**examples[1], "text": examples[1]["text"] + " and long, long, long"}  # uneven lengths: padding
    formatter = PromptFormatter(tok, task)
    for end_of_turn in (True, False):  # label + end-of-turn (two tokens), the label alone (one: a shorter path)
        score = predict.label_scoring_predictor(model, tok, formatter, task["labels"], 64, ScoringRule(end_of_turn))
        _, batched = score(examples)
        singles = [score([e])[1][0] for e in examples]
        for b, s in zip(batched, singles):
            assert b["logprobs"] == pytest.approx(s["logprobs"], abs=1e-3)
        prompt, _ = formatter.encode(examples[0], None, 64)
        tensors, n = pad_batch([(prompt, formatter.completion_ids("positive", end_of_turn))], tok.pad_token_id)
        with torch.no_grad():
            loss = model(**tensors).loss  # mean over the completion tokens, virtual tokens masked by peft
        assert -loss.item() * n == pytest.approx(singles[0]["logprobs"]["positive"], abs=1e-2)
    # One-token completions take the shorter path (one sequence per prompt): the same log-probs.
    from harness.eval.likelihood import completion_logprobs, target_logprobs

    prompts = [formatter.encode(e, None, 64)[0] for e in examples]
    fast = completion_logprobs(model, prompts, [[5], [9], [17]], tok.pad_token_id)
    for i, prompt in enumerate(prompts):
        for j, token in enumerate((5, 9, 17)):
            tensors, _ = pad_batch([(prompt, [token])], tok.pad_token_id)
            with torch.no_grad():
                alone, _ = target_logprobs(model, tensors["input_ids"], tensors["attention_mask"], tensors["labels"])
            assert fast[i, j].item() == pytest.approx(alone.item(), abs=1e-4)
    generate = predict.generation_predictor(model, tok, formatter, 64, 5)
    assert generate(examples)[0] == [generate([e])[0][0] for e in examples]


def test_default_learning_rates_follow_what_each_family_needs():
    from harness.methods import get_method

    lr = {
        name: get_method(name).defaults["lr"]
        for name in (
            "full_ft",
            "partial_ft",
            "lora",
            "qlora",
            "bottleneck",
            "ia3",
            "prefix_tuning",
            "p_tuning",
            "prompt_tuning",
        )
    }
    assert lr["full_ft"] < lr["partial_ft"] < lr["lora"] == lr["qlora"] < lr["bottleneck"]
    assert min(lr["ia3"], lr["prefix_tuning"], lr["p_tuning"], lr["prompt_tuning"]) >= 10 * lr["lora"]
