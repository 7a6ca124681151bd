"""The record of what a training arm actually consumed (steps, examples, tokens, seconds, the hash
of its example order), compared across arms by the budget audit (harness.results.audit)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Consumed:
    """What a training arm actually consumed; compared across arms in the report."""

    steps: int = 0
    examples: int = 0
    tokens: int = 0  # trained-on tokens: non-padding, and for SFT non-masked
    seconds: float = 0.0
    order_hash: str = ""
    planned_steps: int = 0
    stopped_early: bool = False
    stop_reason: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)
