"""User-facing errors.

Every problem the user can fix (a bad file, a wrong setting, a missing variable) is raised as a
`SomojaxError` subclass whose message names the file, the variable, the value and the fix. The CLI
prints such errors as one line and exits non-zero; anything else is a bug and shows a traceback
with `--debug`.
"""

from __future__ import annotations

import contextlib
import errno
from typing import Iterator


class SomojaxError(Exception):
    """Base class of errors the user can act on."""


class ConfigError(SomojaxError):
    """A configuration file or override is invalid."""


class InputDataError(SomojaxError):
    """A raw input file (ISMN, ERA5, static map) is missing, malformed or inconsistent."""


class StoreError(SomojaxError):
    """An analysis-ready or output store does not match its documented schema."""


class CheckpointError(SomojaxError):
    """A checkpoint is missing, incomplete or does not match the data it is used with."""


class TrainingError(SomojaxError):
    """Training cannot continue (for example a non-finite loss)."""


class OutputError(SomojaxError):
    """An output cannot be written (no permission, disk full, a missing or read-only directory)."""


_OS_FIXES = {
    errno.ENOSPC: "the disk is full: free space or write elsewhere",
    errno.EDQUOT: "the disk quota is exceeded: free space or write elsewhere",
    errno.EACCES: "no permission: make the directory writable or write elsewhere",
    errno.EPERM: "no permission: make the directory writable or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.ENOENT: "a directory on the path does not exist",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EISDIR: "the path is a directory, not a file",
    errno.EEXIST: "the path exists and is in the way",
}


def describe_os_error(e: OSError, what: str | None = None, path: object = None) -> str:
    """One line for an `OSError`: what was being done, the path, the system's reason and a fix.

    Output locations are set by `workdir=` (every output) or the section's output keys
    (`infer.output`, `infer.export_dir`, `evaluate.output_dir`, `data.store_dir`).
    """
    culprit = str(e.filename) if e.filename else None
    if what:
        head = f"cannot write {what} {path}" if path else f"cannot write {what}"
        if culprit and culprit != str(path):
            head += f" ({culprit})"
    else:
        head = f"cannot read or write {culprit}" if culprit else "a file operation failed"
    reason = e.strerror or str(e) or type(e).__name__
    fix = _OS_FIXES.get(e.errno or -1)
    return f"{head}: {reason}" + (f"; {fix}" if fix else "") + " (outputs go under workdir=...; see `somojax --help`)"


@contextlib.contextmanager
def writing(what: str, path: object) -> Iterator[None]:
    """Turns an `OSError` raised while writing `what` at `path` into an `OutputError` naming both."""
    try:
        yield
    except OutputError:
        raise
    except OSError as e:
        raise OutputError(describe_os_error(e, what, path)) from e
