"""`harness plan`: what each arm will train and roughly how much memory training needs, before
anything is downloaded or loaded. The architecture is built on the meta device (shapes, no
weights) from its config and wrapped by the arm's method, so parameter counts are exact.

Memory is an estimate: weights + gradients + AdamW states + activations at the budget's
micro-batch and max_seq_len, for an fp32, a bf16 and a 4-bit (NF4, double-quantized) base.
Activations follow Korthikanti et al. (2022) per layer, every layer kept for the backward pass
unless `budget.gradient_checkpointing`, plus the fp32 logits a causal-LM loss needs. Figures are
per device: `budget.devices` splits the micro-batch, and FSDP the weights and training state.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness import models
from harness.config.schema import Budget
from harness.data.task_examples import load_split, with_labels
from harness.errors import HarnessError, safe
from harness.eval.profile import parameter_counts
from harness.methods import ArmContext, get_method
from harness.planning.plan import plan
from harness.tasks import encoder_head, num_labels
from harness.training.fsdp import transformer_blocks

# Public config values of known hub checkpoints, so `plan` works offline for them when the HF
# cache has no config.json (values as published on their model cards' config.json).
_ROBERTA = {
    "model_type": "roberta",
    "vocab_size": 50265,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}
KNOWN_CONFIGS = {
    "roberta-base": {
        **_ROBERTA,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
    "roberta-large": {
        **_ROBERTA,
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
    },
    "mistralai/Mistral-7B-v0.1": {
        "model_type": "mistral",
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "sliding_window": 4096,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
}
KNOWN_CONFIGS["FacebookAI/roberta-base"] = KNOWN_CONFIGS["roberta-base"]
KNOWN_CONFIGS["FacebookAI/roberta-large"] = KNOWN_CONFIGS["roberta-large"]

# Bytes per parameter by base precision: frozen Linear weights of the body (what bitsandbytes
# quantizes), other frozen weights (embeddings, norms, heads), trainable ones (and their grads
# and each of AdamW's two states): fp32 whatever the base, as the loop keeps fp32 master weights
# (harness.training.mixed_precision). NF4 + double quant: 4 bits + ~0.127 bits of scales.
PRECISIONS = {
    "fp32": {"linear": 4.0, "other": 4.0, "trainable": 4.0, "activation": 4},
    "bf16": {"linear": 2.0, "other": 2.0, "trainable": 4.0, "activation": 2},
    "4bit": {"linear": (4 + 0.127) / 8, "other": 2.0, "trainable": 4.0, "activation": 2},
}
HEAD_NAMES = ("lm_head", "classifier", "score", "qa_outputs", "heads")


@dataclass
class Estimate:
    arm: str
    method: str
    model: str
    config_from: str
    trainable: int
    total: int
    trained: bool
    memory_gib: dict[str, float | None] = field(default_factory=dict)
    other_checkpointing_gib: dict[str, float | None] = field(default_factory=dict)  # the other setting

    @property
    def trainable_pct(self) -> float:
        return 100 * self.trainable / self.total if self.total else 0.0


def model_config(source: str, base_dir: Path | None):
    """(transformers config, where it came from) without weights or network."""
    from transformers import AutoConfig

    if source.startswith(models.PACKAGED_PREFIX):
        folder = models.resolve_model_dir(source, base_dir=base_dir)  # converted once at set-up
        return AutoConfig.from_pretrained(str(folder)), "packaged"
    local = models.find_local(source, base_dir)
    if local is not None and (local / "config.json").is_file():
        return _local_config(local), "local folder"
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source, "config.json")
    if isinstance(cached, str):
        return config_from_dict(json.loads(Path(cached).read_text())), "HF cache"
    if source in KNOWN_CONFIGS:
        return config_from_dict(KNOWN_CONFIGS[source]), "built-in public config (not downloaded)"
    raise HarnessError(
        f"no config for model '{source}': not a local folder, not in the HF cache, "
        "and not among the built-in public configs",
        key="models",
        fix=f"download its config.json once, or use one of: {', '.join(sorted(KNOWN_CONFIGS))}",
    )


def _local_config(folder: Path):
    """A local folder's config; a folder whose model is custom code (auto_map in config.json) is
    one sentence: the plan builds architectures transformers knows on the meta device and never
    runs a model folder's code, whatever trust_remote_code says."""
    from transformers import AutoConfig

    config = folder / "config.json"
    try:
        values = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise HarnessError(
            f"{config} is not a readable JSON file ({type(err).__name__})", key="models", fix="repair or re-download it"
        ) from None
    if isinstance(values, dict) and values.get("auto_map"):
        raise HarnessError(
            f"model folder {folder} is custom code (auto_map in its config.json): `harness plan` estimates "
            "architectures transformers knows and never runs a model folder's code, even with trust_remote_code: true",
            key="models",
            fix="measure it with `harness run` (trust_remote_code: true on the model) or plan a known architecture",
        )
    try:
        return AutoConfig.from_pretrained(str(folder))
    except (ValueError, OSError, KeyError) as err:
        raise HarnessError(
            f"transformers cannot read the config of model folder {folder} ({str(err).splitlines()[0][:200]})",
            key="models",
            fix="check its config.json (model_type) or use a model transformers knows",
        ) from None


