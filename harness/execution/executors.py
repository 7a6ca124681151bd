"""Choosing the executor of a run: the YAML's `executor:` block, overridden by --executor, --jobs
and --address. Executors are plugins of the one registry shape (harness.plugins.Registry): a
factory registered by name, `(spec, jobs=, address=, source=, base=, fresh=) -> executor` (an object with
`run(jobs)` yielding Started / Event / Finished, and `describe()`); a third-party package adds one
through the `harness.executors` entry-point group and selects it with --executor (the YAML's
`executor.name` still lists the built-ins)."""

from __future__ import annotations

from pathlib import Path

from harness.errors import HarnessError, did_you_mean
from harness.plugins import Registry

EXECUTORS = Registry("executor", "harness.executors")
register_executor = EXECUTORS.register


@register_executor("local")
def local_pool(spec, *, jobs: int | None, address: str | None, source: str, base: Path, fresh: bool):
    """Up to N arm processes at once on this machine."""
    from harness.execution.local_pool import LocalPool

    if address:
        raise HarnessError(
            "--address names a Ray cluster and this run uses the local pool",
            fix="add --executor ray, or drop --address",
        )
    return LocalPool(jobs=jobs or spec.jobs)


@register_executor("ray")
def ray_cluster(spec, *, jobs: int | None, address: str | None, source: str, base: Path, fresh: bool):
    """One Ray task per arm on a Ray cluster (ray is imported only when chosen); `executor.storage`
    (relative to the experiment file's folder) keeps checkpoints a retry or a rerun resumes from."""
    if jobs:
        raise HarnessError(
            "--jobs sets the local pool's size; a Ray cluster runs as many arms as its GPUs and CPUs allow",
            fix="drop --jobs, or use --executor local",
        )
    from harness.execution.arm_storage import resolve_location
    from harness.execution.ray_executor import RayExecutor

    return RayExecutor(
        address=address or spec.address,
        cpus_per_arm=spec.cpus_per_arm,
        max_retries=spec.max_retries,
        storage=resolve_location(spec.storage, base) if spec.storage else None,
        fresh=fresh,
        source=source,
    )


def make_executor(
    experiment, *, name: str | None = None, jobs: int | None = None, address: str | None = None, fresh: bool = False
):
    """fresh (--force): arms start at step 0, whatever checkpoints a storage holds for them."""
    spec = experiment.executor
    name = name or spec.name
    if name not in EXECUTORS:
        raise HarnessError(f"--executor {name} is not an executor", fix=did_you_mean(name, EXECUTORS.names()))
    source = experiment.source_file or "the experiment file"
    base = Path(experiment.source_file).parent if experiment.source_file else Path.cwd()
    return EXECUTORS[name](spec, jobs=jobs, address=address, source=source, base=base, fresh=fresh)
