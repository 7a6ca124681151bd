"""Encoder heads per task type: which transformers Auto class carries the head, which shared
objective trains it, and whether its size is the number of labels. A method whose encoder
objective is "classification" (full_ft, lora, ...) trains whichever head the task type needs,
so one method covers sequence classification, token classification (NER) and extractive QA."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EncoderHead:
    auto_class: str      # transformers class that adds the head to the encoder
    objective: str       # harness.objectives name
    labelled: bool       # the head has one output per label (QA: start/end instead)


ENCODER_HEADS = {
    "classification": EncoderHead("AutoModelForSequenceClassification", "classification", True),
    "token_classification": EncoderHead("AutoModelForTokenClassification", "token_classification", True),
    "extractive_qa": EncoderHead("AutoModelForQuestionAnswering", "extractive_qa", False),
}


def encoder_head(kind: str, task_type: str) -> EncoderHead | None:
    return ENCODER_HEADS.get(task_type) if kind == "encoder" else None


def objective_name(method, kind: str, task_type: str) -> str:
    """The objective that trains `method` on this kind and task type."""
    name = method.objective_for(kind)
    head = encoder_head(kind, task_type)
    return head.objective if name == "classification" and head else name


def num_labels(kind: str, task: dict) -> int | None:
    """Outputs of the new head, or None when the model keeps no labelled head."""
    head = encoder_head(kind, task["type"])
    return len(task["labels"]) if head and head.labelled and task.get("labels") else None
