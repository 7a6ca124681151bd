"""The reward_model and rft stages on the tiny models: a reward model trains, records its held-out
pairwise accuracy with a CI, is saved and reloads to the same scores; rft keeps exactly the best
completion of the prompts that reach the threshold and counts what it sampled; a reward model
serves as a grpo/rft reward by arm name; validate names a missing reward model in one sentence;
the runner runs the reward model's arm first."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from harness.errors import HarnessError
from harness.planning.experiment_loader import load_experiment
from harness.planning.plan import plan
from harness.stages.rewards import register_reward
from tests.test_alignment import BUDGET, LORA, make_staged, trainable
from tests.test_alignment import run_all as run_with

RFT_BUDGET = {**BUDGET, "stage_steps": {"sft": 2, "rft": 2, "reward_model": 3, "grpo": 1}}


@register_reward("test_positive_only")
def _positive_only(completion: str, target: str, labels=None) -> float:
    """1 + a length bonus for prompts whose answer is positive, the bonus alone otherwise: with
    threshold 1 exactly the positive prompts keep a completion, and the longest one."""
    return float(target == "positive") + min(len(completion), 20) / 100


def _staged_with(write_experiment, tiny_models, stages, method_name="lora"):
    return make_staged(write_experiment, stages, method_name, budget=RFT_BUDGET)


# ------------------------------------------------------------------ reward model


@pytest.mark.parametrize("method_name", ["lora", "full_ft"])
def test_reward_model_trains_records_accuracy_with_ci_and_reloads(method_name, write_experiment, tiny_models, tmp_path):
    from harness.stages.reward_model import FOLDER, RewardScorer, held_out_accuracy

    model, tok, train, test, task, arm, method = _staged_with(
        write_experiment, tiny_models, ["reward_model"], method_name
    )
    policy_before = trainable(model)
    arm_dir = tmp_path / "arms" / "rm"
    consumed, curves, metrics, ci = run_with(
        arm.stages, model, tok, train, test, task, arm, method, arm_dir=arm_dir, model_dir=Path(arm.model.source)
    )
    assert consumed.steps == 3 and consumed.examples == 3 * arm.budget.batch_size and consumed.tokens > 0
    assert len(curves["reward_model_loss"]) == 3
    accuracy = metrics["reward_model_accuracy"]
    assert 0 <= accuracy <= 1 and metrics["reward_model_margin"] is not None
    low, high = ci["reward_model_accuracy"]
    assert low <= accuracy <= high and low < high  # 6 held-out pairs: a real interval
    after = trainable(model)  # the policy is not the reward model: it did not move
    assert all(torch.equal(policy_before[n], after[n]) for n in policy_before)

    folder = arm_dir / FOLDER
    assert list(folder.glob("*.safetensors")) and (folder / "reward_model.json").is_file()
    reloaded = RewardScorer.load(folder)
    from harness.data.preference import task_pairs

    pairs = task_pairs(task, test, "test", tok, seed=1, max_len=arm.budget.max_seq_len)[:6]
    again, _ = held_out_accuracy(reloaded, pairs, SimpleNamespace(budget=arm.budget))
    assert again["reward_model_accuracy"] == accuracy
    assert again["reward_model_margin"] == pytest.approx(metrics["reward_model_margin"], abs=1e-4)
    texts = [p["prompt"] + p["chosen"] for p in pairs[:3]]
    assert reloaded.score(texts) == pytest.approx(RewardScorer.load(folder).score(texts))


def test_reward_model_is_a_reward_for_grpo_and_rft_by_arm_name(write_experiment, tiny_models, tmp_path):
    from harness.stages.reward_model import FOLDER, RewardScorer
    from harness.stages.rewards import build_rewards

    rm_stages = ["reward_model"]
    model, tok, train, test, task, arm, method = _staged_with(write_experiment, tiny_models, rm_stages)
    run_with(
        arm.stages,
        model,
        tok,
        train,
        test,
        task,
        arm,
        method,
        arm_dir=tmp_path / "arms" / "rm-arm",
        model_dir=Path(arm.model.source),
    )
    ref = {"reward_model": {"model": "rm", "arm": "rm-arm"}}
    ctx = SimpleNamespace(arm_dir=tmp_path / "arms" / "user-arm")
    ((name, reward),) = build_rewards([ref], ctx)
    direct = RewardScorer.load(tmp_path / "arms" / "rm-arm" / FOLDER)
    got = reward.score(["positive", "negative"], ["Review: fine", "Review: fine"], ["positive"] * 2, [None] * 2)
    assert name == "reward_model" and got == pytest.approx(
        direct.score(["Review: finepositive", "Review: finenegative"])
    )

    saved = {"reward_model": str(tmp_path / "arms" / "rm-arm" / FOLDER)}  # the path form, through validate
    for stage in ({"grpo": {"rewards": [saved]}}, {"rft": {"rewards": [saved], "threshold": -1e9}}):
        model, tok, train, test, task, arm, method = _staged_with(write_experiment, tiny_models, [stage])
        stage_name = next(iter(stage))
        consumed, curves, metrics, _ = run_with(
            arm.stages, model, tok, train, test, task, arm, method, arm_dir=ctx.arm_dir
        )
        mean = metrics["grpo_mean_reward" if stage_name == "grpo" else "rft_mean_reward"]
        assert mean is not None and mean == mean  # finite scores of the reward model, not NaN
        assert consumed.steps == RFT_BUDGET["stage_steps"][stage_name]


# ------------------------------------------------------------------ rft


def test_best_above_on_known_scores():
    from harness.stages.rft import best_above

    assert best_above([0.2, 0.9, 0.5], 0.5) == 1
    assert best_above([0.2, 0.4], 0.5) is None
    assert best_above([0.7, 0.7], 0.7) == 0  # ties: the first, and reaching the threshold is enough


def test_rft_keeps_only_the_best_completion_above_threshold(write_experiment, tiny_models, tmp_path):
    stages = [{"rft": {"rewards": ["test_positive_only"], "threshold": 1.0, "samples": 3, "lr": 1e-2}}]
    model, tok, train, test, task, arm, method = _staged_with(write_experiment, tiny_models, stages)
    before = trainable(model)
    consumed, curves, metrics, _ = run_with(arm.stages, model, tok, train, test, task, arm, method, work_dir=tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "rft" / "rft_round0.jsonl").read_text().splitlines()]
    prompts = 2 * arm.budget.batch_size  # the stage's steps x batch
    assert len(rows) == prompts and all(len(r["completions"]) == 3 for r in rows)
    targets = {e["id"]: e["label"] for e in train}
    for row in rows:
        expected = [_positive_only(c, targets[row["id"]]) for c in row["completions"]]
        assert row["rewards"] == pytest.approx(expected)
        if targets[row["id"]] == "positive":
            assert row["kept"] == max(range(3), key=lambda i: (expected[i], -i))
        else:
            assert row["kept"] is None  # best reward < 1: nothing of a negative prompt is kept
    kept = sum(r["kept"] is not None for r in rows)
    assert 0 < kept < prompts
    assert metrics["rft_kept_fraction"] == pytest.approx(kept / prompts)
    assert consumed.steps == 2 and not consumed.stopped_early
    assert consumed.extra["stages"][0]["extra"]["rounds"][0]["kept"] == kept
    extra = consumed.extra["stages"][0]["extra"]
    assert extra["sampled"] == prompts * 3 and extra["generated_tokens"] >= prompts * 3  # at least one token each
    assert any(not torch.equal(before[n], p) for n, p in trainable(model).items())


def test_rft_with_nothing_above_threshold_trains_nothing_and_says_so(write_experiment, tiny_models, tmp_path):
    stages = [{"rft": {"rewards": ["test_positive_only"], "threshold": 5.0, "samples": 2, "rounds": 2}}]
    model, tok, train, test, task, arm, method = _staged_with(write_experiment, tiny_models, stages)
    before = trainable(model)
    consumed, _, metrics, _ = run_with(arm.stages, model, tok, train, test, task, arm, method, work_dir=tmp_path)
    assert consumed.steps == 0 and consumed.stopped_early and "threshold" in consumed.stop_reason
    assert metrics["rft_kept_fraction"] == 0
    rounds = consumed.extra["stages"][0]["extra"]["rounds"]
    assert [r["kept"] for r in rounds] == [0, 0] and all(r["generated_tokens"] > 0 for r in rounds)
    assert all(torch.equal(before[n], p) for n, p in trainable(model).items())


# ------------------------------------------------------------------ validate, plan, order


def _uses(reference):
    return {**LORA, "stages": [{"grpo": {"rewards": ["format", {"reward_model": reference}]}}]}


@pytest.mark.parametrize(
    "arms, expected",
    [
        ([_uses("rm")], "no earlier arm is named 'rm' and no saved reward_model folder is at"),
        ([_uses("rm"), {**LORA, "name": "rm", "stages": ["reward_model"]}], "arm 'rm' comes at or after this arm"),
        ([{**LORA, "name": "rm", "stages": ["sft"]}, _uses("rm")], "arm 'rm' has no reward_model stage"),
    ],
)
def test_validate_names_a_missing_reward_model_in_one_sentence(arms, expected, write_experiment):
    path = write_experiment(arms, budget=RFT_BUDGET)
    with pytest.raises(HarnessError) as err:
        load_experiment(path)
    message = str(err.value)
    assert message.startswith(f"{path}:") and message.count("\n") == 0
    assert expected in message and "stages[0].grpo.rewards[1].reward_model" in message


def test_plan_links_the_reward_model_arm_and_the_runner_runs_it_first(write_experiment, tmp_path):
    from harness.execution.runner import waves

    def arms_with(rm_lr):
        rm = {**LORA, "name": "rm", "stages": [{"reward_model": {"lr": rm_lr}}]}
        return plan(load_experiment(write_experiment([rm, _uses("rm"), LORA], budget=RFT_BUDGET)))

    rm, user, plain = arms_with(1e-3)
    linked = user.stages[0]["params"]["rewards"][1]["reward_model"]
    assert linked == {"model": "rm", "arm": rm.slug}
    assert arms_with(2e-3)[1].hash != user.hash  # another reward model: another arm
    order = waves([(user, tmp_path), (plain, tmp_path), (rm, tmp_path)])
    assert [[a.slug for a, _ in wave] for wave in order] == [[plain.slug, rm.slug], [user.slug]]
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "config.json").write_text('{"architectures": ["LlamaForSequenceClassification"]}')
    by_path = plan(load_experiment(write_experiment([_uses("saved")], budget=RFT_BUDGET)))[0]
    assert by_path.stages[0]["params"]["rewards"][1]["reward_model"] == {"model": str(saved.resolve()), "arm": None}


def test_stages_command_lists_reward_model_and_rft():
    from typer.testing import CliRunner

    from harness.cli.main import app

    listed = CliRunner().invoke(app, ["stages"], env={"COLUMNS": "300"}).output
    for name in ("reward_model", "rft", "threshold", "center_rewards"):
        assert name in listed


# ------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_runner_reward_model_then_grpo_and_rft_arms(write_experiment, tmp_path):
    from harness.tracking.mlflow_tracker import import_mlflow
    from tests.test_runner import results_of, run_cli

    store = f"sqlite:///{tmp_path / 'track.db'}"
    arms = [
        {**LORA, "name": "rm", "stages": ["reward_model"]},
        {**_uses("rm"), "name": "grpo with rm"},
        {**LORA, "name": "rft", "stages": ["sft", {"rft": {"rewards": ["format"], "threshold": 0.0, "samples": 2}}]},
    ]
    path = write_experiment(
        arms,
        budget={**RFT_BUDGET, "bootstrap_resamples": 200},
        edit=lambda d: d.update(tracking={"uri": store, "experiment_name": "tiny-rm"}),
    )
    result = run_cli(path, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run_dir, results = results_of(tmp_path)
    rm, grpo, rft = results["arms"]
    assert [a["status"] for a in (rm, grpo, rft)] == ["ok"] * 3, [a.get("error") for a in (rm, grpo, rft)]
    assert 0 <= rm["metrics"]["reward_model_accuracy"] <= 1 and len(rm["ci"]["reward_model_accuracy"]) == 2
    assert (run_dir / "arms" / rm["arm"]["slug"] / "reward_model" / "reward_model.json").is_file()
    assert grpo["metrics"]["grpo_mean_reward"] is not None
    assert rft["metrics"]["rft_kept_fraction"] is not None
    assert [s["name"] for s in rft["consumed"]["extra"]["stages"]] == ["sft", "rft"]
    assert results["metric_info"]["reward_model_accuracy"]["higher_is_better"] is True
    page = (run_dir / "index.html").read_text()
    assert "reward_model_accuracy" in page and "rft_kept_fraction" in page
    client = import_mlflow().MlflowClient(tracking_uri=store)
    runs = {
        r.info.run_name: r.data for r in client.search_runs([client.get_experiment_by_name("tiny-rm").experiment_id])
    }
    assert runs[rm["arm"]["name"]].metrics["reward_model_accuracy"] == pytest.approx(
        rm["metrics"]["reward_model_accuracy"]
    )
    assert "rft_kept_fraction" in runs[rft["arm"]["name"]].metrics
