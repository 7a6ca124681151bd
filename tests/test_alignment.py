"""Post-training stages (sft, dpo, orpo, grpo) on the tiny models: each trains, DPO starts at
log 2 against the post-SFT reference, rewards score known samples, pairs are honest and
deterministic, bad stage config fails with one sentence, and a staged arm's results.json has
the preference metrics."""

from __future__ import annotations

import math

import pytest
import torch

from harness.errors import HarnessError
from harness.planning.experiment_loader import load_experiment
from harness.planning.plan import plan
from harness.stages.rewards import register_reward

LORA = {"method": "lora", "model": "llama", "lr": 1e-3, "params": {"r": 4, "dropout": 0.0}}
BUDGET = {
    "stage_steps": {"sft": 2, "dpo": 2, "orpo": 2, "grpo": 1},
    "alignment": {"eval_pairs": 6, "prompts_per_step": 2, "max_completion_len": 3},
    "forgetting_text": None,
    "eval_examples": 4,
    "latency_examples": 0,
}


@register_reward("test_length")
def _length_reward(completion: str, target: str, labels=None) -> float:
    """Varies between the samples of a group (a random tiny model never says a label), so GRPO
    gets a non-zero advantage and its update is visible."""
    return min(len(completion), 20) / 20


def planned_arm(write_experiment, stages, budget=None, **arm):
    return plan(load_experiment(write_experiment([{**LORA, **arm, "stages": stages}], budget=budget or BUDGET)))[0]


def make_staged(write_experiment, stages, method_name="lora", budget=None):
    """(model, tokenizer, train, test, task, arm, method) of an arm (LoRA by default) on the tiny Llama."""
    from harness import models
    from harness.data.task_examples import load_task
    from harness.methods import ArmContext, get_method

    other = {} if method_name == "lora" else {"method": method_name, "params": {}}
    arm = planned_arm(write_experiment, stages, budget, **other)
    train, test, task = load_task(arm.task.model_dump(), arm.budget)
    tok = models.load_tokenizer(arm.model.source)
    model = models.load_model(arm.model.source, "causal_lm", tokenizer=tok)
    method = get_method(method_name)
    ctx = ArmContext(
        kind="causal_lm", task_type="classification", model_type=model.config.model_type, device="cpu", seed=0
    )
    torch.manual_seed(0)
    return method.wrap(model, arm.params, ctx), tok, train, test, task, arm, method


@pytest.fixture
def staged(write_experiment):
    return lambda stages, method_name="lora": make_staged(write_experiment, stages, method_name)


def run_all(stages, model, tok, train, test, task, arm, method, **extra):
    """run_stages on a staged arm: (consumed, curves, metrics, ci)."""
    from harness.stages.run import run_stages

    return run_stages(
        stages,
        model=model,
        tokenizer=tok,
        train=train,
        test=test,
        task=task,
        budget=arm.budget,
        method=method,
        kind="causal_lm",
        method_lr=1e-3,
        seed=0,
        method_params=arm.params,
        **extra,
    )


def run(stages, model, tok, train, test, task, arm, method):
    """(consumed, curves, metrics): the stages' CIs are read in tests/test_reward_rft.py."""
    return run_all(stages, model, tok, train, test, task, arm, method)[:3]


