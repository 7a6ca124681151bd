"""Shared fixtures: tiny models built from configs (no download), a tiny sentiment dataset and
an experiment file that uses both."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest
import yaml

from tests.tiny_models import build_tiny_models


@pytest.fixture(autouse=True, scope="session")
def _offline_env(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    mp.setenv("HARNESS_CACHE", str(tmp_path_factory.mktemp("harness-cache")))
    # Never the user's store (the repository's mlflow.db): every run a test starts logs to a temp one.
    store = tmp_path_factory.mktemp("mlflow-store")
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


POSITIVE = ["great", "wonderful", "good", "moving", "funny", "brilliant"]
NEGATIVE = ["bad", "terrible", "boring", "dull", "awful", "weak"]


def sentiment_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        word = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
        rows.append(
            {"uid": f"r{seed}-{i}", "review": f"the film was {word} and the cast was {word}", "sentiment": label}
        )
    return rows


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-data")
    for split, n, seed in (("train", 64, 1), ("test", 16, 2)):
        with open(folder / f"{split}.jsonl", "w") as fh:
            for row in sentiment_rows(n, seed):
                fh.write(json.dumps(row) + "\n")
    return folder


def experiment_dict(
    tiny_models: dict, tiny_data: Path, arms: list[dict], *, name: str = "tiny", budget: dict | None = None
) -> dict:
    return {
        "name": name,
        "question": "Does a tiny encoder beat a tiny decoder?",
        "tasks": {
            "sentiment": {
                "type": "classification",
                "data": {
                    "train": str(tiny_data / "train.jsonl"),
                    "test": str(tiny_data / "test.jsonl"),
                    "columns": {"id": "uid", "text": "review", "label": "sentiment"},
                },
                "labels": ["negative", "positive"],
                "instruction": "Say positive or negative.",
                "prompt": "Review: {text}",
            }
        },
        "models": {"llama": {"source": str(tiny_models["llama"])}, "bert": {"source": str(tiny_models["bert"])}},
        "budget": {
            "max_steps": 2,
            "batch_size": 4,
            "max_seq_len": 48,
            "eval_examples": 8,
            "eval_batch_size": 4,
            "latency_examples": 2,
            **(budget or {}),
        },
        "arms": arms,
    }


@pytest.fixture
def write_experiment(tmp_path, tiny_models, tiny_data):
    """write_experiment(arms, budget=..., edit=fn) -> path of a YAML file in tmp_path."""

    def write(arms: list[dict], *, budget: dict | None = None, edit=None, name: str = "tiny") -> Path:
        data = experiment_dict(tiny_models, tiny_data, copy.deepcopy(arms), name=name, budget=budget)
        if edit:
            edit(data)
        path = tmp_path / "experiment.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


def run_in(folder: Path, path: Path, **kwargs):
    """harness.run(path, **kwargs) with folder as the working directory (reports/ lands there)."""
    import os

    import harness

    old = os.getcwd()
    os.chdir(folder)
    try:
        return harness.run(path, **kwargs)
    finally:
        os.chdir(old)
