"""`harness plan`: exact parameter counts on the meta device (published figures), counts equal to
what a real run reports, memory estimates that order sensibly, hub ids planned offline."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from harness.cli.main import app
from harness.methods import get_method
from harness.planning.estimate import KNOWN_CONFIGS, config_from_dict, estimate_arms, wrapped_meta_model
from harness.planning.experiment_loader import load_experiment

REPO = Path(__file__).resolve().parents[1]


def lora_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n and p.requires_grad)


def lora(**params):
    method = get_method("lora")
    return method, method.Params(**params)


def test_roberta_base_lora_r8_on_query_value_has_the_lora_papers_294912():
    from transformers import RobertaConfig

    method, params = lora(r=8, target_modules=["query", "value"])
    model = wrapped_meta_model(
        method, params, RobertaConfig(), kind="encoder", task_type="classification", num_labels=None
    )
    assert next(model.parameters()).device.type == "meta"
    assert lora_params(model) == 294_912
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 294_912  # no head: LoRA only


def test_mistral_7b_lora_r16_on_qkvo_has_13631488():
    from transformers import MistralConfig

    config = MistralConfig(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=32000,
    )
    method, params = lora(r=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = wrapped_meta_model(method, params, config, kind="causal_lm", task_type="generation", num_labels=None)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == lora_params(model) == 13_631_488
    assert sum(p.numel() for p in model.parameters()) - 13_631_488 == 7_241_732_096  # Mistral-7B's size
    # `auto` on a mistral picks exactly those four projections
    auto = wrapped_meta_model(
        method,
        lora(r=16)[1],
        MistralConfig(**{k: v for k, v in KNOWN_CONFIGS["mistralai/Mistral-7B-v0.1"].items() if k != "model_type"}),
        kind="causal_lm",
        task_type="generation",
        num_labels=None,
    )
    assert lora_params(auto) == 13_631_488


METHOD_ARMS = [
    {"method": "lora", "model": "llama"},
    {"method": "qlora", "model": "llama", "params": {"r": 4}},
    {"method": "ia3", "model": "llama"},
    {"method": "prompt_tuning", "model": "llama"},
    {"method": "prefix_tuning", "model": "llama"},
    {"method": "p_tuning", "model": "llama"},
    {"method": "bottleneck", "model": "llama", "params": {"placement": "houlsby"}},
    {"method": "partial_ft", "model": "llama"},
    {"method": "full_ft", "model": "llama"},
    {"method": "zero_shot", "model": "llama"},
    {"method": "lora", "model": "bert"},
    {"method": "ia3", "model": "bert"},
    {"method": "bottleneck", "model": "bert"},
    {"method": "full_ft", "model": "bert"},
    {"method": "partial_ft", "model": "bert"},
    {"method": "partial_ft", "model": "bert", "params": {"top_layers": 0}},
]


def test_plan_counts_equal_the_counts_of_real_loaded_models(write_experiment):
    """The meta-device count of every method is the count execute_arm reports on real weights."""
    from harness import models
    from harness.eval.profile import parameter_counts
    from harness.methods import ArmContext
    from harness.planning.plan import plan

    experiment = load_experiment(write_experiment(METHOD_ARMS))
    estimates = estimate_arms(experiment)
    for arm, est in zip(plan(experiment), estimates):
        method, kind = get_method(arm.method), arm.model.kind
        folder = Path(arm.model.source)
        ctx = ArmContext(
            kind=kind,
            task_type="classification",
            model_type="",
            device="cpu",
            seed=0,
            num_labels=2,
            model_dir=str(folder),
        )
        head = kind == "encoder"
        model = models.load_model(
            folder, kind, num_labels=2 if head else None, extra_kwargs=method.load_kwargs(arm.params, ctx)
        )
        ctx.model_type = model.config.model_type
        if method.objective_for(kind) == "none":
            model.requires_grad_(False)
        counts = parameter_counts(method.wrap(model, arm.params, ctx))
        assert (est.trainable, est.total) == (counts["trainable_params"], counts["total_params"]), arm.name


def test_4bit_column_is_na_only_where_quantized_base_weights_would_train(write_experiment):
    experiment = load_experiment(write_experiment(METHOD_ARMS))
    na = {e.arm for e in estimate_arms(experiment) if e.memory_gib["4bit"] is None}
    assert na == {
        "partial_ft · llama",
        "full_ft · llama",
        "full_ft · bert",
        "partial_ft · bert (lr=5e-05, top_layers=2, train_head=True)",
    }, na


def test_memory_estimates_order_as_expected(write_experiment):
    experiment = load_experiment(
        write_experiment(
            [
                {"method": "full_ft", "model": "llama"},
                {"method": "lora", "model": "llama"},
                {"method": "zero_shot", "model": "llama"},
            ],
            budget={"batch_size": 8, "max_seq_len": 64},
        )
    )
    full, lora_, zero = estimate_arms(experiment)
    assert full.memory_gib["fp32"] > lora_.memory_gib["fp32"] > zero.memory_gib["fp32"] > 0
    assert zero.memory_gib["fp32"] > zero.memory_gib["bf16"] > zero.memory_gib["4bit"]
    assert lora_.memory_gib["fp32"] > lora_.memory_gib["bf16"]
    assert full.memory_gib["4bit"] is None  # 4-bit weights cannot be fully fine-tuned
    assert lora_.memory_gib["4bit"] is not None
    bigger = estimate_arms(
        load_experiment(
            write_experiment([{"method": "lora", "model": "llama"}], budget={"batch_size": 16, "max_seq_len": 64})
        )
    )[0]
    assert bigger.memory_gib["fp32"] > lora_.memory_gib["fp32"]  # activations grow with the batch


def test_gpu_experiment_plans_offline_from_built_in_configs_but_does_not_validate(monkeypatch):
    path = REPO / "experiments" / "encoder_vs_decoder.gpu.yaml"
    env = {"COLUMNS": "250", "HF_HUB_OFFLINE": "1"}
    # validate says whether the run can start here: offline, its hub models cannot be loaded.
    validated = CliRunner().invoke(app, ["validate", str(path)], env=env)
    assert validated.exit_code == 2, validated.output
    assert (
        "models.roberta_base.source" in validated.output and "not in the local Hugging Face cache" in validated.output
    )
    planned = CliRunner().invoke(app, ["plan", str(path)], env=env)
    assert planned.exit_code == 0, planned.output
    assert "13,631,488" in planned.output and "7,255,363,584" in planned.output
    assert "built-in public config (not downloaded)" in planned.output
    est = {e.arm: e for e in estimate_arms(load_experiment(path, check_sources=False))}
    qlora = est["qlora · mistral"].memory_gib
    assert 4 < qlora["4bit"] < qlora["bf16"] < qlora["fp32"]


def test_plan_of_an_unknown_offline_hub_id_is_one_clear_error(write_experiment):
    path = write_experiment(
        [{"method": "lora", "model": "hub"}],
        edit=lambda d: d["models"].update({"hub": {"source": "nobody/no-such-model", "kind": "causal_lm"}}),
    )
    result = CliRunner().invoke(app, ["plan", str(path)], env={"COLUMNS": "250", "HF_HUB_OFFLINE": "1"})
    assert result.exit_code == 2 and "no config for model 'nobody/no-such-model'" in result.output


def test_known_configs_are_valid_transformers_configs():
    for source, values in KNOWN_CONFIGS.items():
        assert config_from_dict(values).model_type == values["model_type"], source


def test_plan_prints_the_minimum_detectable_difference_from_eval_examples(write_experiment):
    """Before anything runs: the MDD of accuracy for budget.eval_examples items (the analytic
    paired-proportions figure), and the stricter one of the first Holm step over all pairs."""
    from harness.eval.compare import planned_mdd
    from harness.planning.estimate import sensitivity_notes

    arms = [
        {"method": "zero_shot", "model": "llama"},
        {"method": "lora", "model": "llama"},
        {"method": "full_ft", "model": "llama"},
    ]
    path = write_experiment(arms, budget={"eval_examples": 128, "seeds": [0, 1]})
    notes = sensitivity_notes(load_experiment(path))
    assert len(notes) == 1
    expected = f"{100 * planned_mdd(128, discordant_rate=0.2):.1f} points"
    assert "with 128 test items" in notes[0] and f"accuracy differences of about {expected}" in notes[0]
    first = f"{100 * planned_mdd(128, discordant_rate=0.2, alpha=0.05 / 3):.1f} points for the first step"
    assert first in notes[0] and "Holm correction over 3 pairs" in notes[0]  # seeds do not multiply the pairs
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 0 and "sensitivity on" in result.output and expected in result.output


def test_a_7b_full_fine_tune_fits_80_gb_per_gpu_only_sharded_over_8(monkeypatch):
    """The done-when of issue 25: `harness plan experiments/encoder_vs_decoder.gpu.yaml --set
    budget.devices=8 --set budget.strategy=fsdp` gives the 7B full fine-tune's memory per GPU, with
    and without activation checkpointing, under 80 GB; on one GPU it cannot fit (16 bytes/param)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = REPO / "experiments" / "encoder_vs_decoder.gpu.yaml"
    one = {e.arm: e for e in estimate_arms(load_experiment(path, check_sources=False))}["full_ft · mistral"]
    sharded = load_experiment(path, check_sources=False, overrides=["budget.devices=8", "budget.strategy=fsdp"])
    by_arm = {e.arm: e for e in estimate_arms(sharded)}
    full = by_arm["full_ft · mistral"]
    assert one.memory_gib["bf16"] > 100  # fp32 master weights, gradients and AdamW: ~108 GiB on one GPU
    assert full.memory_gib["bf16"] < 80e9 / 2**30 and full.other_checkpointing_gib["bf16"] < full.memory_gib["bf16"]
    assert full.memory_gib["bf16"] < one.memory_gib["bf16"] / 6  # sharded eight ways, plus a gathered block
    assert by_arm["qlora · mistral"].memory_gib["4bit"] is not None  # budget-wide fsdp leaves QLoRA on ddp
    result = CliRunner().invoke(
        app,
        ["plan", str(path), "--set", "budget.devices=8", "--set", "budget.strategy=fsdp"],
        env={"COLUMNS": "250", "HF_HUB_OFFLINE": "1"},
    )
    assert result.exit_code == 0, result.output
    assert "per device of 8 (fsdp)" in result.output and "act. ckpt on" in result.output
