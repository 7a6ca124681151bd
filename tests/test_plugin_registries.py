"""Every kind of plugin has the one registry shape (harness.plugins.Registry): methods, stages,
rewards, training objectives, metrics and executors. Each answers an unknown name with "did you
mean", and each takes a third-party plugin through its entry-point group."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness import plugins
from harness.errors import HarnessError
from harness.eval import metrics
from harness.execution import executors
from harness.methods.registry import METHODS
from harness.stages.registry import STAGES
from harness.stages.rewards import REWARDS
from harness.training import OBJECTIVES, get_objective

REGISTRIES = {
    "harness.methods": METHODS,
    "harness.stages": STAGES,
    "harness.rewards": REWARDS,
    "harness.objectives": OBJECTIVES,
    "harness.metrics": metrics.METRICS,
    "harness.executors": executors.EXECUTORS,
}


def test_every_plugin_kind_is_a_registry_of_one_shape():
    for group, registry in REGISTRIES.items():
        assert isinstance(registry, plugins.Registry) and registry.group == group
        assert registry.names(), f"{group} has no built-ins"


def test_unknown_names_get_did_you_mean():
    with pytest.raises(HarnessError, match="unknown objective 'clasification'; did you mean 'classification'"):
        get_objective("clasification")
    with pytest.raises(HarnessError, match="unknown metric 'acuracy'; did you mean 'accuracy'"):
        metrics.METRICS["acuracy"]
    experiment = SimpleNamespace(executor=SimpleNamespace(name="local", jobs=None), source_file="x.yaml")
    with pytest.raises(HarnessError, match="--executor rey is not an executor; did you mean 'ray'"):
        executors.make_executor(experiment, name="rey")


@pytest.fixture
def third_party(monkeypatch):
    """Fake installed entry points, one per group; each registry reloads (built-ins kept)."""
    installed: dict[str, tuple[str, object]] = {}
    for registry in REGISTRIES.values():
        registry.load()
        monkeypatch.setattr(registry, "loaded", False)
        monkeypatch.setattr(registry, "entries", dict(registry.entries))

    def entry_points(group):
        if group not in installed:
            return []
        name, obj = installed[group]
        return [SimpleNamespace(name=name, load=lambda: obj)]

    monkeypatch.setattr(plugins, "entry_points", entry_points)
    return installed


def test_a_third_party_objective_metric_and_executor_load_through_entry_points(third_party):
    class ToyObjective:
        def train(self, *args, **kwargs):
            return "trained"

    toy_metric = metrics.Metric("toy_score", False, "points", "quality", "a third-party metric")
    made = []

    def toy_executor(spec, *, jobs, address, source, base, fresh):
        made.append((spec.name, jobs, source))
        return "toy executor"

    third_party.update(
        {
            "harness.objectives": ("toy", ToyObjective),
            "harness.metrics": ("toy_score", toy_metric),
            "harness.executors": ("toy", toy_executor),
        }
    )
    assert get_objective("toy").train() == "trained" and ToyObjective.name == "toy"
    assert metrics.METRICS["toy_score"].higher_is_better is False
    assert list(metrics.describe())[-1] == "toy_score"  # after every built-in, which keep their order
    assert list(metrics.describe())[:3] == ["accuracy", "macro_f1", "rouge1"]
    experiment = SimpleNamespace(executor=SimpleNamespace(name="local", jobs=None), source_file="x.yaml")
    assert executors.make_executor(experiment, name="toy", jobs=2) == "toy executor"
    assert made == [("local", 2, "x.yaml")]
