"""Which devices this machine shows, how many an arm needs, and handing them out so that no two
running arms share one (sharing a GPU distorts the memory and latency an arm reports)."""

from __future__ import annotations

import os
import threading

from harness.errors import HarnessError


def visible_devices() -> list[str]:
    """The GPU ids arms may be pinned to: $CUDA_VISIBLE_DEVICES when set (so a user, or a test,
    chooses the list), else every GPU torch counts; empty on a CPU machine."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    import torch  # counts through NVML without initialising CUDA in the parent

    return [str(i) for i in range(torch.cuda.device_count())]


def devices_needed(arm) -> int:
    """Devices one arm runs on: the plan's `Arm.devices` (budget or arm `devices:`; an arm that
    trains nothing gets 1). Executors read it here and nowhere else."""
    return int(getattr(arm, "devices", None) or 1)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def busy_cpu_hint(threads: int, load: float | None = None) -> str | None:
    """A warning when other processes already hold cores: an arm's torch threads meet at a barrier
    after every operation, so one thread waiting for a core stalls them all. Measured on this
    2-core machine: a SmolLM2 LoRA step took about 40 s with 2 threads while one other process
    ran, 4.5 s with 1 thread beside the same process."""
    if threads < 2:
        return None
    load = os.getloadavg()[0] if load is None and hasattr(os, "getloadavg") else load
    if load is None or load < 1.0:
        return None
    return (
        f"the machine is busy (load average {load:.1f} on {usable_cores()} cores): arms with {threads} threads "
        "slow down many times when other processes hold cores; HARNESS_THREADS=1 avoids it"
    )


def threads_per_arm(jobs: int) -> int:
    """N arms at once split the cores, so they do not oversubscribe them; $HARNESS_THREADS, when
    set, is the user's own choice of threads per arm (for a machine shared with other work)."""
    return chosen_threads() or max(1, usable_cores() // jobs)


def chosen_threads() -> int | None:
    """$HARNESS_THREADS as a positive whole number, None when unset; one sentence when it is
    anything else (abc, 0, -1, 1.5), never silently ignored."""
    chosen = os.environ.get("HARNESS_THREADS", "").strip()
    if not chosen:
        return None
    if not chosen.isdigit() or int(chosen) < 1:
        raise HarnessError(
            f"HARNESS_THREADS is {chosen!r}, not a positive whole number",
            fix="set it to the threads each arm may use (e.g. HARNESS_THREADS=1) or unset it",
        )
    return int(chosen)


class DevicePool:
    """Free device ids; `acquire(k)` blocks until k are free (or the pool is closed)."""

    def __init__(self, devices: list[str]):
        self.free = list(devices)
        self.total = len(devices)
        self.closed = False
        self._cond = threading.Condition()

    def check_fits(self, arm) -> None:
        need = devices_needed(arm)
        if int(arm.budget.get("nodes") or 1) > 1:
            raise HarnessError(
                f"arm '{arm.name}' spreads its devices over {arm.budget.get('nodes')} nodes, which only a Ray "
                "cluster has",
                fix="run it with --executor ray, or set budget.nodes: 1",
            )
        if self.total and need > self.total:
            raise HarnessError(
                f"arm '{arm.name}' needs {need} devices and this machine shows {self.total}",
                fix="run it on a bigger machine (--executor ray) or give it fewer devices",
            )

    def acquire(self, count: int) -> list[str] | None:
        """k device ids, [] on a CPU machine, None once the pool is closed (the run is stopping)."""
        if not self.total:
            return None if self.closed else []
        with self._cond:
            self._cond.wait_for(lambda: self.closed or len(self.free) >= count)
            if self.closed:
                return None
            taken, self.free = self.free[:count], self.free[count:]
            return taken

    def release(self, devices: list[str]) -> None:
        with self._cond:
            self.free.extend(devices)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
