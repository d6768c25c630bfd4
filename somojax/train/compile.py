"""Compile once, fail loudly on recompilation (neuralgcm `jit_once`, docs/design.md#conventions).

`JitOnce` wraps `jax.jit` at the call site (with shardings and donation). The first call records
the abstract signature of the arguments (shapes, dtypes, shardings of every leaf) and the time
spent compiling; a later call whose signature differs, or that made jax compile again anyway,
raises `RecompilationError` naming the argument that changed. A training step that silently
recompiles (a new batch shape, a Python scalar turned into an array, a changed sharding) costs
seconds per step; here it is an error instead.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax


# Outputs of the last program dispatched with `sync=True`: such programs run one at a time.
_in_flight: list = []


def _wait_for_in_flight() -> None:
    """Blocks until the last `sync` program has finished (its outputs all become ready together)."""
    while _in_flight:
        leaves = [x for x in jax.tree.leaves(_in_flight.pop()) if isinstance(x, jax.Array) and not x.is_deleted()]
        jax.block_until_ready(leaves)


class RecompilationError(RuntimeError):
    """A function wrapped in `JitOnce` was about to be (or was) compiled a second time."""


def _leaf_signature(x: Any) -> Any:
    if isinstance(x, jax.Array):
        return ("array", tuple(x.shape), str(x.dtype), x.sharding)
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return ("array", tuple(x.shape), str(x.dtype), None)
    if isinstance(x, (bool, int, float, complex)):
        return ("scalar", type(x).__name__)  # Python scalars are traced: the value may change
    return ("static", repr(x))


def signature(args: tuple) -> list[tuple[str, Any]]:
    """(path, leaf signature) of every leaf of `args`."""
    flat, _ = jax.tree_util.tree_flatten_with_path(args)
    return [(jax.tree_util.keystr(path), _leaf_signature(leaf)) for path, leaf in flat]


class JitOnce:
    """`jax.jit(fn, **jit_kwargs)` that may compile only once.

    Attributes:
      compilations: how many times jax compiled it (1 after the first call).
      compile_seconds: wall time of the first call (tracing, compilation and one execution).
    """

    def __init__(self, fn: Callable, name: str | None = None, sync: bool = False, **jit_kwargs: Any):
        """`sync`: at most one program in flight among all `sync` functions: a call first waits
        for the previous `sync` call's results, then dispatches and returns at once (host work
        between calls still overlaps the running program). Needed for multi-device programs on
        the CPU (`utils.devices.needs_blocking_dispatch`)."""
        self.name = name or getattr(fn, "__name__", "function")
        self.sync = sync
        self._jit = jax.jit(fn, **jit_kwargs)
        self._signature: list | None = None
        self.compile_seconds = 0.0

    @property
    def compilations(self) -> int:
        size = getattr(self._jit, "_cache_size", None)
        if size is None:  # pragma: no cover - private jax API gone: fall back to the signature check
            return 0 if self._signature is None else 1
        return int(size())

    def __call__(self, *args: Any) -> Any:
        sig = signature(args)
        if self.sync:
            _wait_for_in_flight()
        if self._signature is None:
            t0 = time.perf_counter()
            out = self._jit(*args)
            jax.block_until_ready(out)
            self.compile_seconds = time.perf_counter() - t0
            self._signature = sig
            return out
        if sig != self._signature:
            raise RecompilationError(f"{self.name} would compile again: {_diff(self._signature, sig)}")
        out = self._jit(*args)
        if self.compilations > 1:
            raise RecompilationError(f"{self.name} was compiled {self.compilations} times (expected once)")
        if self.sync:
            _in_flight.append(out)
        return out

    def lower(self, *args: Any):
        """The lowered computation (for inspecting HLO or memory use)."""
        return self._jit.lower(*args)


def _diff(old: list, new: list) -> str:
    if len(old) != len(new):
        return f"the arguments now have {len(new)} leaves instead of {len(old)}"
    for (p, a), (_, b) in zip(old, new):
        if a != b:
            return f"argument {p} changed from {a} to {b}"
    return "the argument structure changed"  # pragma: no cover
