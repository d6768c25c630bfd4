"""SIGINT and SIGTERM: a clean stop, never a half-written checkpoint.

Two modes, switched by `deferred()`:

- **immediate** (every `somojax` command, `install()`): SIGINT (Ctrl-C) and SIGTERM (what SLURM
  and most batch systems send before the kill at a time limit) raise `Interrupted` in the main
  thread, like Python's KeyboardInterrupt, so the command unwinds and the CLI exits with
  128 + the signal number (130, 143) and a one-line message instead of a traceback.
- **deferred** (inside `with deferred():`, the training loop): the first signal only sets a flag
  that the loop polls between steps (`requested()`); the loop then completes its in-flight
  checkpoint, writes one at the current step and raises `Interrupted` itself. A second signal
  exits at once (`os._exit`, like `kill -9`: the run stays resumable from its last complete
  checkpoint, since every checkpoint is finalised by an atomic rename).

A flag still set when the deferred block ends (the signal came after the loop's last safe point)
raises `Interrupted` there, so a stop request is never lost.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A command stopped by SIGINT or SIGTERM (a KeyboardInterrupt, so it is never swallowed by
    `except Exception`); `exit_code` is 128 + the signal number."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message or f"interrupted by {signal_name(signum)}")
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal_name(self.signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class _State:
    depth = 0  # nesting of deferred() blocks
    requested: int | None = None  # the first signal received inside a deferred block


def _handler(signum: int, frame: object) -> None:
    if _State.depth == 0:
        raise Interrupted(signum)
    if _State.requested is None:
        _State.requested = signum
        print(
            f"\nsomojax: {signal_name(signum)} received: stopping after the current step, once the checkpoint "
            "is written (send it again to stop at once; the run stays resumable)",
            file=sys.stderr,
            flush=True,
        )
        return
    print(
        f"\nsomojax: second {signal_name(signum)}: stopping now; the last complete checkpoint is kept",
        file=sys.stderr,
        flush=True,
    )
    os._exit(128 + signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install() -> dict:
    """Makes SIGINT and SIGTERM raise `Interrupted` (immediate mode); returns the previous
    handlers for `restore`."""
    if not _in_main_thread():
        return {}
    return {s: signal.signal(s, _handler) for s in SIGNALS}


def finishing() -> None:
    """After a command's work (process exit, then interpreter shutdown): SIGINT/SIGTERM exit at
    once with 128 + the signal number instead of raising into the shutdown's cleanup code."""
    if _in_main_thread():
        for s in SIGNALS:
            signal.signal(s, lambda signum, frame: os._exit(128 + signum))


def restore(previous: dict) -> None:
    """Puts back the handlers `install` replaced."""
    for s, h in previous.items():
        signal.signal(s, h)


def requested() -> int | None:
    """The signal number of a pending stop request inside `deferred()`, else None."""
    return _State.requested


def clear() -> None:
    """Forgets a pending stop request (after the caller acted on it)."""
    _State.requested = None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block SIGINT/SIGTERM set a flag (`requested()`) instead of raising.

    The handlers are installed for the block when the process has not installed them already
    (library use, tests) and restored afterwards. Outside the main thread handlers cannot be
    changed; the block then defers only if the main thread runs `install()`'s handler.
    """
    previous = {}
    if _in_main_thread():
        for s in SIGNALS:
            if signal.getsignal(s) is not _handler:
                previous[s] = signal.signal(s, _handler)
    _State.depth += 1
    ok = False
    try:
        yield
        ok = True
    finally:
        _State.depth -= 1
        for s, h in previous.items():
            signal.signal(s, h)
        pending = _State.requested if _State.depth == 0 else None
        if _State.depth == 0:
            _State.requested = None
    if ok and pending is not None:
        raise Interrupted(pending)
