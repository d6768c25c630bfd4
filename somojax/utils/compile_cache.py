"""JAX's persistent compilation cache for the command line.

A training step, an evaluation step and a rollout kernel take seconds to compile on CPU (more on a
TPU pod), and `somojax run` compiles the same programs again and again: the cascade's three layers
in the main training and in every cross-validation fold, and every resumed run. With the cache,
an identical program (same HLO, same devices, same JAX) is read back instead of compiled.

Where: `$JAX_COMPILATION_CACHE_DIR` if set (JAX's own variable), else
`$XDG_CACHE_HOME/somojax/jax` (`~/.cache/somojax/jax`). `SOMOJAX_COMPILATION_CACHE=0` turns it off.
The cache never changes results: an entry is keyed by the program and the compiler, not the data.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path | None:
    """The cache directory the command line uses, or None when it is turned off."""
    if os.environ.get("SOMOJAX_COMPILATION_CACHE", "1").lower() in ("0", "false", "no", "off"):
        return None
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "somojax" / "jax"


def enable_compilation_cache() -> Path | None:
    """Points JAX's persistent compilation cache at `cache_dir()` (programs that took ≥ 0.5 s)."""
    path = cache_dir()
    if path is None:
        return None
    import jax

    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: compile as usual
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
