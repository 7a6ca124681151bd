"""The local executor: up to N arm processes at once on this machine, each pinned to its own
device(s) through CUDA_VISIBLE_DEVICES; on CPU, N arms split the cores.

One thread per running arm starts the process and reads its events; everything goes through one
queue to the runner's thread, which alone records results and writes results.json.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

from harness.execution.devices import DevicePool, busy_cpu_hint, devices_needed, threads_per_arm, visible_devices
from harness.execution.launch import Event, Finished, Started, arm_environment, run_arm_process, stop
from harness.results.arm_result import now


class LocalPool:
    name = "local"

    def __init__(self, jobs: int | None = None, devices: list[str] | None = None):
        self.devices = visible_devices() if devices is None else devices
        self.jobs = jobs or max(1, len(self.devices))
        self.threads = threads_per_arm(self.jobs)

    def describe(self) -> str:
        where = f"{len(self.devices)} GPU(s)" if self.devices else f"CPU, {self.threads} thread(s) per arm"
        hint = None if self.devices else busy_cpu_hint(self.threads)
        return f"local pool: {self.jobs} arm(s) at once, {where}" + (f"; {hint}" if hint else "")

    def run(self, jobs: list[tuple[object, Path]]) -> Iterator[Started | Event | Finished]:
        """Run every (arm, arm folder) and yield what happens, in the caller's thread. Closing the
        generator (Ctrl-C in the caller) stops the running arms and starts no new one."""
        pool = DevicePool(self.devices)
        for arm, _ in jobs:
            pool.check_fits(arm)
        updates: queue.Queue = queue.Queue()
        running: dict[str, object] = {}  # arm slug -> its process
        lock = threading.Lock()

        def one(arm, arm_dir: Path) -> None:
            devices = pool.acquire(devices_needed(arm))
            if devices is None:  # the run is stopping
                return
            started = now()
            try:
                env = arm_environment(
                    {
                        "HARNESS_THREADS": str(self.threads),
                        "HARNESS_EXECUTOR": "local",
                        **({"CUDA_VISIBLE_DEVICES": ",".join(devices)} if devices else {}),
                    }
                )

                def on_start(proc):
                    with lock:
                        running[arm.slug] = proc
                    if pool.closed:  # stopped between acquire and here
                        proc.terminate()
                    updates.put(Started(arm, f"cuda {','.join(devices)}" if devices else f"cpu x{self.threads}"))

                code = run_arm_process(
                    arm_dir / "arm.json",
                    arm_dir,
                    env=env,
                    on_start=on_start,
                    on_event=lambda event: updates.put(Event(arm, event)),
                    devices=devices_needed(arm),
                )
                updates.put(Finished(arm, code, started))
            except Exception as err:  # noqa: BLE001 - the arm could not start: recorded as failed
                updates.put(Finished(arm, None, started, error=f"could not start the arm process: {err}"))
            finally:
                with lock:
                    running.pop(arm.slug, None)
                pool.release(devices)

        threads = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="arm")
        try:
            for arm, arm_dir in jobs:
                threads.submit(one, arm, arm_dir)
            remaining = len(jobs)
            while remaining:
                try:
                    update = updates.get(timeout=0.5)  # a timeout keeps Ctrl-C responsive
                except queue.Empty:
                    continue
                if isinstance(update, Finished):
                    remaining -= 1
                yield update
        finally:
            pool.close()  # queued arms never start
            with lock:
                procs = list(running.values())
            for proc in procs:
                stop(proc)
            threads.shutdown(wait=True, cancel_futures=True)
