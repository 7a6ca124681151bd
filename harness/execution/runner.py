"""Runs the arms of a plan, each in its own process (side by side through an executor), so a crash
or out-of-memory kill in one arm is recorded as `failed` and the others go on. Completed arms are
reused on a rerun (same content hash) unless forced; an arm killed mid-training resumes from its
last checkpoint (unless forced); Ctrl-C keeps every completed arm."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.errors import HarnessError, safe
from harness.eval.results_statistics import statistics_or_error
from harness.execution.arm_common import arm_summary
from harness.execution.launch import Event, Finished, Started
from harness.execution.local_pool import LocalPool
from harness.execution.oom import killed_by, oom_kills
from harness.paths import atomic_write_text, disk_full, disk_full_sentence, os_problem
from harness.planning.plan import Arm
from harness.results.arm_result import (
    LATEST,
    ArmResult,
    now,
    point_latest,
    reuse_problem,
    task_results,
    write_run_results,
)
from harness.stages.rewards import arm_references
from harness.training.checkpoint import FOLDER as CHECKPOINTS

console = Console(stderr=True)


def find_completed(experiment_dir: Path, arm_hash: str) -> Path | None:
    """The newest arm folder of an earlier run of this experiment with an ok result for this hash."""
    candidates = sorted(
        (p for p in experiment_dir.glob(f"*/arms/*-{arm_hash[:8]}/result.json") if p.parents[2].name != LATEST),
        reverse=True,
    )  # `latest` is a link to a run
    for path in candidates:
        try:
            result = ArmResult.read(path)
        except (OSError, ValueError) as err:  # a torn copy of this arm's result (the folder names its hash)
            console.print(
                f"[yellow]not reusing[/] {safe(path)}: unreadable ({type(err).__name__}); running it again",
                highlight=False,
                soft_wrap=True,
            )
            continue
        if result.status == "ok" and result.arm.get("hash") == arm_hash:
            problem = reuse_problem(path.parent)
            if problem is None:
                return path.parent
            console.print(
                f"[yellow]not reusing[/] {safe(result.arm.get('name'))} from run {safe(path.parents[2].name)}: "
                f"{safe(problem)}; running it again",
                highlight=False,
                soft_wrap=True,
            )
    return None


def take_over_checkpoints(experiment_dir: Path, arm: Arm, arm_dir: Path) -> str | None:
    """An earlier run of this arm (same hash) that was killed left checkpoints: move the newest
    set into this run's arm folder, where the arm process resumes from them. Moved, not copied:
    a full fine-tune's checkpoint is as large as its model. Returns the earlier run's id."""
    target = arm_dir / CHECKPOINTS
    if target.is_dir():
        return None
    for folder in sorted(experiment_dir.glob(f"*/arms/*-{arm.hash[:8]}/{CHECKPOINTS}"), reverse=True):
        if folder.parents[2].name == LATEST:  # a link to a run, which the glob also finds by its id
            continue
        if folder.parent != arm_dir and any(folder.glob("step-*")):  # files, or an FSDP arm's DCP folders
            shutil.move(str(folder), str(target))
            return folder.parent.parent.parent.name
    return None


class Runner:
    """The driver: plans what to reuse, hands the rest to an executor (harness.execution.local_pool
    or ray_executor), and is the only writer of the run's state (results.json after every finished
    arm, MLflow, the report), whichever executor ran the arms and in whatever order they finish."""

    def __init__(
        self,
        experiment,
        arms: list[Arm],
        *,
        output_root: Path,
        force: bool = False,
        tracker=None,
        reporter=None,
        run_id: str | None = None,
        executor=None,
    ):
        self.experiment, self.arms, self.force, self.tracker = experiment, arms, force, tracker
        self.reporter = reporter  # writes the HTML page before tracking logs the run's artifacts
        self.executor = executor or LocalPool(jobs=1)
        self.experiment_dir = output_root / experiment.name
        self.run_id = run_id or _new_run_id(self.experiment_dir)
        self.run_dir = self.experiment_dir / self.run_id
        self.results: list[ArmResult] = []
        self._by_arm: dict[int, list[ArmResult]] = {}  # plan position -> its results (several: multi_task)
        self._oom_before: dict[int, int | None] = {}  # id(arm) -> the cgroup's OOM kills when it started

    def run(self) -> Path:
        self._create_run_dir()
        if self.tracker:
            self.tracker.start_run(self.experiment, self.run_dir)
        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
        ]
        with Progress(*columns, console=console, transient=False) as progress:
            overall = progress.add_task("arms", total=len(self.arms), info="")
            try:
                self._judge_run_step("calibration")
                todo = []
                for position, arm in enumerate(self.arms):
                    reused = self._reuse(arm)
                    if reused is not None:
                        self._record(position, reused)
                        progress.advance(overall)
                    else:
                        todo.append((arm, self._arm_dir(arm)))
                if todo:
                    console.print(f"[dim]{self.executor.describe()}[/]", highlight=False)
                    self._execute(todo, progress, overall)
                self._judge_run_step("pairs")
            except KeyboardInterrupt:
                self._keep_finished_arms()
                self._save()
                console.print(
                    f"[yellow]interrupted[/]: {len(self.results)} completed arm(s) kept in {safe(self.run_dir)}; "
                    "rerun the same command to resume"
                )
                raise
        self._save()
        if self.reporter:
            self.reporter(self.run_dir)
        if self.tracker:
            self.tracker.finish_run(self.run_dir, self.results)
        return self.run_dir

    def _execute(self, todo: list[tuple[Arm, Path]], progress: Progress, overall) -> None:
        """In waves: an arm that reads another arm's output (a reward model, harness.stages.rewards)
        starts once that arm has finished; every other arm is in the first wave."""
        for wave in waves(todo):
            self._execute_wave(wave, progress, overall)

    def _execute_wave(self, todo: list[tuple[Arm, Path]], progress: Progress, overall) -> None:
        position = {id(arm): i for i, arm in enumerate(self.arms)}
        rows: dict[int, object] = {}  # one progress row per running arm
        self._oom_before.update({id(arm): oom_kills() for arm, _ in todo})  # again when an arm starts
        updates = self.executor.run(todo)
        try:
            for update in updates:
                arm = update.arm
                if isinstance(update, Started):  # again after a retry on another worker
                    self._oom_before[id(arm)] = oom_kills()
                    if id(arm) in rows:
                        progress.remove_task(rows.pop(id(arm)))
                    rows[id(arm)] = progress.add_task(safe(arm.name), total=None, info=update.where)
                elif isinstance(update, Event):
                    if id(arm) not in rows:
                        rows[id(arm)] = progress.add_task(safe(arm.name), total=None, info="")
                    if update.event["event"] == "notice":
                        progress.console.print(
                            f"[yellow]{safe(arm.name)}[/]: {safe(update.event.get('text'))}", highlight=False
                        )
                    self._show(progress, rows[id(arm)], update.event)
                elif isinstance(update, Finished):
                    if id(arm) in rows:
                        progress.remove_task(rows.pop(id(arm)))
                    self._record(position[id(arm)], self._finish(update, self._arm_dir(arm)))
                    progress.advance(overall)
        finally:
            updates.close()  # on Ctrl-C: the executor stops its running arms

    def _judge_run_step(self, step: str) -> None:
        """budget.judge's run-level steps (harness.eval.judge_pairs): its calibration against people
        before the arms, arm against arm after them. A failure there is recorded and shown; it never
        loses an arm."""
        spec = self.experiment.budget.judge
        if spec is None:
            return
        from harness.eval.judge_pairs import run_step

        budget = self.experiment.budget
        line = run_step(
            step,
            self.run_dir,
            self.results,
            spec,
            json.loads(self._experiment_json()).get("tasks") or {},
            base_dir=self.experiment.base_dir,
            seed=budget.seed,
            resamples=budget.bootstrap_resamples,
        )
        if line:
            console.print(safe(line), highlight=False)

    # ------------------------------------------------------------------ one arm

    def _keep_finished_arms(self) -> None:
        """On Ctrl-C: an arm whose process wrote its ok result before the interrupt reached the runner
        is kept too (an interrupted arm writes none)."""
        for position, arm in enumerate(self.arms):
            path = self._arm_dir(arm) / "result.json"
            if position not in self._by_arm and path.is_file():
                result = ArmResult.read(path)
                if result.status == "ok":
                    self._record(position, task_results(path.parent, result))

    def _arm_dir(self, arm: Arm) -> Path:
        return self.run_dir / "arms" / arm.slug

    def _reuse(self, arm: Arm) -> list[ArmResult] | None:
        """The results of an earlier run's completed arm with this hash, copied into this run; else
        the arm's folder is prepared (arm.json) for an executor and None returned."""
        arm_dir = self._arm_dir(arm)
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
        resumed = None if self.force else take_over_checkpoints(self.experiment_dir, arm, arm_dir)
        if resumed:
            console.print(f"[dim]resuming[/] {safe(arm.name)} from the checkpoints of run {resumed}", highlight=False)
        return None

    def _finish(self, done: Finished, arm_dir: Path) -> list[ArmResult]:
        """The arm's result.json when its process ended well, else a `failed` result saying why."""
        arm, result_path = done.arm, arm_dir / "result.json"
        written = ArmResult.read(result_path) if result_path.is_file() else None
        if written is not None and (done.returncode == 0 or written.status == "failed"):
            result = written  # a multi-device arm that failed exits non-zero after writing why
        else:
            error = done.error or _exit_reason(done.returncode, arm_dir / "log.txt", self._oom_before.get(id(arm)))
            result = ArmResult(
                arm=arm_summary(arm),
                status="failed",
                error=error,
                started_at=done.started_at,
                finished_at=now(),
                artifacts={"log": "log.txt"},
            )
            result.write(result_path)
        colour = "green" if result.status == "ok" else "red"
        console.print(
            f"[{colour}]{result.status}[/] {safe(arm.name)}" + (f": {safe(result.error)}" if result.error else ""),
            highlight=False,
        )
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

    def _record(self, position: int, results: list[ArmResult]) -> None:
        """Keep an arm's results in plan order, whatever order the arms finish in, and save at once:
        a crash of the runner itself loses nothing completed."""
        self._by_arm[position] = results
        self.results = [r for p in sorted(self._by_arm) for r in self._by_arm[p]]
        self._save()
        if self.tracker:
            for result in results:
                self.tracker.log_arm(result, self.run_dir / "arms" / result.arm["slug"])

    def _save(self) -> None:
        experiment = json.loads(self._experiment_json())
        try:
            write_run_results(
                self.run_dir,
                experiment,
                self.results,
                extra={"run_id": self.run_id, "planned_arms": len(self.arms)},
                statistics=statistics_or_error,
            )
            point_latest(self.run_dir)  # reports/<experiment>/latest: the newest run with a results.json
        except OSError as err:
            if not disk_full(err):
                raise
            raise HarnessError(disk_full_sentence(self.run_dir)) from None

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
            raise HarnessError(
                f"cannot start the run in {self.run_dir}: {os_problem(err)}",
                key="output_dir",
                file=self.experiment.source_file,
                fix="free some space or point `output_dir:` at a writable folder",
            ) from None

    def _experiment_json(self) -> str:
        return self.experiment.model_dump_json(indent=2)


