"""One JAX program over several processes: `jax.distributed` started from the job's environment.

`somojax train` and `somojax predict` call `initialize()` before their first JAX computation.
Which processes form the job is read from the environment, in this order:

1. `SOMOJAX_DISTRIBUTED=off`: never (one process, whatever the scheduler says);
2. `SOMOJAX_COORDINATOR=host:port`, `SOMOJAX_NUM_PROCESSES`, `SOMOJAX_PROCESS_ID` (all three):
   those values (tests, a hand-made launch; processes started by any means);
3. `SOMOJAX_DISTRIBUTED=auto`: JAX's own detection (Cloud TPU VM pods, GKE, SLURM, Open MPI),
   which `jax.distributed.initialize()` does when it is given no argument;
4. inside an `srun` step of more than one task (SLURM_STEP_NUM_TASKS, else SLURM_NTASKS > 1) or
   an Open MPI job of more than one rank: JAX's detection as in 3. With one GPU per task JAX
   gives each process the GPU of its SLURM_LOCALID;
5. otherwise nothing: a single process, as before.

On CPU several processes exchange collectives through gloo, which must be chosen before the
CPU backend starts; it is set here whenever the job has more than one process. JAX's preemption
service is turned off: it would catch SIGTERM itself, and somojax's own handler (a checkpoint,
exit 143, the SLURM scripts' requeue) would never run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Mapping

from somojax.errors import ConfigError

log = logging.getLogger("somojax")

EXPLICIT = ("SOMOJAX_COORDINATOR", "SOMOJAX_NUM_PROCESSES", "SOMOJAX_PROCESS_ID")


@dataclass(frozen=True)
class Job:
    """How this process joins the job: explicit values, or JAX's detection (`auto`)."""

    how: str  # "explicit" | "auto"
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    why: str = ""


def _int(env: Mapping[str, str], key: str, low: int) -> int:
    raw = env.get(key, "")
    try:
        v = int(raw)
    except ValueError:
        v = low - 1
    if v < low:
        raise ConfigError(f"environment variable {key}={raw!r}: expected an integer >= {low}")
    return v


def job_from_env(env: Mapping[str, str] | None = None) -> Job | None:
    """The job this process belongs to according to `env` (default: os.environ), or None for a
    single process. Raises ConfigError for incomplete or malformed SOMOJAX_* values."""
    env = os.environ if env is None else env
    mode = env.get("SOMOJAX_DISTRIBUTED", "").strip().lower()
    if mode not in ("", "auto", "off"):
        raise ConfigError(
            f"environment variable SOMOJAX_DISTRIBUTED={mode!r}: expected auto or off (or leave it unset)"
        )
    if mode == "off":
        return None
    given = [k for k in EXPLICIT if env.get(k)]
    if given:
        if len(given) < len(EXPLICIT):
            missing = [k for k in EXPLICIT if k not in given]
            raise ConfigError(
                f"{', '.join(given)} set but {', '.join(missing)} not: a multi-process job needs all of {', '.join(EXPLICIT)}"
            )
        n = _int(env, "SOMOJAX_NUM_PROCESSES", 1)
        pid = _int(env, "SOMOJAX_PROCESS_ID", 0)
        if pid >= n:
            raise ConfigError(f"environment variable SOMOJAX_PROCESS_ID={pid} must be below SOMOJAX_NUM_PROCESSES={n}")
        coord = env["SOMOJAX_COORDINATOR"]
        if ":" not in coord:
            raise ConfigError(
                f"environment variable SOMOJAX_COORDINATOR={coord!r}: expected host:port (e.g. 127.0.0.1:12345)"
            )
        return Job("explicit", coord, n, pid, "SOMOJAX_COORDINATOR") if n > 1 else None
    if mode == "auto":
        return Job("auto", why="SOMOJAX_DISTRIBUTED=auto")
    tasks = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS")
    if tasks and "SLURM_PROCID" in env and tasks.isdigit() and int(tasks) > 1:
        return Job("auto", why=f"SLURM step of {tasks} tasks")
    ranks = env.get("OMPI_COMM_WORLD_SIZE", "")
    if ranks.isdigit() and int(ranks) > 1:
        return Job("auto", why=f"Open MPI job of {ranks} ranks")
    return None


def initialize(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """Starts jax.distributed for the job of `job_from_env` (once per process); returns
    (process index, process count). A single process returns (0, 1) without starting JAX."""
    import jax

    if jax.distributed.is_initialized():
        return jax.process_index(), jax.process_count()
    job = job_from_env(env)
    if job is None:
        return 0, 1
    if (job.num_processes or 2) > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # JAX's preemption service would take SIGTERM from somojax's handlers (utils/signals.py) and
    # swallow it: the scheduler's notice before the time limit must stop the command cleanly
    jax.config.update("jax_enable_preemption_service", False)
    log.info("jax.distributed: joining the job (%s)", job.why)
    try:
        if job.how == "explicit":
            jax.distributed.initialize(job.coordinator, job.num_processes, job.process_id)
        else:
            jax.distributed.initialize()
    except (RuntimeError, ValueError) as e:
        raise ConfigError(
            f"jax.distributed could not start ({job.why}): {str(e)[:300]}; check that every process of the job started "
            "and reaches the coordinator, or set SOMOJAX_DISTRIBUTED=off for a single process"
        ) from None
    log.info(
        "jax.distributed: process %d of %d, %d local of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return jax.process_index(), jax.process_count()


def barrier(name: str) -> None:
    """Every process of the job waits here until all have arrived (nothing on one process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def finish() -> None:
    """Leaves the job together: every process waits for the others before the coordinator
    (process 0) goes away, so no process loses it while still finishing."""
    import jax

    if jax.distributed.is_initialized():
        jax.distributed.shutdown()
