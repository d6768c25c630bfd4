"""Where `somojax prepare` runs its dask graphs: here (threads, the default) or a dask cluster.

`somojax prepare --scheduler SPEC`, SPEC one of:

  local          a `distributed.LocalCluster` with one single-threaded worker process per core
  local:N        the same with N worker processes (the cores shared out as threads)
  HOST:PORT      a running dask scheduler (also tcp://HOST:PORT)
  FILE.json      the scheduler file of a running cluster (`dask scheduler --scheduler-file`),
                 e.g. inside a SLURM job (launch/slurm/prepare.sbatch)
  slurm:N        N SLURM jobs of dask workers through dask-jobqueue's `SLURMCluster`, configured
                 by dask's `jobqueue.slurm` settings (~/.config/dask/jobqueue.yaml)

Every `compute` and store write of the preparation goes to the cluster while it is active (a
connected `distributed.Client` is dask's default scheduler); workers must see the raw files and
the store directory at the same paths. The stores are the same bytes as without a cluster: the
graphs and their chunks do not depend on where they run.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Iterator

from somojax.errors import ConfigError

log = logging.getLogger("somojax")

WAIT_FOR_WORKERS_S = 600  # a scheduler file's workers (a queued SLURM step) may start late


def _need(module: str, what: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ConfigError(f"--scheduler {what} needs {module} (pip install 'somojax[cluster]')") from None


@contextlib.contextmanager
def dask_scheduler(spec: str | None) -> Iterator[object | None]:
    """Runs the enclosed block with `spec`'s cluster as dask's scheduler; yields the client
    (None without a spec: dask's default threads, as without this option)."""
    if not spec:
        yield None
        return
    spec = spec.strip()
    with contextlib.ExitStack() as stack:
        client = _connect(spec, stack)
        log.info(
            "prepare: dask cluster %s, %d workers, dashboard %s",
            spec,
            len(client.scheduler_info().get("workers", {})),
            client.dashboard_link,
        )
        yield client


def _connect(spec: str, stack: contextlib.ExitStack):
    m = re.fullmatch(r"local(?::(\d+))?", spec)
    if m:
        return _local(int(m.group(1)) if m.group(1) else None, spec, stack)
    m = re.fullmatch(r"slurm:(\d+)", spec)
    if m:
        return _slurm(int(m.group(1)), spec, stack)
    distributed = _need("distributed", spec)
    if spec.endswith(".json"):
        client = stack.enter_context(distributed.Client(scheduler_file=spec, timeout=f"{WAIT_FOR_WORKERS_S}s"))
        client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
        return client
    if re.fullmatch(r"(tcp://)?[\w.\-]+:\d+", spec):
        return stack.enter_context(
            distributed.Client(spec if spec.startswith("tcp://") else f"tcp://{spec}", timeout="60s")
        )
    raise ConfigError(
        f"--scheduler {spec!r}: expected local, local:N, HOST:PORT, tcp://HOST:PORT, a scheduler file *.json or slurm:N"
    )


def _local(n: int | None, spec: str, stack: contextlib.ExitStack):
    distributed = _need("distributed", spec)
    from somojax.utils.devices import usable_cores

    cores = usable_cores()
    if n is not None and n < 1:
        raise ConfigError(f"--scheduler {spec!r}: the worker count must be at least 1")
    n = n or cores
    cluster = stack.enter_context(
        distributed.LocalCluster(
            n_workers=n,
            threads_per_worker=max(1, cores // n),
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        )
    )
    return stack.enter_context(distributed.Client(cluster))


def _slurm(jobs: int, spec: str, stack: contextlib.ExitStack):
    jobqueue = _need("dask_jobqueue", spec)
    distributed = _need("distributed", spec)
    if jobs < 1:
        raise ConfigError(f"--scheduler {spec!r}: the job count must be at least 1")
    cluster = stack.enter_context(jobqueue.SLURMCluster())
    cluster.scale(jobs=jobs)
    client = stack.enter_context(distributed.Client(cluster))
    client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
    return client