def config_from_dict(values: dict):
    from transformers import AutoConfig

    values = dict(values)
    return AutoConfig.for_model(values.pop("model_type"), **values)


def meta_model(config, kind: str, num_labels: int | None, head_class: str | None = None):
    """The architecture with shapes only (meta device): nothing is allocated or read."""
    import transformers

    if head_class:
        config.num_labels = num_labels or config.num_labels
        cls = getattr(transformers, head_class)
    elif num_labels:
        config.num_labels = num_labels
        cls = transformers.AutoModelForSequenceClassification
    else:
        cls = transformers.AutoModelForCausalLM if kind == "causal_lm" else transformers.AutoModel
    with torch.device("meta"):
        return cls.from_config(config)


def wrapped_meta_model(
    method,
    params,
    config,
    *,
    kind: str,
    task_type: str,
    num_labels: int | None,
    seed=0,
    tasks: dict | None = None,
):
    head = encoder_head(kind, task_type) if method.objective_for(kind) == "classification" else None
    with_head = head is not None and (num_labels is not None or not head.labelled_head)  # no labels: no labelled head
    model = meta_model(config, kind, num_labels, head.head if with_head else None)
    if method.objective_for(kind) == "none":
        model.requires_grad_(False)
    ctx = ArmContext(
        kind=kind,
        task_type=task_type,
        model_type=config.model_type,
        device="meta",
        seed=seed,
        num_labels=num_labels,
        tasks=tasks,
    )
    # The Linear weights bitsandbytes would quantize (not heads): a 4-bit base cannot train them.
    quantized = {
        id(m.weight)
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and not any(part in HEAD_NAMES for part in n.split("."))
    }
    wrapped = method.wrap(model, params, ctx)
    wrapped.harness_trains_base = any(p.requires_grad and id(p) in quantized for p in wrapped.parameters())
    return wrapped


