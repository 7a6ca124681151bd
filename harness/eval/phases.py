"""Where an arm's seconds go: a wall clock split into named phases (load, forgetting, train,
label scoring, latency pass, golden sets, ...), recorded in the arm's result
(metrics_detail.phase_seconds) so a slow run can be broken down afterwards
(bench/first_run_profile.py)."""

from __future__ import annotations

import time


def process_age_seconds() -> float | None:
    """Seconds since this process started (interpreter start-up and imports before any phase)."""
    try:
        import psutil

        return max(time.time() - psutil.Process().create_time(), 0.0)
    except Exception:  # noqa: BLE001 - a missing start-up figure must not fail an arm
        return None


class PhaseClock:
    def __init__(self):
        startup = process_age_seconds()
        self.seconds: dict[str, float] = {"startup": round(startup, 3)} if startup is not None else {}
        self.current: str | None = None
        self.since = time.perf_counter()

    def start(self, name: str) -> None:
        """Close the running phase and start `name` (a phase entered twice adds up)."""
        self.stop()
        self.current, self.since = name, time.perf_counter()

    def stop(self) -> None:
        if self.current is not None:
            elapsed = time.perf_counter() - self.since
            self.seconds[self.current] = round(self.seconds.get(self.current, 0.0) + elapsed, 3)
            self.current = None

    def breakdown(self) -> dict[str, float]:
        self.stop()
        return dict(self.seconds)
