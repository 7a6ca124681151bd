"""The reward_model stage (TRL's RewardTrainer): a scalar reward model trained on preference pairs,
its pairwise accuracy on held-out pairs (with a bootstrap CI), saved in the arm folder for the
`reward_model` reward of grpo/rft.

How it relates to the arm's model: the reward model is a NEW model beside the policy, an
AutoModelForSequenceClassification with one output built from the arm's base model folder and
wrapped by the arm's method the way the method wraps a classifier (LoRA/IA3: peft's SEQ_CLS
task type, which trains the new score head too; full_ft: every weight). Why not a head on the
arm's own (post-SFT) model: that would train the policy the arm is evaluated as, and copying an
adapted policy into a classifier needs a merge that prompt/prefix tuning and 4-bit QLoRA do not
have. So "lora on smollm2 with stages [reward_model]" is LoRA applied to a SmolLM2 reward model,
like every other arm is a method applied to a model; the arm's evaluated policy is whatever its
other stages trained (the untouched base when reward_model is its only stage: a zero-shot row).

Saved as `reward_model/` in the arm folder: the tokenizer, `reward_model.json` (base folder,
max length) and the safetensors weights (a peft adapter with the score head, or the full model).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from harness.errors import HarnessError
from harness.plugins import Params
from harness.stages import trl_common as common
from harness.stages.registry import Stage, StageContext, StageOutcome, register_stage

FOLDER = "reward_model"
INFO = "reward_model.json"


@register_stage("reward_model")
class RewardModelStage(Stage):
    description = "a scalar reward model on preference pairs (TRL RewardTrainer), saved for grpo/rft rewards"
    preference = False  # the policy does not move: no reference snapshot

    class Params(Params):
        lr: float | None = Field(None, gt=0, description="learning rate; default: the arm's (method's) lr")
        center_rewards: float | None = Field(
            None, ge=0, description="RewardConfig.center_rewards_coefficient: pulls the mean reward to 0"
        )

    def train(self, ctx: StageContext, params: Params) -> StageOutcome:
        from datasets import Dataset
        from trl import RewardConfig, RewardTrainer

        model = self.reward_model(ctx)
        items = ctx.pairs(ctx.steps * ctx.budget.batch_size)
        progress = common.Progress(
            "reward_model", ctx.on_step, {"loss": "reward_model_loss", "accuracy": "reward_model_train_accuracy"}
        )
        args = common.trl_args(
            RewardConfig,
            ctx,
            params.lr if params.lr is not None else ctx.method_lr,
            max_length=ctx.budget.max_seq_len,
            center_rewards_coefficient=params.center_rewards,
            train_sampling_strategy="sequential",
        )
        data = Dataset.from_list([{k: i[k] for k in ("prompt", "chosen", "rejected")} for i in items])
        trainer = RewardTrainer(
            model=model, args=args, train_dataset=data, processing_class=ctx.tokenizer, callbacks=[progress]
        )
        read = ("prompt", "chosen", "prompt", "rejected")  # both sequences of a pair, whole
        consumed = common.run_trainer(trainer, items, common.completion_tokens(ctx.tokenizer, items, read), ctx.steps)
        model.eval()
        folder = (ctx.arm_dir or ctx.work_dir) / FOLDER
        save(model, ctx.tokenizer, folder, base=ctx.model_dir, max_len=ctx.budget.max_seq_len)
        metrics, ci = held_out_accuracy(
            RewardScorer(model, ctx.tokenizer, ctx.budget.max_seq_len, ctx.budget.eval_batch_size), ctx.held_out, ctx
        )
        consumed.extra = {"reward_model": FOLDER, "held_out_pairs": len(ctx.held_out)}
        return StageOutcome(consumed, progress.curves, metrics, ci)

    def reward_model(self, ctx: StageContext):
        """AutoModelForSequenceClassification(num_labels=1) from the arm's base, wrapped by its method."""
        import torch

        from harness import models
        from harness.methods import ArmContext

        if "encoder" not in ctx.method.applies_to:
            raise HarnessError(
                f"method '{ctx.method.name}' cannot train a reward model (a sequence classifier)",
                key="stages.reward_model",
                fix="use lora, ia3, full_ft or another method that applies to encoders",
            )
        if ctx.model_dir is None:
            raise HarnessError("the reward_model stage needs the arm's model folder", key="stages.reward_model")
        wrap_ctx = dict(kind="encoder", task_type="classification", device="cpu", seed=ctx.budget.seed, num_labels=1)
        probe = ArmContext(model_type="", **wrap_ctx)
        torch.manual_seed(ctx.budget.seed)  # the new score head: the same for every run of this arm
        model = models.load_model(
            ctx.model_dir,
            "causal_lm",
            num_labels=1,
            extra_kwargs=ctx.method.load_kwargs(ctx.method_params, probe),
            tokenizer=ctx.tokenizer,
        )
        return ctx.method.wrap(model, ctx.method_params, ArmContext(model_type=model.config.model_type, **wrap_ctx))


def save(model, tokenizer, folder: Path, *, base, max_len: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    if not (folder / "config.json").is_file():  # an adapter: its classifier's config, so every saved RM has one
        model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / INFO).write_text(json.dumps({"base": str(base), "max_len": max_len}, indent=2))