def trainable(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


# ------------------------------------------------------------------ each stage trains


@pytest.mark.parametrize("name", ["sft", "dpo", "orpo", "grpo"])
def test_each_stage_trains_a_few_steps(name, staged):
    model, tok, train, test, task, arm, method = staged(
        [{"grpo": {"rewards": ["test_length", "format"]}} if name == "grpo" else name]
    )
    before = trainable(model)
    consumed, curves, metrics = run(arm.stages, model, tok, train, test, task, arm, method)
    steps = BUDGET["stage_steps"][name]
    assert consumed.steps == steps and consumed.extra["stages"][0]["name"] == name
    assert consumed.examples > 0 and consumed.order_hash
    after = trainable(model)
    assert set(after) == set(before)  # TRL's "ref" adapter is gone again
    assert any(not torch.equal(before[n], after[n]) for n in before)
    loss_curve = next(v for k, v in curves.items() if k.endswith("loss"))
    assert len(loss_curve) == steps and all(math.isfinite(v) for _, v in loss_curve)
    assert 0 <= metrics["preference_accuracy"] <= 1
    if name == "sft":
        assert metrics["kl_to_reference"] is None  # no preference stage: no reference
    else:
        assert metrics["kl_to_reference"] >= 0 and 0 <= metrics["reward_accuracy"] <= 1
    if name == "grpo":
        assert 0 <= metrics["grpo_mean_reward"] <= 2  # two rewards of 0..1 each


@pytest.mark.parametrize("method_name, stage", [("qlora", "dpo"), ("full_ft", "grpo"), ("full_ft", "orpo")])
def test_preference_stages_on_other_methods(method_name, stage, staged):
    model, tok, train, test, task, arm, method = staged(
        ["sft", {"grpo": {"rewards": ["test_length"]}} if stage == "grpo" else stage], method_name
    )
    consumed, curves, metrics = run(arm.stages, model, tok, train, test, task, arm, method)
    assert [s["name"] for s in consumed.extra["stages"]] == ["sft", stage]
    assert consumed.steps == 2 + BUDGET["stage_steps"][stage]
    assert metrics["kl_to_reference"] is not None and metrics["kl_to_reference"] >= 0


def test_frozen_copy_of_a_trl_patched_model_runs_its_own_weights(tiny_models):
    from trl.trainer.utils import add_fused_lm_head

    from harness import models
    from harness.stages.trl_common import frozen_copy

    model = models.load_model(tiny_models["llama"], "causal_lm")
    add_fused_lm_head(model)  # what an earlier TRL stage leaves on the instance
    ref = frozen_copy(model)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = ref(input_ids=ids).logits
        model.lm_head.weight.mul_(0)  # the policy moves; the reference must not
        assert torch.equal(ref(input_ids=ids).logits, before)
        assert not torch.equal(model(input_ids=ids).logits, before)
    assert "forward" in model.__dict__  # the policy keeps its patch


def test_same_order_for_every_arm_sharing_a_stage(staged):
    hashes = []
    for _ in range(2):
        model, tok, train, test, task, arm, method = staged(["dpo"])
        consumed, _, _ = run(arm.stages, model, tok, train, test, task, arm, method)
        hashes.append(consumed.extra["stages"][0]["order_hash"])
    assert hashes[0] == hashes[1]


# ------------------------------------------------------------------ DPO's reference


def _sft_then_dpo_trainer(staged, method_name="lora"):
    from harness.data.preference import build_pairs
    from harness.stages import get_stage
    from harness.stages.registry import StageContext
    from harness.stages.run import stage_budget

    model, tok, train, test, task, arm, method = staged(["sft", "dpo"], method_name)
    run(arm.stages[:1], model, tok, train, test, task, arm, method)  # the SFT stage
    pairs = build_pairs(train[:4], task, tok, seed=0, max_len=48)
    ctx = StageContext(
        model=model,
        tokenizer=tok,
        train=train,
        task=task,
        budget=stage_budget(arm.budget, "dpo"),
        method=method,
        kind="causal_lm",
        method_lr=1e-3,
        work_dir=None,
        pairs=lambda n: pairs[:n],
    )
    import tempfile

    ctx.work_dir = tempfile.mkdtemp()
    dpo = get_stage("dpo")
    return dpo.trainer(ctx, dpo.Params.model_validate(arm.stages[1]["params"]), pairs), model, pairs


def _sequence_logps(model, trainer, batch):
    """Summed completion log-probs computed directly with the model as it stands."""
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    from harness.eval.likelihood import target_logprobs

    with torch.no_grad():
        sums, _ = target_logprobs(model, batch["input_ids"], batch["attention_mask"], labels)
    return sums


def test_dpo_reference_is_the_post_sft_model_and_stays_frozen(staged):
    trainer, model, pairs = _sft_then_dpo_trainer(staged)
    batch = next(iter(trainer.get_train_dataloader()))
    model.eval()
    post_sft = _sequence_logps(model, trainer, batch)
    with model.disable_adapter():
        base = _sequence_logps(model, trainer, batch)
    chosen, rejected = trainer.compute_ref_log_probs(trainer.model, batch)
    reference = torch.cat([chosen, rejected]) if len(chosen) * 2 == len(post_sft) else chosen
    assert torch.allclose(reference, post_sft, atol=1e-4)
    assert not torch.allclose(reference, base, atol=1e-3)  # not the adapter-disabled base
    trainer.train()
    chosen2, rejected2 = trainer.compute_ref_log_probs(trainer.model, batch)
    assert torch.allclose(
        torch.cat([chosen2, rejected2]) if len(chosen2) * 2 == len(post_sft) else chosen2, reference, atol=1e-4
    )
    model.eval()
    assert not torch.allclose(_sequence_logps(model, trainer, batch), post_sft, atol=1e-4)  # the policy moved


def test_dpo_reference_of_a_full_fine_tune_is_a_frozen_copy_of_the_post_sft_model(staged):
    trainer, model, _ = _sft_then_dpo_trainer(staged, "full_ft")
    assert trainer.ref_model is not None and trainer.ref_model is not model
    batch = next(iter(trainer.get_train_dataloader()))
    model.eval()
    post_sft = _sequence_logps(model, trainer, batch)
    chosen, rejected = trainer.compute_ref_log_probs(trainer.ref_model, batch)
    assert torch.allclose(torch.cat([chosen, rejected]), post_sft, atol=1e-4)
    assert not any(p.requires_grad for p in trainer.ref_model.parameters())


def test_dpo_loss_at_step_zero_is_log_2(staged):
    from harness.stages import trl_common

    trainer, model, _ = _sft_then_dpo_trainer(staged)
    progress = trl_common.Progress("dpo", None, {"loss": "dpo_loss"})
    trainer.add_callback(progress)
    trainer.train()
    first = progress.curves["dpo_loss"][0][1]
    assert first == pytest.approx(math.log(2), abs=1e-3)
    assert progress.curves["dpo_loss"][-1][1] != pytest.approx(math.log(2), abs=1e-6)  # and then it moves


# ------------------------------------------------------------------ rewards


def test_reward_plugins_on_known_samples():
    from harness.stages.rewards import as_trl, get_reward

    correct, fmt, rouge = get_reward("label_correct"), get_reward("format"), get_reward("rouge_l")
    labels = ["negative", "positive"]
    assert correct(" Positive.\n", "positive", labels) == 1.0
    assert correct("negative", "positive", labels) == 0.0
    assert correct("positively not", "positive", labels) == 0.0
    assert fmt("negative!", "positive", labels) == 1.0 and fmt("maybe", "positive", labels) == 0.0
    assert fmt("a short summary", "the reference summary", None) == 1.0
    assert fmt("", "the reference", None) == 0.0
    assert fmt("w " * 20, "two words", None) == 0.0
    assert rouge("the cat sat", "the cat sat") == pytest.approx(1.0)
    assert rouge("the cat", "the cat sat on the mat") == pytest.approx(2 * (1 * 2 / 6) / (1 + 2 / 6))
    assert rouge("dogs bark", "the cat sat") == 0.0
    fn = as_trl("label_correct")
    assert fn(["positive", "no"], target=["positive", "positive"], labels=[labels, labels]) == [1.0, 0.0]
    with pytest.raises(HarnessError, match="did you mean 'rouge_l'"):
        get_reward("rouge-l")


# ------------------------------------------------------------------ preference pairs


def _tok(tiny_models):
    from harness import models

    return models.load_tokenizer(tiny_models["llama"])


def test_classification_pairs_are_honest_and_deterministic(tiny_models):
    from harness.data.preference import build_pairs

    task = {"type": "classification", "labels": ["a", "b", "c"], "prompt": "Q: {text}", "instruction": None, "data": {}}
    examples = [{"id": str(i), "text": f"item {i}", "label": "abc"[i % 3]} for i in range(30)]
    tok = _tok(tiny_models)
    pairs = build_pairs(examples, task, tok, seed=0, max_len=48)
    assert len(pairs) == 30
    for pair, ex in zip(pairs, examples):
        assert pair["chosen"].startswith(ex["label"]) and pair["chosen"] != pair["rejected"]
        assert pair["rejected"][0] in "abc" and f"item {ex['id']}" in pair["prompt"]
    assert pairs == build_pairs(examples, task, tok, seed=0, max_len=48)
    assert build_pairs(examples[5:9], task, tok, seed=0, max_len=48, pool=examples) == pairs[5:9]  # per example
    assert [p["rejected"] for p in pairs] != [
        p["rejected"] for p in build_pairs(examples, task, tok, seed=1, max_len=48)
    ]


def test_generation_pairs_reject_another_examples_reference(tiny_models, tmp_path):
    from harness.data.preference import build_pairs, load_pairs

    task = {"type": "generation", "prompt": "{text}", "instruction": "Summarise.", "data": {}}
    examples = [{"id": str(i), "text": f"doc {i}", "reference": f"summary {i}"} for i in range(10)]
    tok = _tok(tiny_models)
    pairs = build_pairs(examples, task, tok, seed=3, max_len=48)
    refs = {e["reference"] for e in examples}
    for pair, ex in zip(pairs, examples):
        rejected = pair["rejected"].removesuffix(tok.eos_token)
        assert pair["chosen"] == ex["reference"] + tok.eos_token and rejected in refs - {ex["reference"]}
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "hi", "chosen": "hello", "rejected": "go away"}\n{"prompt": "x", "chosen": "y"}\n')
    with pytest.raises(ValueError, match="pairs.jsonl:2: field 'rejected'"):
        load_pairs(path, task, tok, max_len=48)


