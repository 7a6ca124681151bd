"""Full fine-tuning: every weight trains. On an encoder this is the classic classifier head
fine-tune (the head comes from the classification objective, the body trains with it)."""

from __future__ import annotations

from pydantic import Field

from harness.methods.registry import Method, TrainedParams, register


@register("full_ft")
class FullFineTuning(Method):
    description = "all weights trainable (encoder + new head, or the whole decoder)"

    class Params(TrainedParams):
        lr: float = Field(2e-5, gt=0, description="learning rate (AdamW)")

    def wrap(self, model, params, ctx):
        for p in model.parameters():
            p.requires_grad_(True)
        return model
