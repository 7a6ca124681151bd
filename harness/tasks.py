"""The one table of task types. Everything that depends on a task's type reads it from here: the
fields an example needs (checked at `validate`), the field a model learns to produce, an encoder's
head and the objective that trains it, the predictor that scores it, peft's TaskType and the
primary metric. Adding a task type means adding one row (and the code its names point to)."""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError, did_you_mean


@dataclass(frozen=True)
class TaskType:
    name: str
    fields: tuple[str, ...]  # what every example needs (after `columns:` mapping)
    target: str  # the field a decoder is trained to produce
    head: str | None = None  # transformers Auto class of an encoder's head; None: no head
    labelled_head: bool = False  # the head has one output per label (QA: start/end instead)
    objective: str | None = None  # harness.training objective that trains the encoder head
    predictor: str | None = None  # encoder predictor (harness.eval.predict_heads.ENCODER_PREDICTORS)
    peft_task_type: str = "SEQ_CLS"  # peft.TaskType name for an encoder with this head
    primary_metric: str = "accuracy"

    @property
    def has_head(self) -> bool:
        return self.head is not None


TASK_TYPES: dict[str, TaskType] = {
    t.name: t
    for t in [
        TaskType(
            "classification",
            ("text", "label"),
            target="label",
            head="AutoModelForSequenceClassification",
            labelled_head=True,
            objective="classification",
            predictor="sequence",
            peft_task_type="SEQ_CLS",
            primary_metric="accuracy",
        ),
        TaskType("generation", ("text", "reference"), target="reference", primary_metric="rouge1"),
        TaskType(
            "token_classification",
            ("tokens", "tags"),
            target="tags",
            head="AutoModelForTokenClassification",
            labelled_head=True,
            objective="token_classification",
            predictor="token",
            peft_task_type="TOKEN_CLS",
            primary_metric="entity_f1",
        ),
        TaskType(
            "extractive_qa",
            ("question", "context", "answer", "answer_start"),
            target="answer",
            head="AutoModelForQuestionAnswering",
            labelled_head=False,
            objective="extractive_qa",
            predictor="span",
            peft_task_type="QUESTION_ANS",
            primary_metric="exact_match",
        ),
    ]
}

# The peft TaskType of a decoder, whatever its task: it always trains as a causal LM.
DECODER_PEFT_TASK_TYPE = "CAUSAL_LM"


def task_type(name: str) -> TaskType:
    if name not in TASK_TYPES:
        raise HarnessError(f"unknown task type '{name}'", fix=did_you_mean(name, TASK_TYPES))
    return TASK_TYPES[name]


def encoder_head(kind: str, type_name: str) -> TaskType | None:
    """The task type's row when an encoder gets a head for it; None for decoders and headless tasks."""
    row = TASK_TYPES.get(type_name)
    return row if kind == "encoder" and row is not None and row.has_head else None


def peft_task_type(kind: str, type_name: str):
    """peft.TaskType for a model of this kind on this task type (decoders: CAUSAL_LM)."""
    from peft import TaskType as PeftTaskType

    row = encoder_head(kind, type_name)
    return PeftTaskType[DECODER_PEFT_TASK_TYPE if kind == "causal_lm" or row is None else row.peft_task_type]


def objective_name(method, kind: str, type_name: str) -> str:
    """The objective that trains `method` on this kind and task type: a method whose encoder
    objective is "classification" trains whichever head the task type has."""
    name = method.objective_for(kind)
    row = encoder_head(kind, type_name)
    return row.objective if name == "classification" and row else name


def num_labels(kind: str, task: dict) -> int | None:
    """Outputs of a new head, or None when the model keeps no labelled head."""
    row = encoder_head(kind, task["type"])
    return len(task["labels"]) if row and row.labelled_head and task.get("labels") else None