# ------------------------------------------------------------------ config errors


@pytest.mark.parametrize(
    "stages, budget, expected",
    [
        (["sft", "dpoo"], {}, ["arms[0].stages[1]", "unknown stage 'dpoo'", "did you mean 'dpo'"]),
        (["sft", {"dpo": {"betta": 0.2}}], {}, ["arms[0].stages[1].dpo.betta", "did you mean 'beta'"]),
        (
            [{"grpo": {"rewards": ["label_corect"]}}],
            {},
            ["unknown reward 'label_corect'", "did you mean 'label_correct'"],
        ),
        (["sft"], {"stage_steps": {"sfft": 3}}, ["budget.stage_steps.sfft", "did you mean 'sft'"]),
        (["sft"], {"alignment": {"eval_pair": 3}}, ["budget.alignment.eval_pair", "did you mean 'eval_pairs'"]),
        ([{"sft": {}, "dpo": {}}], {}, ["arms[0].stages", "exactly one name"]),
        ([{"grpo": {"rewards": "format"}}], {}, ["arms[0].stages[0].grpo", "non-empty list of reward names"]),
        (["sft", {"dpo": {"loss_type": "ipoo"}}], {}, ["unknown DPO loss_type 'ipoo'", "did you mean 'ipo'"]),
        ([{"dpo": {}}], {}, []),  # replaced below: a preference stage on an encoder
    ],
)
def test_stage_config_errors_are_one_sentence(stages, budget, expected, write_experiment):
    arm = {**LORA, "stages": stages}
    if not expected:
        arm["model"] = "bert"
        expected = ["arms[0].stages[0]", "stage 'dpo' does not apply to 'bert'"]
    path = write_experiment([arm], budget=budget)
    with pytest.raises(HarnessError) as err:
        load_experiment(path)
    message = str(err.value)
    assert message.startswith(f"{path}:") and message.count("\n") == 0
    for part in expected:
        assert part in message


