"""A task's examples: prepared data or the user's files, mapped to our field names."""

from __future__ import annotations

from pathlib import Path

from harness.config.schema import Budget
from harness.data import loaders, prepared
from harness.tasks import task_type


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
    return loaders.load_examples(path, columns, fmt=data.get("format"), required=task_type(task["type"]).fields[:1])


def load_task(task: dict, budget: Budget) -> tuple[list[dict], list[dict], dict]:
    """(train, test, task with labels filled in). The test split is cut to budget.eval_examples."""
    train = load_split(task, "train")
    if task.get("max_train_examples"):
        train = train[: task["max_train_examples"]]
    test = load_split(task, "test")
    if budget.eval_examples:
        test = test[: budget.eval_examples]
    return train, test, with_labels(task, train)


def with_labels(task: dict, train: list[dict]) -> dict:
    """The task with `labels:` read from the train split when the YAML leaves it out (labelled
    task types only): sorted labels, or the BIO tags of a token-classification split."""
    if task.get("labels"):
        return task
    if task["type"] == "classification":
        return {**task, "labels": sorted({e["label"] for e in train})}
    if task["type"] == "token_classification":
        return {**task, "labels": tag_labels(train)}
    return task


def tag_labels(train: list[dict]) -> list[str]:
    """BIO tags of a token-classification train split: "O" first, then by entity type, B before I."""
    tags = {t for e in train for t in e["tags"]} - {"O"}
    return ["O"] + sorted(tags, key=lambda t: (t[2:], t[:1]))
