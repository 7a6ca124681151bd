"""Whether the kernel's out-of-memory killer is the likely sender of an arm's SIGKILL: the
cgroup's count of OOM kills (cgroup v2 memory.events, v1 memory.oom_control) read when the arm
starts and when it ends. A SIGKILL is also what `kill -9` sends, so the count, not the signal,
decides whether a message says "out of memory"."""

from __future__ import annotations

import signal
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _counter_files() -> list[Path]:
    files = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            files.append(CGROUP_ROOT / path.lstrip("/") / "memory.events")
        elif "memory" in controllers.split(","):
            files.append(CGROUP_ROOT / "memory" / path.lstrip("/") / "memory.oom_control")
    return files + [CGROUP_ROOT / "memory.events", CGROUP_ROOT / "memory" / "memory.oom_control"]


def oom_kills() -> int | None:
    """The OOM kills counted in this process's cgroup so far, None where no counter is readable."""
    for path in _counter_files():
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill" and value.strip().isdigit():
                return int(value)
    return None


def killed_by(signal_number: int, before: int | None, after: int | None) -> str:
    """'arm process killed by SIGKILL (...)': which signal, and out of memory only as a likelihood
    the cgroup's OOM-kill count supports."""
    name = signal.Signals(signal_number).name
    if signal_number != signal.SIGKILL:
        return f"arm process killed by {name}"
    if before is not None and after is not None:
        if after > before:
            return (
                f"arm process killed by {name}, likely by the kernel's out-of-memory killer "
                f"(this cgroup's OOM kills rose from {before} to {after} while it ran)"
            )
        return f"arm process killed by {name}, not by the out-of-memory killer (this cgroup counted no OOM kill)"
    return f"arm process killed by {name} (by another process, or by the out-of-memory killer: no OOM count readable)"
