"""Benchmarks: throughput against the PyTorch peers and the hardware floor (docs/benchmarks.md)."""

from __future__ import annotations

from typing import Sequence

from somojax.config import Config
from somojax.errors import ConfigError


def run_benchmarks(cfg: Config, only: Sequence[str] | None = None) -> dict:
    """Runs the benchmarks named in `only` (default: all but the end-to-end demo); returns results."""
    from somojax.bench import suite
    from somojax.utils.malloc import keep_freed_memory

    keep_freed_memory()
    names = list(only or suite.DEFAULT)
    unknown = [n for n in names if n not in suite.BENCHMARKS]
    if unknown:
        raise ConfigError(f"unknown benchmarks {unknown}; choose from {list(suite.BENCHMARKS)}")
    return {n: suite.BENCHMARKS[n](cfg) for n in names}


__all__ = ["run_benchmarks"]
