"""Host-memory allocator settings for XLA:CPU (Linux, glibc).

XLA:CPU allocates every execution's temporaries and outputs afresh. With glibc defaults, large
blocks come from `mmap` and go back to the kernel on `free`, so each training step first-touches
(page-faults) hundreds of MB again, a large share of a training step on a small CPU machine.
`keep_freed_memory()` makes glibc keep freed memory for reuse (one arena, no `mmap` for large
blocks, never trimming the heap), which removes those faults. "Never" matters: with the largest
trim threshold `mallopt` takes (2 GiB), a step whose temporaries exceed 2 GiB (the 5-member
step at the paper's shapes) handed its memory back after every call and faulted it in again,
several times slower. It is process-wide, affects only later allocations, and is best called
before JAX starts its threads. `SOMOJAX_MALLOC=default` disables it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_NEVER = -1  # glibc stores the trim threshold as size_t: -1 is SIZE_MAX, i.e. never trim
_done = False


def keep_freed_memory() -> bool:
    """Asks glibc to reuse freed memory instead of returning it to the kernel.

    Returns True when the settings were applied (Linux with glibc, not disabled by
    `SOMOJAX_MALLOC=default`), False otherwise. Idempotent.
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("SOMOJAX_MALLOC", "") == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = all(
            libc.mallopt(opt, val) == 1
            for opt, val in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER))
        )
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to do
        return False
    _done = ok
    return ok