def memory_gib(
    model, config, budget: Budget, kind: str, trained: bool, *, checkpointing: bool | None = None
) -> dict[str, float | None]:
    """GiB per device. With `budget.devices` k each device takes micro-batch / k examples; under
    FSDP (`budget.strategy`) each holds 1/k of the weights, gradients and AdamW state plus the
    unsharded block it computes (the next one prefetched, its gradient reduced in fp32). With
    activation checkpointing (`checkpointing`, default budget.gradient_checkpointing) a layer keeps
    only its input, and one layer's activations exist at a time while it is recomputed."""
    body_linear, other, trainable = 0, 0, 0
    for name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            in_head = any(part in HEAD_NAMES for part in name.split("."))  # peft copies heads deeper
            linear = isinstance(module, torch.nn.Linear) and pname == "weight" and not in_head
            if p.requires_grad:
                trainable += p.numel()
            elif linear:
                body_linear += p.numel()
            else:
                other += p.numel()
    checkpointing = budget.gradient_checkpointing if checkpointing is None else checkpointing
    devices = budget.devices if trained else 1
    shards = devices if trained and budget.strategy == "fsdp" else 1
    micro = budget.batch_size // budget.grad_accum // devices
    s, h = budget.max_seq_len, config.hidden_size
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    ffn_ratio = getattr(config, "intermediate_size", 4 * h) / (4 * h)
    # Korthikanti et al.: 34·s·b·h + 5·a·s²·b bytes per layer in 16-bit; 19 of the 34 are the MLP's.
    per_layer_16bit = s * micro * h * (15 + 19 * ffn_ratio) + 5 * heads * s * s * micro
    kept_16bit = per_layer_16bit * layers if not checkpointing else 2 * s * micro * h * layers + per_layer_16bit
    logits = micro * s * config.vocab_size * 4 * 2 if kind == "causal_lm" else 0
    block = max((sum(p.numel() for p in b.parameters()) for b in transformer_blocks(model)), default=0)
    out: dict[str, float | None] = {}
    for name, b in PRECISIONS.items():
        if name == "4bit" and trained and getattr(model, "harness_trains_base", False):
            out[name] = None  # 4-bit weights cannot be trained: full/partial FT needs a float base
            continue
        weights = body_linear * b["linear"] + other * b["other"] + trainable * b["trainable"]
        train = trainable * b["trainable"] * 3  # gradients + AdamW exp_avg + exp_avg_sq
        activations = kept_16bit * b["activation"] / 2 + logits
        unsharded = block * (2 * b["activation"] + 4) if shards > 1 else 0  # gathered block x2, fp32 grads
        state = (weights + (train if trained else 0)) / shards + unsharded
        out[name] = round((state + (activations if trained else 0)) / 2**30, 6)
    return out


def estimate_arms(experiment) -> list[Estimate]:
    estimates = []
    configs: dict[str, tuple] = {}
    for arm in plan(experiment):
        method = get_method(arm.method)
        kind = arm.model.kind
        if arm.model_key not in configs:
            configs[arm.model_key] = model_config(arm.model.source, Path(arm.base_dir))
        config, where = configs[arm.model_key]
        tasks = {
            key: {"type": t.type, "num_labels": task_num_labels(kind, t.model_dump())} for key, t in arm.tasks.items()
        }
        num_labels = task_num_labels(kind, arm.task.model_dump()) if not arm.tasks else None
        model = wrapped_meta_model(
            method,
            arm.params,
            copy.deepcopy(config),
            kind=kind,
            task_type=arm.task_type,
            num_labels=num_labels,
            seed=arm.seed,
            tasks=tasks,
        )
        counts = parameter_counts(model)
        trained = method.objective_for(kind) != "none"
        estimates.append(
            Estimate(
                arm=arm.name,
                method=arm.method,
                model=arm.model.source,
                config_from=where,
                trainable=int(counts["trainable_params"]),
                total=int(counts["total_params"]),
                trained=trained,
                memory_gib=memory_gib(model, config, arm.budget, kind, trained),
                other_checkpointing_gib=memory_gib(
                    model, config, arm.budget, kind, trained, checkpointing=not arm.budget.gradient_checkpointing
                ),
            )
        )
    return estimates


def task_num_labels(kind: str, task: dict) -> int | None:
    """Outputs of the encoder head the task needs (labels read from the train split when omitted)."""
    head = encoder_head(kind, task["type"])
    if not (head and head.labelled_head):
        return None
    if not task.get("labels"):
        task = with_labels(task, load_split(task, "train"))
    return num_labels(kind, task)


