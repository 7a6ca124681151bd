"""An arm process whose rank $FAIL_RANK raises in its first training step (tests/test_rank_teardown.py
starts it under torchrun in place of harness.execution.arm_process). Every rank writes its pid to
OUT_DIR/rank-<r>.pid first, so the test can check that none outlives the arm."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from harness.execution.arm_process import main
from harness.training import loop

rank = os.environ.get("RANK", "0")
Path(sys.argv[2], f"rank-{rank}.pid").write_text(str(os.getpid()))
real_step = loop.backward_step


def failing_step(*args, **kwargs):
    if rank == os.environ["FAIL_RANK"]:
        raise RuntimeError(f"injected failure on rank {rank}")
    return real_step(*args, **kwargs)


loop.backward_step = failing_step
sys.exit(main(sys.argv[1:]))
