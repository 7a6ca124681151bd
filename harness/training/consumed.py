"""The one budget every training arm consumes, and the record of what it actually consumed.

Identical by construction: the example order depends only on (number of examples, seed), never
on the method, so every arm sees the same examples in the same order.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, field


def example_order(n: int, count: int, seed: int) -> list[int]:
    """`count` indices into n examples: seeded permutations, epoch after epoch."""
    if n <= 0:
        raise ValueError("no training examples")
    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < count:
        epoch = list(range(n))
        rng.shuffle(epoch)
        order.extend(epoch)
    return order[:count]


def order_digest(ids: list[str]) -> str:
    """A short hash of the example ids in the order they were trained on (the budget audit)."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


@dataclass
class Consumed:
    """What a training arm actually consumed; compared across arms in the report."""

    steps: int = 0
    examples: int = 0
    tokens: int = 0            # trained-on tokens: non-padding, and for SFT non-masked
    seconds: float = 0.0
    order_hash: str = ""
    planned_steps: int = 0
    stopped_early: bool = False
    stop_reason: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)
