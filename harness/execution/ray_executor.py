"""The Ray executor: one Ray task per arm (Ray Core), for a cluster of machines; the driver side.

The task (harness.execution.ray_task) runs the same arm process as the local pool, in a scratch
folder on whichever node Ray picked. An arm of k devices asks for k whole GPUs (never a fraction: a
measured arm never shares a GPU) and cpus_per_arm CPUs per device; on a cluster without GPUs it asks
for the CPUs alone and its k ranks run on CPU. An arm with `nodes: m` gets a placement group of m
bundles, one per node (STRICT_SPREAD: m means m machines), and one task per bundle, each starting
torchrun for its k/m ranks. No shared filesystem is assumed: the arm's folder comes back as the
task's return value (a tar archive through Ray's object store) and the driver writes it into the
run. Progress events travel through an EventBox actor.

Failures: a worker process or node that dies is Ray's to retry (`max_retries`, default 2), from the
arm's newest checkpoint when `executor.storage` is set (harness.execution.arm_storage), else from
step 0; an exception inside the arm is the arm's `failed` result (the arm process exits 0 having
written it), never retried; an arm process killed on the worker (out of memory) is `failed`, as
locally. An arm over several nodes is not retried by Ray (its other nodes' ranks would be waiting
on the dead one): it fails, and a rerun resumes it from the storage; without storage it writes no
checkpoints. An FSDP arm over several nodes checkpoints straight into the storage, which must then be
a folder every node mounts (a URI is refused before anything runs).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from harness.errors import HarnessError
from harness.execution.arm_storage import ArmStorage, is_uri
from harness.execution.devices import devices_needed
from harness.execution.launch import Event, Finished, Started
from harness.execution.ray_task import EventBox, TaskPlan, run_arm_task
from harness.results.arm_result import ArmResult, now

# What an arm process on a worker takes from the driver's environment, when the driver sets it.
FORWARDED_ENV = (
    "PYTHONPATH",
    "HARNESS_CACHE",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
)
CONNECT_TIMEOUT_S = 10  # a cluster address that accepts no connection in this time is not one
FOLLOWERS_GRACE_S = 60  # how long the other nodes of a multi-node arm may take to end after its rank 0
START_A_CLUSTER = (
    "start one with `ray start --head --port=6379` on the head node and pass --address HEAD_IP:6379 "
    "(or --address auto on a node of the cluster), or drop --address to start Ray on this machine"
)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise HarnessError(
            "--executor ray needs the `ray` package, which is not installed in this environment",
            fix="run ./setup.sh (it installs the pinned ray), or pip install -c constraints.txt ray",
        ) from None
    return ray


def check_address(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse, in one sentence and within `timeout`, an address Ray would retry forever: Ray swaps in
    the node's IP for a local host and waits on the GCS without end when nothing listens there.
    `ray://` (Ray Client) is refused: the driver must run on a node of the cluster (user files sit at
    the same path on every node, and arm folders come back through the object store)."""
    if address is None or address in ("auto", "local"):
        return
    if address.startswith("ray://"):
        raise HarnessError(
            f"--address {address}: Ray Client (ray://) is not supported",
            key="executor.address",
            fix="run harness on a node of the cluster with --address auto or --address HEAD_IP:6379, "
            "or submit it there with `ray job submit -- harness run ...`",
        )
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise HarnessError(
            f"--address {address} is not HOST:PORT", key="executor.address", fix="e.g. --address 10.0.0.5:6379"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or type(err).__name__)
        raise HarnessError(
            f"no Ray cluster answers at {address} ({reason})", key="executor.address", fix=START_A_CLUSTER
        ) from None


def open_storage(location: str, source: str) -> ArmStorage:
    """The storage, checked on the driver before any arm starts: its folder can be made there."""
    try:
        storage = ArmStorage(location)
        storage.fs.create_dir(storage.root, recursive=True)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ... for a bad URI or a refused write
        raise HarnessError(
            f"{location} cannot be written ({type(err).__name__}: {str(err)[:200]})",
            file=source,
            key="executor.storage",
            fix="use a folder every node sees (NFS) or an object-store URI such as s3://bucket/prefix that "
            "this machine's credentials can write",
        ) from None
    return storage


@dataclass(frozen=True)
class Placement:
    """What one arm asks of the cluster: `nodes` tasks, each with these GPUs, CPUs and ranks."""

    nodes: int
    gpus: int  # per node
    cpus: int  # per node
    ranks: int  # per node