def test_user_preference_file_is_checked_and_used(write_experiment, tmp_path, tiny_models):
    from harness.data.preference import task_pairs

    good = tmp_path / "pairs.jsonl"
    good.write_text(
        '{"prompt": "the film was great", "chosen": "positive", "rejected": "negative"}\n'
        '{"prompt": "the film was dull", "chosen": "negative", "rejected": "positive"}\n'
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "chosen": "y", "reject": "z"}\n')

    def with_file(name):
        return lambda d: d["tasks"]["sentiment"]["data"].update(preference=str(name))

    with pytest.raises(HarnessError, match=r"tasks.sentiment.data.preference: field 'rejected' is not in bad.jsonl"):
        load_experiment(write_experiment([{**LORA, "stages": ["dpo"]}], edit=with_file(bad)))
    with pytest.raises(HarnessError, match="preference file not found"):
        load_experiment(write_experiment([{**LORA, "stages": ["dpo"]}], edit=with_file(tmp_path / "none.jsonl")))
    arm = plan(load_experiment(write_experiment([{**LORA, "stages": ["dpo"]}], edit=with_file(good))))[0]
    built = plan(load_experiment(write_experiment([{**LORA, "stages": ["dpo"]}])))[0]
    assert arm.hash != built.hash  # the user's pairs are part of the arm's identity
    pairs = task_pairs(arm.task.model_dump(), [], "train", _tok(tiny_models), seed=0, max_len=48, count=4)
    assert len(pairs) == 4 and {p["target"] for p in pairs} == {"positive", "negative"}
    assert all("the film was" in p["prompt"] and p["chosen"] != p["rejected"] for p in pairs)


