"""One JAX CPU device per core: data parallelism over the cores of a CPU machine.

XLA:CPU runs one device's program on one thread and spreads a single matmul over the intra-op
thread pool. The EA-LSTM's recurrent product is small ([B, H] x [H, 3H] per step) and spreading
it over two cores gains little. With one device per core and the batch split over them (the
mesh's `data` axis, the same code path as several GPUs), each core runs its own half of the
batch through the whole time loop, which is much faster (measured: docs/training.md, "Devices").

JAX reads the device count from XLA_FLAGS when its CPU backend starts, so this must run before
the first JAX computation; the `somojax` command does it from the config key `layout.cpu_devices`.
A device count already given in XLA_FLAGS (tests, the benchmarks' scaling runs, a user) wins.
On a GPU or TPU machine the flag only shapes the (unused) CPU platform.
"""

from __future__ import annotations

import logging
import os
import re
import sys

from somojax.errors import ConfigError

log = logging.getLogger("somojax")

FLAG = "--xla_force_host_platform_device_count"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_device_count(requested: int, batch_size: int, cores: int | None = None) -> int:
    """The CPU device count for `layout.cpu_devices: requested` (0: auto).

    auto: the largest count <= the usable cores that divides the training batch (the batch is
    split evenly over the mesh's `data` axis, which divides the device count).
    """
    if requested < 0:
        raise ConfigError(
            f"layout.cpu_devices={requested}: expected 0 (one device per core) or a positive device count"
        )
    if requested:
        return requested
    n = max(1, cores if cores is not None else usable_cores())
    while n > 1 and batch_size % n:
        n -= 1
    return n


def flag_count(flags: str) -> int | None:
    """The device count an XLA_FLAGS string already sets, or None."""
    m = re.search(re.escape(FLAG) + r"=(\d+)", flags)
    return int(m.group(1)) if m else None


def with_device_count(flags: str, n: int) -> str:
    """`flags` (an XLA_FLAGS string) with the CPU device count set to n (replacing one given)."""
    rest = re.sub(re.escape(FLAG) + r"=\d+", "", flags).split()
    return " ".join(rest + [f"{FLAG}={n}"])


def configure_cpu_devices(requested: int, batch_size: int) -> int | None:
    """Sets XLA_FLAGS for `cpu_device_count(...)` CPU devices; returns the count in effect.

    Does nothing (returns the count already in XLA_FLAGS, or None) when XLA_FLAGS names a device
    count or JAX's backends have already started in this process.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    given = flag_count(flags)
    if given is not None:
        return given
    if _backends_started():
        log.debug("cpu_devices: JAX already started in this process; device count left as it is")
        return None
    n = cpu_device_count(requested, batch_size)
    if n > 1:
        os.environ["XLA_FLAGS"] = with_device_count(flags, n)
    return n


def _backends_started() -> bool:
    xb = sys.modules.get("jax._src.xla_bridge")
    return bool(xb is not None and getattr(xb, "_backends", None))


def needs_blocking_dispatch(devices) -> bool:
    """True when programs on `devices` must run one at a time: several CPU devices.

    XLA:CPU runs each device's part of a program on a thread of one shared pool (the stack of a
    stuck run shows them in Eigen's worker loop), and a collective (the gradient sum, an ensemble mean
    over members) holds its thread until every device has arrived. With two multi-device programs
    in flight (JAX dispatches asynchronously) the pool's threads can all end up waiting in
    different programs' collectives while the parts they wait for sit in the queue: a deadlock,
    which XLA ends after 40 s by aborting the process. Reproduced with two tiny shard_map + psum
    programs dispatched in a loop on 2, 4 and 8 CPU devices (hung within the first 2,000
    iterations, every try); waiting for each program's results before dispatching the next ran
    20,000 iterations cleanly. On such meshes the training loop's steps wait for the previous
    step before they are dispatched (`JitOnce(sync=True)`), which keeps the next batch's host
    work overlapped with the running step. GPUs and TPUs (streams) are not affected.
    """
    devices = list(devices)
    return len(devices) > 1 and all(d.platform == "cpu" for d in devices)
