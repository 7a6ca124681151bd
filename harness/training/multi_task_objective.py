"""Joint training of a MultiTaskModel on the one loop (harness.training.loop): batches
interleaved round-robin over the tasks (task t at steps t, t+n, t+2n, ...), max_steps per task
(n x max_steps optimizer steps in all), each task's loss times its weight. Each task draws its
examples from the seeded order exactly as its single-task arm does, so per task the examples,
their order (order hash) and the trained-on tokens match that arm's; the budget audit compares
them per task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.config.schema import Budget
from harness.training import register_objective
from harness.training.consumed import Consumed
from harness.training.loop import Stream, examples_in, train_streams


@dataclass
class TaskData:
    make_batch: Callable  # indices -> (tensors, trained-on tokens), the single-task objective's batcher
    ids: list[str]
    loss_items: Callable[[dict], int] = examples_in  # the single-task objective's count


def train(
    model,
    data: dict[str, TaskData],
    budget: Budget,
    *,
    lr: float,
    head_lr,
    loss_weights: dict,
    on_step=None,
    checkpoint_dir: Path | None = None,
) -> tuple[dict[str, Consumed], dict[str, list]]:
    streams = {
        key: Stream(
            d.make_batch, d.ids, d.loss_items, weight=float(loss_weights.get(key, 1.0)), forward_kwargs={"task": key}
        )
        for key, d in data.items()
    }
    return train_streams(
        model,
        streams,
        budget,
        lr=lr,
        param_groups=model.param_groups(lr, head_lr),
        on_step=on_step,
        checkpoint_dir=checkpoint_dir,
    )


@register_objective("multi_task")
class MultiTaskObjective:
    """Named so that `objective != "none"` reads right; execute_multi calls `train` above."""

    train = staticmethod(train)
