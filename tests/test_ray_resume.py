"""The Ray executor beyond one arm per node: arm state in shared storage and retries that resume from
it, arms over k devices and over several nodes, the CPU limit, and cluster addresses that are not one.

The cluster tests run a real two-node Ray cluster on this machine (2 CPUs per node, no GPU), started
by the fixture in its own temp folder on free ports; every wait is on a file or a process, never on
the clock (one generous timeout per wait as a safety net)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from harness.execution.arm_storage import ArmStorage
from harness.execution.ray_task import fresh_scratch
from tests.executor_plugins import install_plugins
from tests.ray_cluster import local_cluster, settle
from tests.test_runner import results_of, run_cli

WAIT_S = 600  # the safety net of every wait below; none of them is expected to come near it


def wait_for(condition, what: str, timeout: float = WAIT_S):
    value = settle(condition, timeout=timeout, every=0.05)
    assert value, f"timed out waiting for {what}"
    return value


# ---------------------------------------------------------------------------- without a cluster


@pytest.mark.timeout(30)  # the bound under test: Ray alone retries such an address without end
def test_an_address_where_nothing_listens_is_one_sentence_within_30_s(write_experiment, tmp_path):
    path = write_experiment([{"method": "zero_shot", "model": "llama"}])
    with socket.socket() as probe:  # a port nobody listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
        result = run_cli(path, "--executor", "ray", "--address", address, "--no-track", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert f"no Ray cluster answers at {address}" in result.output and "ray start --head" in result.output
    assert "Traceback" not in result.output


def test_a_ray_client_address_is_refused_in_one_sentence(write_experiment, tmp_path):
    path = write_experiment([{"method": "zero_shot", "model": "llama"}])
    result = run_cli(path, "--executor", "ray", "--address", "ray://127.0.0.1:10001", "--no-track", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "Ray Client (ray://) is not supported" in result.output and "--address auto" in result.output


@pytest.mark.parametrize("storage", ["nosuchscheme://bucket/arms", "{tmp}/a-file/arms"])
def test_a_storage_that_cannot_be_written_is_one_sentence_before_anything_runs(write_experiment, tmp_path, storage):
    (tmp_path / "a-file").write_text("not a folder")
    storage = storage.format(tmp=tmp_path)
    path = write_experiment(
        [{"method": "zero_shot", "model": "llama"}],
        edit=lambda d: d.update(executor={"name": "ray", "storage": storage}),
    )
    result = run_cli(path, "--address", "127.0.0.1:1", "--no-track", cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert f"executor.storage: {storage} cannot be written" in result.output, result.output
    assert "Traceback" not in result.output


def test_storage_keeps_the_newest_complete_checkpoints_and_hands_them_back(tmp_path):
    storage = ArmStorage(str(tmp_path / "store"))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for step in (2, 4, 6):
        (scratch / f"step-{step:08d}.pt").write_bytes(bytes([step]) * 1000)
        storage.upload("abc", scratch / f"step-{step:08d}.pt")
    assert storage.checkpoints("abc") == ["step-00000004.pt", "step-00000006.pt"]  # the newest two
    stored = tmp_path / "store" / "abc" / "checkpoints"
    (stored / ".step-00000008.pt.0123.tmp").write_bytes(b"cut short")  # an upload a kill interrupted
    assert storage.checkpoints("abc")[-1] == "step-00000006.pt"  # invisible to readers
    back = tmp_path / "next-attempt"
    assert storage.download("abc", back) == 6
    assert sorted(p.name for p in back.iterdir()) == ["step-00000006.pt"]
    assert (back / "step-00000006.pt").read_bytes() == bytes([6]) * 1000
    assert not list(stored.glob(".*.tmp"))  # the next attempt deleted the leftover
    assert [storage.start_attempt("abc") for _ in range(2)] == [1, 2]
    storage.clear("abc")
    assert storage.download("abc", tmp_path / "after-clear") is None and not (tmp_path / "store" / "abc").exists()


def test_an_interrupted_upload_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    storage = ArmStorage(str(tmp_path / "store"))
    first = tmp_path / "step-00000002.pt"
    first.write_bytes(b"a" * 100)
    storage.upload("abc", first)
    second = tmp_path / "step-00000004.pt"
    second.write_bytes(b"b" * 100)

    class MoveFails:  # the copy is written, then the move to its name fails (a full disk, a lost mount)
        def __init__(self, fs):
            self.fs = fs

        def __getattr__(self, name):
            return getattr(self.fs, name)

        def move(self, *args):
            raise OSError("no space left on device")

    monkeypatch.setattr(storage, "fs", MoveFails(storage.fs))
    with pytest.raises(OSError):
        storage.upload("abc", second)
    assert storage.checkpoints("abc") == ["step-00000002.pt"]
    assert not [p for p in (tmp_path / "store" / "abc" / "checkpoints").iterdir() if p.name.startswith(".")]


def dcp_folder(parent: Path, step: int, ranks: int = 2) -> Path:
    """A sharded (DCP) checkpoint folder as harness.training.sharded_checkpoint leaves it."""
    import torch

    from harness.training.checkpoint import FORMAT

    folder = parent / f"step-{step:08d}"
    folder.mkdir(parents=True)
    (folder / ".metadata").write_bytes(b"metadata %d" % step)
    for rank in range(ranks):
        (folder / f"__{rank}_0.distcp").write_bytes(bytes([step, rank]) * 500)
    torch.save({"format": FORMAT, "step": step, "world_size": ranks}, folder / "loop.pt")
    return folder


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


# an object store (pyarrow's in-memory one: no folder rename, as on S3) and a shared path
@pytest.mark.parametrize("where", ["path", "mock"])
def test_storage_keeps_fsdp_checkpoint_folders_whole_behind_a_marker(tmp_path, where):
    from harness.execution.arm_storage import COMPLETE
    from harness.training import sharded_checkpoint

    storage = ArmStorage(str(tmp_path / "store") if where == "path" else "mock:///store")
    local = tmp_path / "scratch" / "checkpoints"
    for step in (2, 4, 6):
        storage.upload("abc", dcp_folder(local, step))
    assert storage.checkpoints("abc") == ["step-00000004", "step-00000006"]  # the newest two, marked
    stored = f"{storage.checkpoint_folder('abc')}/step-00000006"
    assert storage.fs.get_file_info(f"{stored}/{COMPLETE}").size == 0

    class CutShort:  # a kill mid-upload: the second file never arrives
        def __init__(self, fs):
            self.fs, self.calls = fs, 0

        def __getattr__(self, name):
            return getattr(self.fs, name)

        def open_output_stream(self, path, *args, **kwargs):
            self.calls += 1
            if self.calls == 2:
                raise OSError("connection reset")
            return self.fs.open_output_stream(path, *args, **kwargs)

    fs = storage.fs
    storage.fs = CutShort(fs)
    with pytest.raises(OSError):
        storage.upload("abc", dcp_folder(local, 8))
    storage.fs = fs
    assert storage.checkpoints("abc") == ["step-00000004", "step-00000006"]
    # a killed process cleans nothing up: on a path it leaves its hidden temporary, on an object
    # store a folder of the checkpoint's name without its marker
    left = f"{storage.checkpoint_folder('abc')}/" + (".step-00000010.0123.tmp" if where == "path" else "step-00000010")
    fs.create_dir(left, recursive=True)
    with fs.open_output_stream(f"{left}/__0_0.distcp") as out:
        out.write(b"half")
    assert storage.checkpoints("abc")[-1] == "step-00000006"  # invisible to readers

    back = tmp_path / "next-attempt" / "checkpoints"
    assert storage.download("abc", back) == 6
    assert [p.name for p in back.iterdir()] == ["step-00000006"]  # no temporary left beside it
    assert contents(back / "step-00000006") == contents(local / "step-00000006")
    assert sharded_checkpoint.load_latest(back, 2)["path"] == back / "step-00000006"  # where the loop looks
    assert fs.get_file_info(left).type.name == "NotFound"  # the next attempt deleted the unmarked folder
    storage.clear("abc")
    assert storage.checkpoints("abc") == []


def test_on_a_path_folders_the_ranks_renamed_in_place_count_without_a_marker(tmp_path):
    """An FSDP arm over several nodes writes into the storage itself (complete by rank 0's rename, no
    marker): a rerun of it on one node (`nodes` is not in the hash) downloads them like uploaded ones."""
    storage = ArmStorage(str(tmp_path / "store"))
    in_place = Path(storage.checkpoint_folder("abc"))
    dcp_folder(in_place, 4)
    (in_place / ".step-00000006.tmp").mkdir()  # a write the kill interrupted
    assert storage.checkpoints("abc") == ["step-00000004"]
    assert storage.download("abc", tmp_path / "one-node" / "checkpoints") == 4
    assert [p.name for p in in_place.iterdir()] == ["step-00000004"]  # only the temporary went


def test_the_runner_hands_a_killed_local_runs_dcp_folders_to_the_rerun(tmp_path):
    from harness.execution.runner import take_over_checkpoints

    class Arm:
        hash = "abcdef0123456789"

    old = tmp_path / "exp" / "20260101-000000" / "arms" / "full_ft-x-abcdef01" / "checkpoints"
    dcp_folder(old, 10)
    new_arm = tmp_path / "exp" / "20260101-000100" / "arms" / "full_ft-x-abcdef01"
    new_arm.mkdir(parents=True)
    assert take_over_checkpoints(tmp_path / "exp", Arm(), new_arm) == "20260101-000000"
    assert (new_arm / "checkpoints" / "step-00000010" / "loop.pt").is_file() and not old.exists()


def test_checkpoint_sync_uploads_complete_dcp_folders_only(tmp_path):
    from harness.execution.ray_task import CheckpointSync

    storage = ArmStorage(str(tmp_path / "store"))
    local = tmp_path / "scratch" / "checkpoints"
    dcp_folder(local, 2)
    sync = CheckpointSync(storage, "abc", local)  # step 2 came from the storage: not uploaded again
    (local / ".step-00000004.tmp").mkdir()  # being written by the ranks
    sync()
    assert storage.checkpoints("abc") == []
    (local / ".step-00000004.tmp").rmdir()
    dcp_folder(local, 4)  # renamed by rank 0: complete
    sync()
    assert storage.checkpoints("abc") == ["step-00000004"]


def test_an_fsdp_arm_over_nodes_checkpoints_into_a_shared_folder_or_is_refused(write_experiment, tmp_path, monkeypatch):
    from harness.errors import HarnessError
    from harness.execution.ray_executor import Placement, RayExecutor
    from harness.planning.experiment_loader import load_experiment
    from harness.planning.plan import plan
    from harness.training import checkpoint

    path = write_experiment([{"method": "full_ft", "model": "llama"}], budget={"devices": 2, "strategy": "fsdp"})
    fsdp = plan(load_experiment(path))[0]
    ddp = plan(load_experiment(path, ["budget.strategy=ddp"]))[0]
    over_two = Placement(nodes=2, gpus=0, cpus=1, ranks=1)
    with pytest.raises(HarnessError, match="executor.storage") as refused:
        RayExecutor(storage="mock:///arms").check_shared_checkpoints(fsdp, over_two)
    assert "is an FSDP arm over 2 nodes" in str(refused.value) and "shared folder" in str(refused.value.fix)
    RayExecutor(storage="mock:///arms").check_shared_checkpoints(fsdp, Placement(1, 0, 2, 2))  # one node: uploaded
    RayExecutor(storage="mock:///arms").check_shared_checkpoints(ddp, over_two)  # DDP: rank 0's file, uploaded
    RayExecutor(storage=str(tmp_path / "shared")).check_shared_checkpoints(fsdp, over_two)
    RayExecutor().check_shared_checkpoints(fsdp, over_two)  # no storage: it runs, writing no checkpoints
    # what the arm process is told (harness.execution.ray_task): a folder of the storage, none, or its own
    monkeypatch.delenv(checkpoint.FOLDER_ENV, raising=False)
    assert checkpoint.folder_for(tmp_path) == tmp_path / "checkpoints"
    monkeypatch.setenv(checkpoint.FOLDER_ENV, str(tmp_path / "shared" / "abc" / "checkpoints"))
    assert checkpoint.folder_for(tmp_path) == tmp_path / "shared" / "abc" / "checkpoints"
    monkeypatch.setenv(checkpoint.FOLDER_ENV, "none")
    assert checkpoint.folder_for(tmp_path) is None


def test_a_new_attempt_deletes_the_scratch_folder_a_killed_attempt_of_its_arm_left(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_SCRATCH", str(tmp_path))
    killed = fresh_scratch("0123456789abcdef", 0)
    (killed / "checkpoints").mkdir()
    other_arm = fresh_scratch("fedcba9876543210", 0)
    retry = fresh_scratch("0123456789abcdef", 0)
    assert retry.is_dir() and not killed.exists()
    assert other_arm.is_dir()  # another arm's folder, perhaps running: left alone


def test_where_the_devices_sit_never_changes_an_arms_hash(write_experiment):
    from harness.planning.experiment_loader import load_experiment
    from harness.planning.plan import plan

    path = write_experiment([{"method": "lora", "model": "llama"}], budget={"devices": 2})
    spread = plan(load_experiment(path, ["budget.nodes=2"]))[0]
    assert spread.hash == plan(load_experiment(path))[0].hash and spread.budget.nodes == 2


def test_a_placement_the_cluster_cannot_hold_is_one_sentence(write_experiment):
    from harness.errors import HarnessError
    from harness.execution.ray_executor import Placement, RayExecutor
    from harness.planning.experiment_loader import load_experiment
    from harness.planning.plan import plan

    two_gpu_nodes = [{"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 1}]
    path = write_experiment([{"method": "lora", "model": "llama"}], budget={"devices": 2})
    executor = RayExecutor(cpus_per_arm=2)
    arm = plan(load_experiment(path, ["budget.nodes=2"]))[0]
    assert executor.placement(arm, two_gpu_nodes) == Placement(nodes=2, gpus=1, cpus=2, ranks=1)
    # two devices that no node holds, no `nodes:` named: spread over the fewest nodes that hold them
    assert executor.placement(plan(load_experiment(path))[0], two_gpu_nodes) == Placement(2, 1, 2, 1)
    with pytest.raises(HarnessError, match="needs 1 node"):  # four: on one node, on two or on four: none
        executor.placement(plan(load_experiment(path, ["budget.devices=4"]))[0], two_gpu_nodes)
    with pytest.raises(HarnessError, match="cannot be split evenly over nodes: 4"):
        executor.placement(plan(load_experiment(path, ["budget.nodes=4"]))[0], two_gpu_nodes)


# ---------------------------------------------------------------------------- the cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head and a worker node, each with 2 CPUs, no GPU and its own scratch folder for arms; its
    own temp folder and ports (tests/ray_cluster.py). Everything it started is gone afterwards."""
    scratch = {name: tmp_path_factory.mktemp(f"scratch-{name}") for name in ("head", "worker")}
    node_env = {name: {"HARNESS_SCRATCH": str(folder)} for name, folder in scratch.items()}
    with local_cluster(node_env, num_cpus=2, num_gpus=0) as address:
        yield address, scratch


