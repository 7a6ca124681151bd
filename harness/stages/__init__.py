"""Training stages (sft, cpt, dpo, orpo, grpo, reward_model, rft): plugins an arm runs in order on its wrapped model."""

from harness.stages.registry import (
    Stage,
    StageContext,
    StageOutcome,
    get_stage,
    normalize_stages,
    register_stage,
    stage_entry,
    stage_names,
)

__all__ = [
    "Stage",
    "StageContext",
    "StageOutcome",
    "get_stage",
    "normalize_stages",
    "register_stage",
    "stage_entry",
    "stage_names",
]
