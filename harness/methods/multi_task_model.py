"""The multi-task model: one shared encoder, one head per task (nn.ModuleDict keyed by task).
`model(task=key, **batch)` runs the encoder (with that task's LoRA adapter active, when each task
has one) and that task's head only; `model.for_task(key)` is a view with the signature of a
single-task head model, so the shared predictors evaluate each task unchanged."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers.modeling_outputs import QuestionAnsweringModelOutput, SequenceClassifierOutput, TokenClassifierOutput

from harness.tasks import task_type


def _init(linear: nn.Linear, std: float) -> nn.Linear:
    # As transformers initialises a new head: normal(0, initializer_range), zero bias.
    nn.init.normal_(linear.weight, std=std)
    nn.init.zeros_(linear.bias)
    return linear


class SequenceHead(nn.Module):
    """As BertForSequenceClassification: dense + tanh on [CLS] (a pooler of its own), dropout, linear."""

    def __init__(self, hidden: int, n_out: int, dropout: float, std: float, device=None):
        super().__init__()
        self.dense = _init(nn.Linear(hidden, hidden, device=device), std)
        self.out = _init(nn.Linear(hidden, n_out, device=device), std)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states, labels=None):
        logits = self.out(self.dropout(torch.tanh(self.dense(hidden_states[:, 0]))))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class TokenHead(nn.Module):
    """As BertForTokenClassification: dropout, linear per token; -100 labels are ignored."""

    def __init__(self, hidden: int, n_out: int, dropout: float, std: float, device=None):
        super().__init__()
        self.out = _init(nn.Linear(hidden, n_out, device=device), std)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states, labels=None):
        logits = self.out(self.dropout(hidden_states))
        loss = (
            F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100) if labels is not None else None
        )
        return TokenClassifierOutput(loss=loss, logits=logits)


class SpanHead(nn.Module):
    """As BertForQuestionAnswering: a linear to (start, end) logits; loss = mean of both CEs."""

    def __init__(self, hidden: int, n_out: int | None, dropout: float, std: float, device=None):
        super().__init__()
        self.out = _init(nn.Linear(hidden, 2, device=device), std)

    def forward(self, hidden_states, start_positions=None, end_positions=None):
        start, end = self.out(hidden_states).unbind(-1)
        loss = None
        if start_positions is not None:
            loss = (F.cross_entropy(start, start_positions) + F.cross_entropy(end, end_positions)) / 2
        return QuestionAnsweringModelOutput(loss=loss, start_logits=start, end_logits=end)


# One head module per kind of encoder head (harness.tasks.TaskType.predictor).
HEADS = {"sequence": SequenceHead, "token": TokenHead, "span": SpanHead}
TARGETS = ("labels", "start_positions", "end_positions")


class MultiTaskModel(nn.Module):
    def __init__(self, encoder, tasks: dict[str, dict], *, adapters: bool):
        super().__init__()
        config = encoder.config
        dropout = getattr(config, "classifier_dropout", None) or getattr(config, "hidden_dropout_prob", 0.1)
        std = getattr(config, "initializer_range", 0.02)
        device = next(encoder.parameters()).device
        self.encoder, self.adapters, self.config = encoder, adapters, config
        self.heads = nn.ModuleDict(
            {
                key: HEADS[task_type(t["type"]).predictor](
                    config.hidden_size, t.get("num_labels"), dropout, std, device
                )
                for key, t in tasks.items()
            }
        )

    def forward(self, task: str, **batch):
        if self.adapters:
            self.encoder.set_adapter(task)  # peft: only this task's adapter runs (and trains)
        targets = {k: batch.pop(k) for k in TARGETS if k in batch}
        hidden = self.encoder(**batch).last_hidden_state
        return self.heads[task](hidden, **targets)

    def param_groups(self, lr: float, head_lr) -> list[dict]:
        """AdamW groups: the encoder's trainable part (all of it, or every task's adapter) at `lr`,
        each head at its own rate (`head_lr`: one number, or {task: number})."""
        if self.adapters:  # peft's set_adapter toggles requires_grad; collect every adapter by name
            body = [p for n, p in self.encoder.named_parameters() if "lora_" in n]
        else:
            body = [p for p in self.encoder.parameters() if p.requires_grad]
        groups = [{"params": body, "lr": lr}] if body else []
        for key, head in self.heads.items():
            rate = head_lr.get(key, lr) if isinstance(head_lr, dict) else head_lr
            groups.append({"params": list(head.parameters()), "lr": float(rate)})
        return groups

    def for_task(self, task: str) -> "TaskView":
        return TaskView(self, task)


class TaskView(nn.Module):
    """One task of a MultiTaskModel, called like a single-task head model: view(**batch)."""

    def __init__(self, model: MultiTaskModel, task: str):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, **batch):
        return self.model(task=self.task, **batch)
