"""The arm's own process: `python -m harness.execution.arm_process ARM_JSON OUT_DIR`.

An arm with `devices: k > 1` runs this same entry point k times under torchrun (see
harness.execution.launch); every rank trains its share, and rank 0 alone evaluates and writes.
Writes OUT_DIR/result.json (atomically) whatever happens inside the arm, and progress events on
stdout as lines starting with EVENT_PREFIX, which the runner reads. A crash inside the arm becomes
a `failed` result; the runner goes on with the others.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

from harness.errors import HarnessError, notices
from harness.execution.arm_common import arm_summary, emit
from harness.execution.launch import die_with_parent, owner_alive
from harness.execution.multi_task_arm import execute_multi_task
from harness.execution.single_task_arm import execute_arm
from harness.paths import disk_full, disk_full_sentence
from harness.planning.plan import Arm
from harness.results.arm_result import ArmResult, now
from harness.training.distributed import is_main_process, world_size


class _ToRunner(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        print(record.getMessage(), flush=True)  # log.txt keeps it too
        emit("notice", text=record.getMessage())


def main(argv: list[str]) -> int:
    die_with_parent()  # under torchrun each rank is torchrun's child: it goes when torchrun goes
    if not owner_alive():  # the runner died before this process could ask to die with it
        return 1
    arm = Arm.from_json(Path(argv[0]).read_text())
    out_dir = Path(argv[1])
    os.environ["HARNESS_ARM_DIR"] = str(out_dir.resolve())  # recorded in the result's placement
    os.environ["HARNESS_STRATEGY"] = arm.budget.strategy  # likewise (with the world size)
    notices.addHandler(_ToRunner())  # sentences for the console: events the runner prints
    threads = os.environ.get("HARNESS_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    if world_size() > 1:
        _join_devices()
        if not is_main_process():  # trains its share; rank 0 alone evaluates and writes result.json
            _run_body(arm, out_dir)  # an exception exits non-zero: torchrun then stops every rank
            return 0
    failed = False
    try:
        result = _run_body(arm, out_dir)
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # the arm fails; the runner goes on with the others
        failed = True
        message = str(err) if isinstance(err, HarnessError) else f"{type(err).__name__}: {err}"
        if disk_full(err):  # a raw SafetensorError or PytorchStreamWriter error says it in its own words
            message = disk_full_sentence(out_dir.resolve())
        elif world_size() > 1:  # a collective error here may be another rank's failure: log.txt has all
            message += f" (rank 0 of {world_size()}; every rank's output is in log.txt)"
        (out_dir / "traceback.txt").write_text(traceback.format_exc())
        result = ArmResult(
            arm=arm_summary(arm),
            status="failed",
            error=message,
            finished_at=now(),
            artifacts={"traceback": "traceback.txt"},
        )
    if not owner_alive():  # a run that was killed: its arm folder is no one's to write any more
        print("the run that started this arm is gone; its result is not written", file=sys.stderr)
        return 1
    result.write(out_dir / "result.json")
    emit("done", status=result.status)
    # Several ranks: a non-zero exit makes torchrun stop the others, which may be waiting in a
    # collective for this one (the runner still reads the `failed` result written above).
    return 1 if failed and world_size() > 1 else 0


def _run_body(arm, out_dir: Path):
    if arm.tasks:  # a method spanning tasks (multi_task): one result per task under out_dir/tasks
        return execute_multi_task(arm, out_dir)
    return execute_arm(arm, out_dir)


def _join_devices() -> None:
    """Under torchrun each rank trains on its own device: make it the current one before any model
    loads ("cuda" then means this rank's GPU; QLoRA's device_map follows it)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