class RayExecutor:
    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        cpus_per_arm: int = 1,
        max_retries: int = 2,
        storage: str | None = None,
        fresh: bool = False,
        source: str = "the experiment file",
    ):
        self.ray = _import_ray()
        self.address, self.cpus_per_arm, self.max_retries, self.source = address, cpus_per_arm, max_retries, source
        self.storage, self.fresh = storage, fresh
        if storage:
            open_storage(storage, source)
        self._connected_here = False

    # ------------------------------------------------------------------ the cluster

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        check_address(self.address or os.environ.get("RAY_ADDRESS"))
        env = {k: os.environ[k] for k in ("PYTHONPATH",) if os.environ.get(k)}
        starts_here = self.address is None and not os.environ.get("RAY_ADDRESS")
        try:  # a Ray started here for this run needs no dashboard (and ray.init refuses it when joining)
            ray.init(
                address=self.address,
                logging_level="WARNING",
                log_to_driver=False,
                **({"include_dashboard": False} if starts_here else {}),
                runtime_env={"env_vars": env} if env else None,
            )
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise HarnessError(
                f"could not reach the Ray cluster at {self.address or 'this machine'} ({err})",
                key="executor.address",
                fix=START_A_CLUSTER,
            ) from None
        self._connected_here = True

    def _nodes(self) -> list[dict]:
        return [n["Resources"] for n in self.ray.nodes() if n.get("Alive")]

    def describe(self) -> str:
        self._connect()
        nodes = self._nodes()
        gpus, cpus = sum(n.get("GPU", 0) for n in nodes), sum(n.get("CPU", 0) for n in nodes)
        where = f"checkpoints in {self.storage}" if self.storage else "no executor.storage: a retry starts at step 0"
        return (
            f"ray: {len(nodes)} node(s), {gpus:g} GPU(s), {cpus:g} CPU(s); {self.cpus_per_arm} CPU(s) per arm device; "
            f"a dead worker or node is retried up to {self.max_retries} time(s); {where}"
        )

    def placement(self, arm, nodes: list[dict]) -> Placement:
        """The arm's devices as whole GPUs per node (none on a cluster without GPUs: a CPU arm),
        cpus_per_arm CPUs per device, over `nodes` machines; an arm of k devices that no node holds
        and that names no `nodes` is spread over the fewest nodes that hold it (where the devices sit
        never changes a result). An arm the cluster cannot hold is an error now, not a task that
        waits forever."""
        devices, spread = devices_needed(arm), int(arm.budget.get("nodes") or 1)
        if devices % spread:
            raise HarnessError(
                f"arm '{arm.name}' has devices: {devices}, which cannot be split evenly over nodes: {spread}",
                file=self.source,
                key="budget.nodes",
                fix="make devices a multiple of nodes",
            )
        wanted = self._over(devices, spread, nodes)
        if not self._holds(wanted, nodes) and spread == 1:
            spreads = [self._over(devices, m, nodes) for m in range(2, devices + 1) if devices % m == 0]
            wanted = next((p for p in spreads if self._holds(p, nodes)), wanted)
        if not self._holds(wanted, nodes):
            raise HarnessError(
                f"arm '{arm.name}' needs {spread} node(s) with {wanted.gpus} GPU(s) and {wanted.cpus} CPU(s) each "
                f"and the Ray cluster has fewer",
                file=self.source,
                key="budget.nodes" if spread > 1 else "executor.cpus_per_arm",
                fix="spread it over more nodes (budget.nodes), lower executor.cpus_per_arm, or add bigger nodes",
            )
        return wanted

    def check_shared_checkpoints(self, arm, placement: Placement) -> None:
        """The ranks of an FSDP arm over several nodes checkpoint straight into the storage, one DCP
        folder that every rank writes its shards into and reads them back from (harness.execution.ray_task):
        that needs a folder every node mounts. An object store has no such folder, and uploading each
        node's shards would need the nodes to agree when a checkpoint is whole: not built, so such an
        arm is refused rather than run without the checkpoints its storage was set for."""
        if placement.nodes > 1 and arm.budget.strategy == "fsdp" and self.storage and is_uri(self.storage):
            raise HarnessError(
                f"arm '{arm.name}' is an FSDP arm over {placement.nodes} nodes, whose ranks checkpoint straight "
                f"into executor.storage, and {self.storage} is not a folder every node mounts",
                file=self.source,
                key="executor.storage",
                fix="set executor.storage to a shared folder (NFS) mounted at the same path on every node, "
                "or run the arm on one node (nodes: 1), or with strategy: ddp",
            )

    def _over(self, devices: int, spread: int, nodes: list[dict]) -> Placement:
        ranks = devices // spread
        gpus = ranks if any(n.get("GPU", 0) for n in nodes) else 0
        return Placement(spread, gpus, self.cpus_per_arm * ranks, ranks)

    @staticmethod
    def _holds(wanted: Placement, nodes: list[dict]) -> bool:
        fitting = [n for n in nodes if n.get("GPU", 0) >= wanted.gpus and n.get("CPU", 0) >= wanted.cpus]
        return len(fitting) >= wanted.nodes

    # ------------------------------------------------------------------ running arms

    def run(self, jobs: list[tuple[object, Path]]) -> Iterator[Started | Event | Finished]:
        ray = self.ray
        self._connect()
        pending: dict = {}  # the task of each arm's node rank 0 -> the arm's index
        followers: dict[int, list] = {}  # the other nodes' tasks of multi-node arms
        groups: dict[int, object] = {}  # their placement groups
        starts: dict[int, int] = {}  # "started" events per arm: its attempt when the storage keeps no count
        try:
            nodes = self._nodes()
            box = ray.remote(num_cpus=0)(EventBox).remote()
            env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
            started: dict[int, str] = {}
            storage = open_storage(self.storage, self.source) if self.storage else None
            placements = [self.placement(arm, nodes) for arm, _ in jobs]  # refused before any arm starts
            for (arm, _), placement in zip(jobs, placements):
                self.check_shared_checkpoints(arm, placement)
            for index, ((arm, _), placement) in enumerate(zip(jobs, placements)):
                if storage is not None and self.fresh:  # --force: no arm resumes from an earlier run's state
                    storage.clear(arm.hash)
                refs = self._submit(index, arm, placement, box, env, groups)
                pending[refs[0]] = index
                followers[index] = refs[1:]
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for index, event in ray.get(box.drain.remote()):  # after the wait: a done task's events are in
                    arm = jobs[index][0]
                    if event["event"] == "started":
                        started.setdefault(index, now())
                        starts[index] = starts.get(index, 0) + 1
                        yield Started(arm, event["where"])
                    else:
                        yield Event(arm, event)
                for ref in done:
                    index = pending.pop(ref)
                    arm, arm_dir = jobs[index]
                    finished = self._collect(ref, arm, arm_dir, started.get(index) or now(), starts.get(index))
                    self._release(followers.pop(index), groups.pop(index, None))
                    yield finished
        finally:
            for ref in [*pending, *(r for refs in followers.values() for r in refs)]:
                ray.cancel(ref, force=True)  # Ctrl-C: running arms are cancelled, finished ones were kept
            for group in groups.values():
                ray.util.remove_placement_group(group)
            if self._connected_here:
                ray.shutdown()
                self._connected_here = False

    def _submit(self, index: int, arm, placement: Placement, box, env: dict, groups: dict) -> list:
        ray = self.ray
        task = ray.remote(run_arm_task)
        options = {
            "num_gpus": placement.gpus,
            "num_cpus": placement.cpus,
            "max_retries": self.max_retries if placement.nodes == 1 else 0,
            "retry_exceptions": False,
            "name": f"harness arm {arm.slug}",
        }
        if placement.nodes > 1:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            bundle = {"CPU": placement.cpus, **({"GPU": placement.gpus} if placement.gpus else {})}
            groups[index] = ray.util.placement_group([bundle] * placement.nodes, strategy="STRICT_SPREAD")
        refs = []
        for node_rank in range(placement.nodes):
            if placement.nodes > 1:
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    groups[index], placement_group_bundle_index=node_rank
                )
            plan = TaskPlan(index, placement.ranks, self.cpus_per_arm, self.storage, placement.nodes, node_rank)
            refs.append(task.options(**options).remote(arm.to_json(), env, box, plan))
        return refs

    def _release(self, followers: list, group) -> None:
        """The other nodes of a multi-node arm end with its rank 0 (their ranks meet it once more
        after training); any still running a while later (rank 0 failed before they joined) are
        cancelled. Their results and errors say nothing rank 0's does not."""
        if followers:
            _, running = self.ray.wait(followers, num_returns=len(followers), timeout=FOLLOWERS_GRACE_S)
            for ref in running:
                self.ray.cancel(ref, force=True)
        if group is not None:
            self.ray.util.remove_placement_group(group)

    def _collect(self, ref, arm, arm_dir: Path, started_at: str, starts: int | None) -> Finished:
        from ray.exceptions import RayError, RayTaskError

        try:
            out = self.ray.get(ref)
        except RayTaskError as err:  # raised by the task around the arm, not inside it: never retried
            return Finished(arm, None, started_at, error=f"the arm's Ray task failed: {err.cause!r}")
        except RayError as err:  # a worker or node that died more often than max_retries, or cancelled
            return Finished(
                arm,
                None,
                started_at,
                error=f"its Ray worker or node was lost after {self.max_retries} retries: {type(err).__name__}",
            )
        attempt = out.get("attempt") or starts
        if out.get("archive"):
            unpack_arm_folder(out["archive"], arm_dir)
            record_attempt(arm_dir / "result.json", attempt)
        return Finished(
            arm,
            out.get("returncode"),
            started_at,
            error=out.get("error"),
            extra={"node": out.get("node"), "attempt": attempt},
        )


def record_attempt(result_path: Path, attempt: int | None) -> None:
    """Which attempt of the arm produced the result (1: the first), in its placement."""
    if not attempt or not result_path.is_file():
        return
    result = ArmResult.read(result_path)
    placement = result.provenance.setdefault("placement", {})
    placement["attempt"] = attempt
    result.write(result_path)


def unpack_arm_folder(archive: bytes, arm_dir: Path) -> None:
    """Write a returned arm folder into the run: extracted beside it first, then moved in with
    result.json last, so a reader never sees a result without its predictions and adapter."""
    incoming = Path(tempfile.mkdtemp(prefix=f".{arm_dir.name}.", dir=arm_dir.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
            tar.extractall(incoming, filter="data")  # no absolute paths, links out or devices
        entries = sorted(incoming.iterdir(), key=lambda p: p.name == "result.json")
        for entry in entries:
            target = arm_dir / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
