"""A task's examples: prepared data or the user's files, mapped to our field names."""

from __future__ import annotations

from pathlib import Path

from harness.data import loaders, prepared


def split_path(data: dict, split: str) -> Path | None:
    if data.get("prepared"):
        return prepared.prepared_dir(data["prepared"]) / f"{split}.jsonl"
    return Path(data[split]) if data.get(split) else None


def load_split(task: dict, split: str) -> list[dict]:
    data = task["data"]
    path = split_path(data, split)
    if path is None:
        return []
    columns = {} if data.get("prepared") else data.get("columns", {})
    return loaders.load_examples(path, columns, fmt=data.get("format"))


def load_task(task: dict, budget: dict) -> tuple[list[dict], list[dict], dict]:
    """(train, test, task with labels filled in). The test split is cut to budget.eval_examples."""
    train = load_split(task, "train")
    if task.get("max_train_examples"):
        train = train[: task["max_train_examples"]]
    test = load_split(task, "test")
    if budget.get("eval_examples"):
        test = test[: budget["eval_examples"]]
    if task["type"] == "classification" and not task.get("labels"):
        task = {**task, "labels": sorted({e["label"] for e in train})}
    return train, test, task
