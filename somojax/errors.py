"""User-facing errors.

Every problem the user can fix (a bad file, a wrong setting, a missing variable) is raised as a
`SomojaxError` subclass whose message names the file, the variable, the value and the fix. The CLI
prints such errors as one line and exits non-zero; anything else is a bug and shows a traceback
with `--debug`.
"""

from __future__ import annotations


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