def test_arms_differing_only_in_stage_params_get_distinct_names(write_experiment):
    arms = plan(
        load_experiment(
            write_experiment(
                [
                    {**LORA, "stages": ["sft", {"dpo": {"beta": 0.1}}]},
                    {**LORA, "stages": ["sft", {"dpo": {"beta": 0.5}}]},
                ],
                budget=BUDGET,
            )
        )
    )
    assert len({a.name for a in arms}) == 2
    assert "dpo.beta=0.1" in arms[0].name and "dpo.beta=0.5" in arms[1].name


def test_stages_enter_the_hash_and_the_name(write_experiment):
    arms = plan(
        load_experiment(
            write_experiment(
                [
                    LORA,
                    {**LORA, "stages": ["sft"]},
                    {**LORA, "stages": ["sft", "dpo"]},
                    {**LORA, "stages": ["sft", {"dpo": {"beta": 0.5}}]},
                ],
                budget=BUDGET,
            )
        )
    )
    assert len({a.hash for a in arms}) == 4
    assert arms[0].name == "lora · llama" and arms[2].name.startswith("sft+dpo lora · llama")
    assert arms[3].stages[1]["params"] == {"lr": 5e-5, "beta": 0.5, "loss_type": "sigmoid"}
    assert arms[0].budget.stage_steps == {} and arms[1].budget.stage_steps == {"sft": 2}