def plan_table(estimates: list[Estimate], budget: Budget):
    from rich.table import Table

    micro = budget.batch_size // budget.grad_accum
    where = f", per device of {budget.devices} ({budget.strategy})" if budget.devices > 1 else ""
    ckpt = "on" if budget.gradient_checkpointing else "off"
    other = "bf16 GiB, act. ckpt " + ("off" if budget.gradient_checkpointing else "on")
    table = Table(
        title=f"plan: training memory at micro-batch {micro} x {budget.max_seq_len} tokens{where}, "
        f"activation checkpointing {ckpt} (estimate)"
    )
    for col in ("arm", "model", "trainable", "total", "trainable %", "fp32 GiB", "bf16 GiB", "4-bit GiB", other):
        table.add_column(col, justify="left" if col in ("arm", "model") else "right")
    for e in estimates:
        mem = ["n/a" if e.memory_gib[p] is None else f"{e.memory_gib[p]:.2f}" for p in PRECISIONS]
        mem.append("-" if not e.trained else f"{e.other_checkpointing_gib['bf16']:.2f}")
        table.add_row(
            safe(e.arm),
            safe(e.model),
            f"{e.trainable:,}",
            f"{e.total:,}",
            f"{e.trainable_pct:.4f}",
            *(mem if e.trained else [m + " (inference)" for m in mem[:-1]] + ["-"]),
        )
    return table


def config_notes(estimates: list[Estimate]) -> list[str]:
    seen = {e.model: e.config_from for e in estimates}
    return [f"{model}: config from {where}" for model, where in seen.items()]


# Shares of test items on which two arms disagree, for the sensitivity printed before a run: a
# pair of similar methods (20%) and two independent arms near 50% accuracy (the worst case).
PLANNED_DISCORDANT_RATES = (0.2, 0.5)


def sensitivity_notes(experiment) -> list[str]:
    """What the test set can detect, before anything runs: per task, the minimum detectable
    difference of its primary metric at 80% power for `budget.eval_examples` items (analytic:
    the paired-proportions approximation of Connor 1987 at assumed disagreement rates; exact for
    0/1 scores such as accuracy, conservative for scores in [0, 1]), alone and for the first
    step of the correction over all pairs of arms on the task."""
    from harness.eval import metrics
    from harness.eval.compare import CORRECTION_NAMES, difference_text, planned_mdd
    from harness.naming import base_name
    from harness.planning.plan import plan

    arms_by_task: dict[str, set] = {}
    tasks: dict[str, dict] = {}
    for arm in plan(experiment):
        for key, task in arm.task_specs.items():
            arms_by_task.setdefault(key, set()).add(base_name(arm.name))
            tasks[key] = task.model_dump()
    budget = experiment.budget
    lines = []
    for key, task in tasks.items():
        primary = metrics.METRICS[metrics.primary_metric(task["type"])]
        n = budget.eval_examples or _test_size(task)
        if not n:
            lines.append(f"sensitivity on {key}: set budget.eval_examples to see what its test set can detect")
            continue
        unit, pairs = primary.unit, len(arms_by_task[key]) * (len(arms_by_task[key]) - 1) // 2
        typical, worst = PLANNED_DISCORDANT_RATES
        line = (
            f"sensitivity on {key}: with {n} test items a paired test (alpha 0.05, 80% power) detects "
            f"{primary.name} differences of about {difference_text(planned_mdd(n, discordant_rate=typical), unit)} "
            f"when two arms disagree on {typical:.0%} of the items "
            f"({difference_text(planned_mdd(n, discordant_rate=worst), unit)} at {worst:.0%})"
        )
        if pairs > 1 and budget.correction != "none":
            first = difference_text(planned_mdd(n, discordant_rate=typical, alpha=0.05 / pairs), unit)
            name = CORRECTION_NAMES[budget.correction]
            line += f"; {first} for the first step of the {name} correction over {pairs} pairs"
        lines.append(line + " (analytic approximation for paired proportions, Connor 1987)")
    return lines


def _test_size(task: dict) -> int | None:
    from harness.data.task_examples import load_split

    try:
        return len(load_split(task, "test"))
    except Exception:  # noqa: BLE001 - an unprepared or missing split: plan still prints the rest
        return None
