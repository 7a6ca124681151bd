"""How far numbers may move between two computations that should agree, stated once per precision.

Not a test file. An arm evaluates in `budget.eval_precision` (`auto` is fp32 or bf16 depending on
the machine, see harness/eval/precision.py), so a test that recomputes an arm's scores does so in the
arm's precision and compares within the tolerance of that precision.
"""

from __future__ import annotations

# The same scores recomputed in the same precision (a reload, another process, another batch):
# fp32 to predictions.jsonl's 3 decimals, give or take a last digit; bf16 by one unit in the last
# place of a log-prob of magnitude 4 to 8 (bf16 keeps 8 bits of mantissa: 2**-5 there).
RECOMPUTED = {"fp32": 2e-3, "bf16": 2**-5}

# bf16 against fp32 on the tiny test models' label log-probs (nats).
BF16_VS_FP32 = 0.05
