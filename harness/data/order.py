"""The seeded example order every training arm reads.

Identical by construction: the order depends only on (number of examples, seed), never on the
method, so every arm sees the same examples in the same order.
"""

from __future__ import annotations

import hashlib
import random


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
