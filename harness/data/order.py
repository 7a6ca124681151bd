"""The seeded example order every training arm reads.

Identical by construction: the order depends only on (number of examples, seed), never on the
method, so every arm sees the same examples in the same order.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence


def example_order(n: int, count: int, seed: int) -> "ExampleOrder":
    """`count` indices into n examples: seeded permutations, epoch after epoch."""
    if n <= 0:
        raise ValueError("no training examples")
    return ExampleOrder(n, count, seed)


class ExampleOrder(Sequence):
    """The order as a lazy sequence: an epoch's permutation is drawn when a step first reads it,
    so a huge max_steps costs nothing up front (the list of max_steps x batch indices it used to
    build could grow by gigabytes before the first step, and before time_limit_s could act).
    The same rng draws in the same order as a list would give: identical indices."""

    def __init__(self, n: int, count: int, seed: int):
        self.n, self.count, self.seed = n, count, seed
        self._rng, self._epoch_no, self._epoch = random.Random(seed), -1, []

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._at(i) for i in range(*index.indices(self.count))]
        if index < 0:
            index += self.count
        if not 0 <= index < self.count:
            raise IndexError(index)
        return self._at(index)

    def _at(self, i: int) -> int:
        epoch_no = i // self.n
        if epoch_no < self._epoch_no:  # reading backwards (rare): draw again from the seed
            self._rng, self._epoch_no = random.Random(self.seed), -1
        while self._epoch_no < epoch_no:
            self._epoch = list(range(self.n))
            self._rng.shuffle(self._epoch)
            self._epoch_no += 1
        return self._epoch[i % self.n]


def order_digest(ids: list[str]) -> str:
    """A short hash of the example ids in the order they were trained on (the budget audit)."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
