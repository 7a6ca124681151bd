"""Runs the arms of a plan, each in its own process, so a crash or out-of-memory kill in one
arm is recorded as `failed` and the others go on. Completed arms are reused on a rerun (same
content hash) unless forced; Ctrl-C keeps every completed arm."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.errors import HarnessError, safe
from harness.execution.arm_common import EVENT_PREFIX, arm_summary
from harness.paths import atomic_write_text, os_problem
from harness.planning.plan import Arm
from harness.results.arm_result import ArmResult, now, task_results, write_run_results

console = Console(stderr=True)


def find_completed(experiment_dir: Path, arm_hash: str) -> Path | None:
    """The newest arm folder of an earlier run of this experiment with an ok result for this hash."""
    candidates = sorted(experiment_dir.glob(f"*/arms/*-{arm_hash[:8]}/result.json"), reverse=True)
    for path in candidates:
        try:
            result = ArmResult.read(path)
        except (OSError, ValueError):
            continue
        if result.status == "ok" and result.arm.get("hash") == arm_hash:
            return path.parent
    return None


class Runner:
    def __init__(self, experiment, arms: list[Arm], *, output_root: Path, force: bool = False,
                 tracker=None, reporter=None, run_id: str | None = None):
        self.experiment, self.arms, self.force, self.tracker = experiment, arms, force, tracker
        self.reporter = reporter  # writes the HTML page before tracking logs the run's artifacts
        self.experiment_dir = output_root / experiment.name
        self.run_id = run_id or _new_run_id(self.experiment_dir)
        self.run_dir = self.experiment_dir / self.run_id
        self.results: list[ArmResult] = []

    def run(self) -> Path:
        self._create_run_dir()
        if self.tracker:
            self.tracker.start_run(self.experiment, self.run_dir)
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[info]}")]
        with Progress(*columns, console=console, transient=False) as progress:
            overall = progress.add_task("arms", total=len(self.arms), info="")
            try:
                for arm in self.arms:
                    for result in self._run_arm(arm, progress):  # several for an arm spanning tasks
                        self._record(result)
                    progress.advance(overall)
            except KeyboardInterrupt:
                self._save()
                console.print(f"[yellow]interrupted[/]: {len(self.results)} completed arm(s) kept in {safe(self.run_dir)}; "
                              "rerun the same command to resume")
                raise
        self._save()
        if self.reporter:
            self.reporter(self.run_dir)
        if self.tracker:
            self.tracker.finish_run(self.run_dir, self.results)
        return self.run_dir

    def _create_run_dir(self) -> None:
        """The run folder and experiment.json, or one sentence (a full disk, `reports` being a file)
        and nothing left behind: no empty run folder, no 0-byte experiment.json."""
        made = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "experiment.json", self._experiment_json())
        except OSError as err:
            if made and self.run_dir.is_dir():
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise HarnessError(f"cannot start the run in {self.run_dir}: {os_problem(err)}",
                               key="output_dir", file=self.experiment.source_file,
                               fix="free some space or point `output_dir:` at a writable folder") from None

    # ------------------------------------------------------------------ one arm

    def _run_arm(self, arm: Arm, progress: Progress) -> list[ArmResult]:
        arm_dir = self.run_dir / "arms" / arm.slug
        previous = None if self.force else find_completed(self.experiment_dir, arm.hash)
        if previous is not None and previous != arm_dir:
            shutil.copytree(previous, arm_dir, dirs_exist_ok=True)
            result = ArmResult.read(arm_dir / "result.json")
            result.reused_from = previous.parent.parent.name
            result.write(arm_dir / "result.json")
            console.print(f"[dim]reused[/] {safe(arm.name)} from run {safe(result.reused_from)}", highlight=False)
            return task_results(arm_dir, result)
        arm_dir.mkdir(parents=True, exist_ok=True)
        (arm_dir / "arm.json").write_text(arm.to_json())
        task = progress.add_task(safe(arm.name), total=None, info="starting")
        log_path = arm_dir / "log.txt"
        started = now()
        with open(log_path, "w", encoding="utf-8") as log:
            proc = subprocess.Popen([sys.executable, "-m", "harness.execution.arm_process", str(arm_dir / "arm.json"), str(arm_dir)],
                                    stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
            try:
                for line in proc.stdout:
                    if line.startswith(EVENT_PREFIX):
                        self._show(progress, task, json.loads(line[len(EVENT_PREFIX):]))
                    else:
                        log.write(line)
                proc.wait()
            except KeyboardInterrupt:
                _stop(proc)
                raise
        progress.remove_task(task)
        result_path = arm_dir / "result.json"
        if proc.returncode == 0 and result_path.is_file():
            result = ArmResult.read(result_path)
        else:
            result = ArmResult(arm=arm_summary(arm), status="failed", error=_exit_reason(proc.returncode, log_path),
                               started_at=started, finished_at=now(), artifacts={"log": "log.txt"})
            result.write(result_path)
        colour = "green" if result.status == "ok" else "red"
        console.print(f"[{colour}]{result.status}[/] {safe(arm.name)}" + (f": {safe(result.error)}" if result.error else ""),
                      highlight=False)
        return task_results(arm_dir, result)

    @staticmethod
    def _show(progress: Progress, task, event: dict) -> None:
        kind = event["event"]
        if kind == "phase":
            progress.update(task, total=event.get("total"), completed=0, info=event["phase"])
        elif kind == "step":
            progress.update(task, total=event["total"], completed=event["step"], info=f"train loss {event['loss']:.3f}")
        elif kind == "eval":
            progress.update(task, total=event["total"], completed=event["done"], info="eval")

    def _record(self, result: ArmResult) -> None:
        self.results.append(result)
        self._save()  # after every arm: a crash of the runner itself loses nothing completed
        if self.tracker:
            self.tracker.log_arm(result, self.run_dir / "arms" / result.arm["slug"])

    def _save(self) -> None:
        experiment = json.loads(self._experiment_json())
        write_run_results(self.run_dir, experiment, self.results,
                          extra={"run_id": self.run_id, "planned_arms": len(self.arms)})

    def _experiment_json(self) -> str:
        return self.experiment.model_dump_json(indent=2)


def _new_run_id(experiment_dir: Path) -> str:
    """A sortable timestamp; a suffix when two runs start within the same second."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_id, n = stamp, 1
    while (experiment_dir / run_id).exists():
        n += 1
        run_id = f"{stamp}-{n}"
    return run_id


def _stop(proc: subprocess.Popen) -> None:
    """The child got the same Ctrl-C; give it a moment to exit, then make sure it does."""
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _exit_reason(code: int | None, log_path: Path) -> str:
    tail = ""
    if log_path.is_file():
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
        tail = lines[-1][:300] if lines else ""
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (likely out of memory)" if -code == signal.SIGKILL else ""
        return f"arm process killed by {name}{hint}" + (f"; last log line: {tail}" if tail else "")
    return f"arm process exited with code {code}" + (f"; last log line: {tail}" if tail else "")