def arm_processes(scratch: dict) -> list[psutil.Process]:
    """Arm processes running in the cluster's scratch folders (their command line names the folder)."""
    homes = [str(folder) for folder in scratch.values()]
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            line = " ".join(proc.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "harness.execution.arm_process" in line and any(home in line for home in homes):
            found.append(proc)
    return found


def start_driver(path: Path, address: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "run", str(path), "--executor", "ray", "--address", address, "--no-track"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def same_training(one: dict, other: dict) -> None:
    """Metrics, losses and consumed budget identical (but for time, memory and the resume record)."""
    cost = ("seconds", "per_s", "latency", "memory", "rss", "throughput")
    metrics = [{k: v for k, v in a["metrics"].items() if not any(w in k for w in cost)} for a in (one, other)]
    consumed = [
        {k: v for k, v in a["consumed"].items() if k != "extra" and not any(w in k for w in cost)} for a in (one, other)
    ]
    assert metrics[0] == metrics[1]
    assert consumed[0] == consumed[1]
    assert one["curves"]["train_loss"] == other["curves"]["train_loss"]


def same_budget_within_ddp_tolerance(one: dict, other: dict) -> None:
    """One device against k: the identical budget, losses and forgetting within tests/test_scale_out.py's
    DDP tolerance (the sums of k ranks are added in another order)."""
    for key in ("steps", "examples", "tokens", "order_hash"):
        assert one["consumed"][key] == other["consumed"][key], key
    for (s1, l1), (s2, l2) in zip(one["curves"]["train_loss"], other["curves"]["train_loss"], strict=True):
        assert s1 == s2 and abs(l1 - l2) <= 1e-4
    assert abs(one["metrics"]["forgetting"] - other["metrics"]["forgetting"]) <= 1e-4


def checkpointed_arm(write_experiment, storage: Path) -> Path:
    """One LoRA arm of 40 steps with a checkpoint every 2, its state kept in `storage`."""
    return write_experiment(
        [{"method": "lora", "model": "llama", "lr": 1e-3}],
        budget={"max_steps": 40, "checkpoint_every": 2, "eval_precision": "fp32"},
        edit=lambda d: d.update(executor={"name": "ray", "storage": str(storage)}),
    )


def second_checkpoint(storage: Path) -> Path:
    """Waits until the arm's second checkpoint is stored; returns the folder it is in."""
    (first, *_) = wait_for(lambda: sorted(storage.glob("*/checkpoints/step-*.pt")), "a first checkpoint")
    wait_for(lambda: len(list(first.parent.glob("step-*.pt"))) >= 2, "the second checkpoint")
    return first.parent


def newest_step(folder: Path) -> int:
    return max(int(p.stem[len("step-") :]) for p in folder.glob("step-*.pt"))


def equals_an_uninterrupted_run(resumed: dict, path: Path, cwd: Path) -> None:
    local = run_cli(path, "--executor", "local", "--force", "--no-track", cwd=cwd)
    assert local.exit_code == 0, local.output
    _, uninterrupted = results_of(cwd)
    same_training(resumed, uninterrupted["arms"][0])


@pytest.mark.slow
def test_no_more_arms_run_at_once_than_the_cluster_has_cpus(cluster, write_experiment, tmp_path, monkeypatch):
    address, _ = cluster
    install_plugins(tmp_path / "site", monkeypatch)
    folder = tmp_path / "alive"
    folder.mkdir()
    probe = {"method": "count_alive", "model": "llama", "params": {"folder": str(folder)}}
    path = write_experiment(
        [{**probe, "name": f"probe{i}"} for i in range(3)],
        edit=lambda d: d.update(executor={"name": "ray", "cpus_per_arm": 2}),  # one arm per 2-CPU node
    )
    result = run_cli(path, "--address", address, "--no-track", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    counts = [int(p.read_text()) for p in folder.iterdir() if p.suffix in (".start", ".exit")]
    assert len(counts) == 6  # every probe counted at its start and at its exit
    # Two ran at once (each waited for a second pid file), never three: the third arm's task gets a
    # node's CPUs only once an arm has ended. (Before, a task waiting on its progress queue lent its
    # CPUs back to Ray, which started the third arm beside the other two.)
    assert max(counts) == 2, counts


def resumed_on_retry(driver, output: str, killed_at: int, storage: Path, path: Path, tmp_path: Path) -> dict:
    """The run of a worker killed at `killed_at`: its one arm ok on Ray's retry (attempt 2), resumed
    from a stored checkpoint at or after the kill, nothing left in the storage, and the same results
    as an uninterrupted run. Returns the arm's result."""
    assert driver.returncode == 0, output
    _, on_ray = results_of(tmp_path)
    (resumed,) = on_ray["arms"]
    assert resumed["status"] == "ok", resumed["error"]
    assert resumed["provenance"]["placement"]["attempt"] == 2
    assert resumed["consumed"]["extra"]["resumed_from_step"] >= killed_at >= 4
    assert not list(storage.glob("*/checkpoints/*"))  # a finished arm keeps nothing there
    equals_an_uninterrupted_run(resumed, path, tmp_path)
    return resumed


@pytest.mark.slow
def test_a_worker_killed_after_its_second_checkpoint_resumes_from_it(cluster, write_experiment, tmp_path):
    address, scratch = cluster
    storage = tmp_path / "shared"
    path = checkpointed_arm(write_experiment, storage)
    driver = start_driver(path, address, tmp_path)
    try:
        stored = second_checkpoint(storage)
        (arm,) = wait_for(lambda: arm_processes(scratch), "the arm process")
        killed_at = newest_step(stored)
        os.kill(arm.ppid(), signal.SIGKILL)  # the Ray worker running the arm, mid-arm
        output, _ = driver.communicate(timeout=WAIT_S)
    finally:
        driver.kill()
    resumed_on_retry(driver, output, killed_at, storage, path, tmp_path)


@pytest.mark.slow
def test_a_killed_driver_rerun_resumes_the_arm_from_storage(cluster, write_experiment, tmp_path):
    address, scratch = cluster
    storage = tmp_path / "shared"
    path = checkpointed_arm(write_experiment, storage)
    driver = start_driver(path, address, tmp_path)
    try:
        stored = second_checkpoint(storage)
    finally:
        driver.kill()  # SIGKILL: Ray ends the driver's job, and the arm with its worker
        driver.communicate()
    wait_for(lambda: not arm_processes(scratch), "the killed run's arm process to end")
    killed_at = newest_step(stored)

    rerun = run_cli(path, "--address", address, "--no-track", cwd=tmp_path)
    assert rerun.exit_code == 0, rerun.output
    _, on_ray = results_of(tmp_path)
    (resumed,) = on_ray["arms"]
    assert resumed["status"] == "ok", resumed["error"]
    assert resumed["consumed"]["extra"]["resumed_from_step"] == killed_at
    assert resumed["provenance"]["placement"]["attempt"] == 2
    equals_an_uninterrupted_run(resumed, path, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [1, 2], ids=["two_devices_one_node", "two_nodes_one_rank_each"])
def test_an_arm_of_two_devices_runs_torchrun_with_two_ranks(cluster, write_experiment, tmp_path, nodes):
    address, _ = cluster
    # no dropout: its masks are drawn per rank, so they cannot match one device's (tests/test_scale_out.py)
    lora = {"method": "lora", "model": "llama", "lr": 1e-3, "params": {"dropout": 0.0}}
    path = write_experiment(
        [{**lora, "name": "one_device"}, {**lora, "name": "two_devices", "devices": 2, "nodes": nodes}],
        budget={"max_steps": 3, "eval_precision": "fp32"},
    )
    result = run_cli(path, "--executor", "ray", "--address", address, "--no-track", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    _, results = results_of(tmp_path)
    one, two = results["arms"]
    assert [one["status"], two["status"]] == ["ok", "ok"], [one["error"], two["error"]]
    # torchrun started two ranks (WORLD_SIZE 2): both on one node, or one per node (LOCAL_WORLD_SIZE 1,
    # two torchrun agents on two Ray nodes, which the STRICT_SPREAD placement group keeps apart)
    placement = two["provenance"]["placement"]
    assert (placement["world_size"], placement["nodes"], placement["strategy"]) == (2, nodes, "ddp")
    assert (one["provenance"]["placement"]["world_size"], one["provenance"]["placement"]["strategy"]) == (1, None)
    same_budget_within_ddp_tolerance(one, two)


def fsdp_arm(write_experiment, storage: Path, nodes: int = 1, strategy: str = "fsdp") -> Path:
    """A full fine-tune on two ranks under FSDP (or DDP), 60 steps with a checkpoint every 2, its state
    kept in `storage`; `nodes: 2` puts one rank on each node."""
    return write_experiment(
        [{"method": "full_ft", "model": "llama", "lr": 1e-3}],
        budget={
            "max_steps": 60,
            "checkpoint_every": 2,
            "eval_precision": "fp32",
            "devices": 2,
            "strategy": strategy,
            **({"nodes": nodes} if nodes > 1 else {}),
        },
        edit=lambda d: d.update(executor={"name": "ray", "storage": str(storage)}),
    )


def stored_folders(storage: Path, marked: bool) -> list[Path]:
    """The arm's complete DCP folders in the storage: marked when uploaded, or (written in place by
    the ranks of an arm over several nodes) complete once renamed from their temporary name."""
    folders = sorted(storage.glob("*/checkpoints/step-*/"))
    return [f for f in folders if (f / "COMPLETE").is_file()] if marked else folders


def the_torchrun(scratch: dict) -> psutil.Process:
    """The torchrun of a one-node FSDP arm (its ranks run the arm process below it)."""
    (torchrun,) = wait_for(
        lambda: [p for p in arm_processes(scratch) if "torch.distributed.run" in " ".join(p.cmdline())],
        "the arm's torchrun",
    )
    return torchrun


@pytest.mark.slow
def test_an_fsdp_worker_killed_after_its_second_checkpoint_resumes_from_the_stored_folder(
    cluster, write_experiment, tmp_path
):
    address, scratch = cluster
    storage = tmp_path / "shared"
    path = fsdp_arm(write_experiment, storage)
    driver = start_driver(path, address, tmp_path)
    try:
        worker = the_torchrun(scratch).parent()  # the Ray worker running the arm
        wait_for(lambda: len(stored_folders(storage, marked=True)) >= 2, "the second stored checkpoint")
        os.kill(worker.pid, signal.SIGKILL)  # mid-arm: the ranks die with their torchrun, it with the worker
        killed_at = max(int(f.name[len("step-") :]) for f in stored_folders(storage, marked=True))
        output, _ = driver.communicate(timeout=WAIT_S)
    finally:
        driver.kill()
    resumed = resumed_on_retry(driver, output, killed_at, storage, path, tmp_path)
    assert resumed["consumed"]["extra"]["devices"]["strategy"] == "fsdp"


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fsdp", "ddp"])
def test_an_arm_over_two_nodes_resumes_from_storage_after_the_driver_died(
    cluster, write_experiment, tmp_path, strategy
):
    """FSDP: both nodes' ranks write their shards into the one folder in the storage and read them
    back from it. DDP: rank 0's checkpoint file is uploaded, and both nodes download it (each rank
    restores its own RNG state from it)."""
    address, scratch = cluster
    storage = tmp_path / "shared"
    path = fsdp_arm(write_experiment, storage, nodes=2, strategy=strategy)
    stored = (
        (lambda: stored_folders(storage, marked=False))
        if strategy == "fsdp"
        else (lambda: sorted(storage.glob("*/checkpoints/step-*.pt")))
    )
    driver = start_driver(path, address, tmp_path)
    try:
        wait_for(lambda: len(stored()) >= 2, "the second stored checkpoint")
    finally:
        driver.kill()  # SIGKILL: Ray ends the driver's job, and both nodes' ranks with their workers
        driver.communicate()
    wait_for(lambda: not arm_processes(scratch), "the killed run's arm processes to end")
    (*_, newest) = stored()
    if strategy == "fsdp":  # both ranks wrote their shards into the one folder, each from its own node
        assert sorted(p.name for p in newest.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp", "loop.pt"]
    killed_at = int(newest.name[len("step-") :][:8])

    rerun = run_cli(path, "--address", address, "--no-track", cwd=tmp_path)
    assert rerun.exit_code == 0, rerun.output
    _, on_ray = results_of(tmp_path)
    (resumed,) = on_ray["arms"]
    assert resumed["status"] == "ok", resumed["error"]
    placement = resumed["provenance"]["placement"]
    assert (placement["world_size"], placement["nodes"], placement["strategy"], placement["attempt"]) == (
        2,
        2,
        strategy,
        2,
    )
    assert resumed["consumed"]["extra"]["resumed_from_step"] == killed_at
    assert not list(storage.glob("*/checkpoints/*"))
    # the same two ranks on one node (the local pool has one), uninterrupted: to the digit
    local = run_cli(path, "--executor", "local", "--force", "--no-track", "--set", "budget.nodes=1", cwd=tmp_path)
    assert local.exit_code == 0, local.output
    _, uninterrupted = results_of(tmp_path)
    same_training(resumed, uninterrupted["arms"][0])
