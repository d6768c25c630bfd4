"""Fault injection at named points, for the kill-and-resume tests (does nothing unless asked).

`SOMOJAX_FAULT="<point>[@<step>][:<action>][,...]"` (read once, at the first `point` call)
makes the process act when it reaches `point(<point>, step)`; without `@<step>` at the first
time it reaches the point. Actions:

  kill     SIGKILL to itself (default): no cleanup, in-flight checkpoint writes are lost
  sigint   SIGINT to itself (Ctrl-C): the signal handlers decide what happens
  sigterm  SIGTERM to itself (SLURM's notice before the kill)
  sigint2  two SIGINTs (the second Ctrl-C stops at once)

In-process tests can set `hook` to a callable `(point, step) -> None` instead.

The training loop's points, in order (`somojax/train/loop.py`): `after_step`; at a validation
`after_val_metrics` (metrics written, nothing saved), `inside_best_save` (best/ params written,
not finalised), `between_saves` (best/ finalised, state/ not started), `inside_state_save`
(state/ written, not finalised), `after_state_save`; mid-run checkpoints `inside_ckpt_save`.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Callable

hook: Callable[[str, int | None], None] | None = None
_spec: list[tuple[str, int | None, str]] | None = None
_fired: set[int] = set()
_patched = False
ACTIONS = ("kill", "sigint", "sigterm", "sigint2")


def _parse(text: str) -> list[tuple[str, int | None, str]]:
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        where, _, action = item.partition(":")
        name, _, step = where.partition("@")
        action = action or "kill"
        if action not in ACTIONS:
            raise ValueError(f"SOMOJAX_FAULT={text!r}: action {action!r} is not one of {ACTIONS}")
        out.append((name, int(step) if step else None, action))
    return out


def _load() -> list[tuple[str, int | None, str]]:
    global _spec
    if _spec is None:
        _spec = _parse(os.environ.get("SOMOJAX_FAULT", ""))
    return _spec


def point(name: str, step: int | None = None) -> None:
    """A named point of the program: acts when SOMOJAX_FAULT (or `hook`) asks for it."""
    if hook is not None:
        hook(name, step)
    for i, (n, s, action) in enumerate(_load()):
        if n == name and (s is None or s == step) and i not in _fired:
            _fired.add(i)
            fire(action)


def arm_checkpoint_points() -> None:
    """Makes orbax call `point("inside_<best|state>_save", step)` just before it finalises a
    step directory (the atomic rename of the fully written temporary directory).

    Patched only when SOMOJAX_FAULT or `hook` could use it; uses orbax's private
    `AtomicRenameTemporaryPath` (test machinery: without it the points simply never fire).
    """
    global _patched
    if _patched or (hook is None and not any(n.startswith("inside_") for n, _, _ in _load())):
        return
    try:
        from orbax.checkpoint._src.path import atomicity
    except ImportError:  # pragma: no cover - another orbax layout
        return
    cls = atomicity.AtomicRenameTemporaryPath
    original = cls.finalize

    async def finalize(self, *args, **kwargs):
        final = getattr(self, "_final_path", None)
        if final is not None and final.parent.name in ("best", "state") and final.name.isdigit():
            point(f"inside_{final.parent.name}_save", int(final.name))
        return await original(self, *args, **kwargs)

    cls.finalize = finalize
    _patched = True


def fire(action: str) -> None:
    """Does what `action` says to this process."""
    pid = os.getpid()
    if action == "kill":
        os.kill(pid, signal.SIGKILL)
        time.sleep(60)  # the signal arrives asynchronously; never run on
    elif action in ("sigint", "sigterm"):
        os.kill(pid, signal.SIGINT if action == "sigint" else signal.SIGTERM)
    elif action == "sigint2":
        from somojax.utils import signals

        os.kill(pid, signal.SIGINT)
        # The second only once the main thread has handled the first: sent from another thread
        # (orbax's save thread), two SIGINTs pending together are delivered as one.
        deadline = time.monotonic() + 30
        while signals.requested() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(pid, signal.SIGINT)
        time.sleep(60)