# ------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_runner_staged_arm_writes_preference_metrics(write_experiment, tmp_path):
    from tests.test_runner import results_of, run_cli

    store = f"sqlite:///{tmp_path / 'track.db'}"
    path = write_experiment(
        [{**LORA, "stages": ["sft"]}, {**LORA, "stages": ["sft", "dpo"]}],
        budget={**BUDGET, "bootstrap_resamples": 0},
        edit=lambda d: d.update(tracking={"uri": store, "experiment_name": "tiny-aligned"}),
    )
    result = run_cli(path, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "tracking is off" not in result.output
    run_dir, results = results_of(tmp_path)
    sft, dpo = results["arms"]
    assert sft["status"] == "ok" and dpo["status"] == "ok", (sft.get("error"), dpo.get("error"))
    for arm in (sft, dpo):
        assert 0 <= arm["metrics"]["accuracy"] <= 1 and 0 <= arm["metrics"]["preference_accuracy"] <= 1
    assert sft["metrics"]["kl_to_reference"] is None
    assert dpo["metrics"]["kl_to_reference"] >= 0 and dpo["metrics"]["reward_margin"] is not None
    assert [s["name"] for s in dpo["consumed"]["extra"]["stages"]] == ["sft", "dpo"]
    assert dpo["consumed"]["steps"] == 4 and "dpo_loss" in dpo["curves"]
    assert results["metric_info"]["kl_to_reference"]["higher_is_better"] is False
    assert results["budget_audit"]["identical"] is True
    page = (run_dir / "index.html").read_text()
    assert "kl_to_reference" in page and "preference_accuracy" in page

    from harness.tracking.mlflow_tracker import import_mlflow

    client = import_mlflow().MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tiny-aligned")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    logged = runs[dpo["arm"]["name"]].data
    assert logged.metrics["kl_to_reference"] == pytest.approx(dpo["metrics"]["kl_to_reference"])
    assert logged.params["stages"] == "sft+dpo" and logged.params["stage.dpo.beta"] == "0.1"
    assert "kl_to_reference" not in runs[sft["arm"]["name"]].data.metrics  # None is not logged


def test_stages_command_lists_stages_and_rewards():
    from typer.testing import CliRunner

    from harness.cli.main import app

    listed = CliRunner().invoke(app, ["stages"], env={"COLUMNS": "300"}).output
    for name in ("sft", "dpo", "orpo", "grpo", "label_correct", "rouge_l", "format", "kl_coef", "0.04"):
        assert name in listed


# ------------------------------------------------------------------ preference metrics


def test_summarise_on_known_numbers():
    from harness.eval.preference_metrics import summarise

    # rows alternate chosen, rejected: (summed log-prob, tokens)
    seq = [(-2.0, 2), (-6.0, 3), (-9.0, 3), (-2.0, 1)]  # pair 1: -1 > -2 yes; pair 2: -3 > -2 no
    ref = [-3.0, -5.0, -8.0, -4.0]  # margins: (1) - (-1) = 2; (-1) - (2) = -3
    out = summarise(seq, ref, 0.25)
    assert out == {"preference_accuracy": 0.5, "reward_accuracy": 0.5, "reward_margin": -0.5, "kl_to_reference": 0.25}
    assert summarise(seq, None, None)["reward_margin"] is None


def test_probe_matches_a_direct_computation(staged):
    from harness.data.encoding import pad_batch
    from harness.data.preference import build_pairs
    from harness.eval.likelihood import target_logprobs
    from harness.eval.preference_metrics import PreferenceProbe

    model, tok, train, test, task, arm, method = staged(["dpo"])
    pairs = build_pairs(test[:6], task, tok, seed=0, max_len=48)
    probe = PreferenceProbe(pairs, tok, max_len=48, batch_size=2)
    probe.take_snapshot(model)
    same = probe.measure(model)
    assert same["kl_to_reference"] == pytest.approx(0, abs=1e-6) and same["reward_margin"] == pytest.approx(0, abs=1e-5)
    reference = trainable(model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    moved = probe.measure(model)

    def direct():
        tensors, _ = pad_batch(probe.rows, tok.pad_token_id)
        with torch.no_grad():
            sums, counts = target_logprobs(
                model.eval(), tensors["input_ids"], tensors["attention_mask"], tensors["labels"]
            )
        return sums, counts

    sums, counts = direct()
    norm = sums / counts
    assert moved["preference_accuracy"] == pytest.approx(float((norm[0::2] > norm[1::2]).float().mean()))
    policy_sums = sums
    current = trainable(model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in reference:
                p.copy_(reference[n])
    ref_sums, _ = direct()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in current:
                p.copy_(current[n])
    margins = (policy_sums[0::2] - ref_sums[0::2]) - (policy_sums[1::2] - ref_sums[1::2])
    assert moved["reward_margin"] == pytest.approx(float(margins.mean()), abs=1e-4)
    assert moved["reward_accuracy"] == pytest.approx(float((margins > 0).float().mean()))
    assert moved["kl_to_reference"] > 1e-4
    assert all(torch.equal(current[n], p) for n, p in model.named_parameters() if n in current)  # restored
