"""The arm's own process: `python -m harness.execution.arm_process ARM_JSON OUT_DIR`.

Writes OUT_DIR/result.json (atomically) whatever happens inside the arm, and progress events on
stdout as lines starting with EVENT_PREFIX, which the runner reads. A crash inside the arm becomes
a `failed` result; the runner goes on with the others.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from harness.errors import HarnessError
from harness.execution.arm_common import arm_summary, emit
from harness.execution.multi_task import execute_multi_task
from harness.execution.single_task import execute_arm
from harness.planning.plan import Arm
from harness.results.arm_result import ArmResult, now


def main(argv: list[str]) -> int:
    arm = Arm.from_json(Path(argv[0]).read_text())
    out_dir = Path(argv[1])
    threads = os.environ.get("HARNESS_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    try:
        if arm.tasks:  # a method spanning tasks (multi_task): one result per task under out_dir/tasks

            result = execute_multi_task(arm, out_dir)
        else:
            result = execute_arm(arm, out_dir)
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # the arm fails; the runner goes on with the others

        message = str(err) if isinstance(err, HarnessError) else f"{type(err).__name__}: {err}"
        (out_dir / "traceback.txt").write_text(traceback.format_exc())
        result = ArmResult(arm=arm_summary(arm), status="failed", error=message, finished_at=now(),
                           artifacts={"traceback": "traceback.txt"})
    result.write(out_dir / "result.json")
    emit("done", status=result.status)
    return 0



if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