def waves(todo: list[tuple[Arm, Path]]) -> list[list[tuple[Arm, Path]]]:
    """Groups of arms to run one after the other: each arm after the arms (still to run) whose
    output it reads. Validation lets an arm name only earlier arms, so there is no cycle; should
    one appear, the rest runs as one last wave (and a missing output fails that arm, not the run)."""
    pending, out = list(todo), []
    while pending:
        waiting = {arm.slug for arm, _ in pending}
        ready = [job for job in pending if not (needs(job[0]) & waiting)] or pending
        out.append(ready)
        pending = [job for job in pending if job not in ready]
    return out


def needs(arm: Arm) -> set[str]:
    """Slugs of the arms whose output this arm reads (linked by the plan)."""
    return {params["arm"] for params, _ in arm_references(arm.stages) if params.get("arm")}


def _new_run_id(experiment_dir: Path) -> str:
    """A sortable timestamp; a suffix when two runs start within the same second."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_id, n = stamp, 1
    while (experiment_dir / run_id).exists():
        n += 1
        run_id = f"{stamp}-{n}"
    return run_id


def _exit_reason(code: int | None, log_path: Path, oom_before: int | None = None) -> str:
    tail = ""
    if log_path.is_file():
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
        tail = lines[-1][:300] if lines else ""
    if disk_full(RuntimeError(tail)):  # the arm could not even write its result
        return disk_full_sentence(log_path.parent)
    if code is not None and code < 0:
        return killed_by(-code, oom_before, oom_kills()) + (f"; last log line: {tail}" if tail else "")
    return f"arm process exited with code {code}" + (f"; last log line: {tail}" if tail else "")
