"""Activation checkpointing (`budget.gradient_checkpointing: true`): each transformer block keeps
only its input in the forward pass and recomputes the rest in the backward pass, so activation
memory stops growing with depth, for about a third more compute.

One place, in the shared loop, for every method: transformers' own per-block checkpointing,
non-reentrant (it needs no `enable_input_require_grads`, so it works the same under a frozen base,
LoRA, QLoRA and FSDP2). QLoRA's `prepare_model_for_kbit_training` leaves it off; this turns it on
for QLoRA arms alike.
"""

from __future__ import annotations

from harness.errors import HarnessError


def enable_activation_checkpointing(model) -> None:
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5's name
    if enable is None:
        raise HarnessError(
            f"budget.gradient_checkpointing is true but a {type(model).__name__} has no per-block checkpointing",
            key="budget.gradient_checkpointing",
            fix="set it to false for this experiment, or use a transformers model",
        )
    enable(activation_checkpointing_kwargs={"use_reentrant": False})