def held_out_accuracy(scorer, pairs: list[dict], ctx) -> tuple[dict, dict]:
    """Share of held-out pairs the reward model orders right (chosen above rejected), its bootstrap
    CI over pairs, and the mean margin."""
    import numpy as np

    from harness.eval.stats import bootstrap_ci

    if not pairs:
        return {"reward_model_accuracy": None, "reward_model_margin": None}, {}
    chosen = scorer.score([p["prompt"] + p["chosen"] for p in pairs])
    rejected = scorer.score([p["prompt"] + p["rejected"] for p in pairs])
    margins = np.array(chosen) - np.array(rejected)
    correct = (margins > 0).astype(float)
    interval = bootstrap_ci(correct, resamples=ctx.budget.bootstrap_resamples, seed=ctx.budget.seed)
    metrics = {
        "reward_model_accuracy": round(float(correct.mean()), 6),
        "reward_model_margin": round(float(margins.mean()), 6),
    }
    return metrics, ({"reward_model_accuracy": interval} if interval else {})


class RewardScorer:
    """Scalar rewards of whole texts (prompt + completion) from a reward model, in batches, each
    text ending with the end-of-sequence token as in RewardTrainer's training data."""

    def __init__(self, model, tokenizer, max_len: int, batch_size: int = 8):
        self.model, self.tokenizer, self.max_len, self.batch_size = model.eval(), tokenizer, max_len, batch_size

    @classmethod
    def load(cls, folder: Path) -> "RewardScorer":
        from transformers import AutoModelForSequenceClassification

        from harness import models

        # A folder this stage saved has INFO; any other saved sequence classifier with one output works too.
        info = json.loads((folder / INFO).read_text()) if (folder / INFO).is_file() else {"max_len": 512}
        tokenizer = models.load_tokenizer(folder)
        if (folder / "adapter_config.json").is_file():  # a peft adapter (with the score head) on the base
            from peft import PeftModel

            base = models.load_model(Path(info["base"]), "causal_lm", num_labels=1, tokenizer=tokenizer)
            model = PeftModel.from_pretrained(base, str(folder))
        else:
            model, loading = AutoModelForSequenceClassification.from_pretrained(
                str(folder), use_safetensors=True, output_loading_info=True
            )
            if loading.get("missing_keys"):  # the score head (or more) newly initialised: a random reward
                raise HarnessError(
                    f"the reward model at {folder} has no trained weights for "
                    f"{', '.join(sorted(loading['missing_keys'])[:3])}: its score would be random",
                    key="rewards.reward_model",
                    fix=FOLDER_FIX,
                )
        model.config.pad_token_id = tokenizer.pad_token_id
        return cls(model, tokenizer, info["max_len"])

    def score(self, texts: list[str]) -> list[float]:
        import torch

        eos = self.tokenizer.eos_token or ""
        texts = [t if t.endswith(eos) else t + eos for t in texts]
        device = next(self.model.parameters()).device
        side, self.tokenizer.truncation_side = self.tokenizer.truncation_side, "left"  # keep the completion
        out = []
        try:
            for start in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    texts[start : start + self.batch_size],
                    add_special_tokens=False,
                    truncation=True,
                    max_length=self.max_len,
                    padding=True,
                    return_tensors="pt",
                ).to(device)
                with torch.no_grad():
                    out += self.model(**enc).logits[:, 0].float().tolist()
        finally:
            self.tokenizer.truncation_side = side
        return out


def reward_model_folder(params, ctx) -> Path:
    """The saved reward model a `reward_model` reward names: the arm the plan resolved (a sibling
    folder of this arm's, in the same run) or a path (absolute after the plan)."""
    if params.arm:
        if ctx is None or ctx.arm_dir is None:
            raise HarnessError(
                f"reward model of arm '{params.model}' is reachable only from an arm folder of the same run",
                key="rewards.reward_model",
                fix="run with the local executor, or give the path of its saved reward_model folder",
            )
        folder = ctx.arm_dir.parent / params.arm / FOLDER
    else:
        folder = Path(params.model)
    problem = saved_folder_problem(folder)
    if problem:
        raise HarnessError(problem, key="rewards.reward_model", fix=FOLDER_FIX)
    return folder


FOLDER_FIX = "name an earlier arm with a reward_model stage (its `name:`), or the reward_model folder it saved"


def saved_folder_problem(folder: Path) -> str | None:
    """Why a folder is not a saved reward model, read without loading weights: a config.json that
    is not a JSON object, or a model that is not a sequence classifier (a causal LM's folder would
    get a newly initialised score head: a random reward). An adapter folder (peft, with the score
    head among its saved modules) needs its adapter_config.json to be JSON too."""
    config = folder / "config.json"
    if not config.is_file():
        return f"no saved reward model at {folder} (it has no config.json)"
    parsed = {}
    for name in ("config.json", "adapter_config.json"):
        if name == "config.json" or (folder / name).is_file():
            try:
                parsed[name] = json.loads((folder / name).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
                return f"{folder / name} is not a readable JSON file ({type(err).__name__})"
            if not isinstance(parsed[name], dict):
                return f"{folder / name} is not a JSON object"
    if "adapter_config.json" in parsed:
        return None
    architectures = parsed["config.json"].get("architectures") or []
    if not any(isinstance(a, str) and a.endswith("ForSequenceClassification") for a in architectures):
        what = ", ".join(map(str, architectures)) or "a model with no `architectures`"
        return (
            f"{folder} holds {what}, not a sequence-classification model: "
            "its score head would be newly initialised, a random reward"
        )
    return None
