"""The identical budget, verified: arms consume the same examples in the same order, and an arm
that stops early (time_limit_s) is flagged in results.json and on the console (⚑)."""

from __future__ import annotations

import json

from rich.console import Console

from harness.data.order import example_order, order_digest
from harness.data.task_examples import load_task
from harness.execution.single_task_arm import execute_arm
from harness.planning.experiment_loader import load_experiment
from harness.planning.plan import plan
from harness.report.console import print_results
from harness.results.audit import budget_audit
from tests.test_runner import results_of, run_cli


def test_two_methods_consume_the_same_examples_in_the_same_order(write_experiment, tmp_path):
    path = write_experiment(
        [{"method": "ia3", "model": "llama"}, {"method": "lora", "model": "bert"}], budget={"max_steps": 3}
    )
    arms = plan(load_experiment(path))
    results = [execute_arm(arm, tmp_path / arm.slug) for arm in arms]
    ia3, lora = (r.consumed for r in results)
    assert ia3["steps"] == lora["steps"] == 3 and ia3["examples"] == lora["examples"] == 12
    # The order both saw is the seeded one, independent of the method: recompute it here.
    train, _, _ = load_task(arms[0].task.model_dump(), arms[0].budget)
    expected = order_digest([train[i]["id"] for i in example_order(len(train), 12, seed=0)])
    assert ia3["order_hash"] == lora["order_hash"] == expected
    assert ia3["tokens"] > 0 and lora["tokens"] > 0
    assert budget_audit(results) == {"identical": True, "flags": {}, "health": {}}
    # Another seed is another order: compared only with arms of its own seed, it is not flagged...
    other = execute_arm(plan(load_experiment(path, ["budget.seed=1"]))[0], tmp_path / "seed1")
    other.arm["name"] = "ia3 seed 1"
    assert other.consumed["order_hash"] != expected
    assert budget_audit(results + [other]) == {"identical": True, "flags": {}, "health": {}}
    # ...but an arm that claims seed 0 and saw that other order is.
    impostor = other.model_copy(deep=True)
    impostor.arm["seed"], impostor.arm["name"] = 0, "ia3 other order"
    audit = budget_audit(results + [impostor])
    assert not audit["identical"] and "order" in audit["flags"]["ia3 other order"][0]


def test_an_arm_stopped_by_time_limit_is_flagged(write_experiment, tmp_path):
    path = write_experiment(
        [{"method": "full_ft", "model": "bert", "lr": 1e-3}, {"method": "zero_shot", "model": "llama"}],
        budget={"max_steps": 50, "time_limit_s": 0.01},
    )
    result = run_cli(path, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    _, results = results_of(tmp_path)
    full = results["arms"][0]
    assert full["consumed"]["stopped_early"] and full["consumed"]["steps"] < 50
    assert "time_limit_s" in full["consumed"]["stop_reason"]
    flags = results["budget_audit"]["flags"]
    assert list(flags) == [full["arm"]["name"]] and "stopped early" in flags[full["arm"]["name"]][0]
    assert "⚑" in result.output
    console = Console(record=True, width=250)
    print_results(results, console)
    text = console.export_text()
    flagged = [line for line in text.splitlines() if "⚑ budget" in line]  # (the tiny models may also collapse)
    assert any("full_ft" in line for line in flagged) and not any("zero_shot" in line for line in flagged)


def test_an_encoder_head_arm_gives_the_same_result_whatever_the_global_generator(write_experiment, tmp_path):
    """The classifier head is created inside from_pretrained; torch seeds its global generator at
    random per process, so without seeding before the load the same arm differed run to run."""
    import torch

    path = write_experiment([{"method": "full_ft", "model": "bert"}], budget={"max_steps": 2})
    arm = plan(load_experiment(path))[0]
    runs = []
    for i, generator_seed in enumerate((1, 12345)):
        torch.manual_seed(generator_seed)
        result = execute_arm(arm, tmp_path / f"run{i}")
        probs = [
            json.loads(line)["probs"] for line in (tmp_path / f"run{i}" / "predictions.jsonl").read_text().splitlines()
        ]
        runs.append((result.curves["train_loss"], probs))
    assert runs[0] == runs[1]
