"""Logging, progress and per-run metric files.

- `setup_logging` sends `somojax` log records to stderr and, when given, to a log file of the run.
- `Progress` shows a tqdm bar on a terminal and periodic log lines otherwise (CI, batch jobs), with
  the rate in the unit the stage cares about (steps/s, cells/s, cell-steps/s) and the ETA.
- `MetricsWriter` appends one JSON object per line to `metrics.jsonl` and mirrors scalars to
  TensorBoard when `tensorboardX` is installed (`pip install tensorboardX`); `truncate` drops
  the records after a step (a resumed run rewrites them).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

LOGGER_NAME = "somojax"


def get_logger(name: str = "") -> logging.Logger:
    """The `somojax` logger or one of its children (`somojax.train`...)."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


def setup_logging(level: int | str = logging.INFO, logfile: str | os.PathLike | None = None) -> logging.Logger:
    """Configures the `somojax` logger once (idempotent); adds a file handler when asked."""
    log = get_logger()
    log.setLevel(level)
    log.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s", "%H:%M:%S")
    if not any(getattr(h, "_somojax_stderr", False) for h in log.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(fmt)
        h._somojax_stderr = True  # type: ignore[attr-defined]
        log.addHandler(h)
    if logfile is not None:
        logfile = str(Path(logfile).resolve())
        if not any(getattr(h, "baseFilename", None) == logfile for h in log.handlers):
            Path(logfile).parent.mkdir(parents=True, exist_ok=True)
            fh = logging.FileHandler(logfile)
            fh.setFormatter(fmt)
            log.addHandler(fh)
    return log


def format_seconds(s: float) -> str:
    """12.3 -> '12s', 754 -> '12m34s', 7300 -> '2h01m'."""
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _interactive() -> bool:
    return sys.stderr.isatty() and os.environ.get("CI", "").lower() not in ("1", "true")


class Progress:
    """Progress of a long loop: rate, ETA, and extra rates (e.g. cell-steps/s).

    Example:
      with Progress(total=n_tiles, desc="predict", unit="tile") as p:
          for tile in tiles:
              ...
              p.update(1, cells=tile.n_cells, cell_steps=tile.n_cells * days * 365)
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str = "it",
        log_every_s: float = 10.0,
        logger: logging.Logger | None = None,
    ):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self.extra: dict[str, float] = {}
        self.t0 = time.perf_counter()
        self._last_log = self.t0
        self.log_every_s = log_every_s
        self.log = logger or get_logger()
        self._bar = None
        if _interactive():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def rates(self) -> dict[str, float]:
        """Items per second, overall and for every extra counter."""
        e = max(self.elapsed, 1e-9)
        return {f"{self.unit}/s": self.n / e, **{f"{k}/s": v / e for k, v in self.extra.items()}}

    def eta(self) -> float:
        if not self.total or self.n == 0:
            return float("nan")
        return self.elapsed / self.n * (self.total - self.n)

    def update(self, n: int = 1, **extra: float) -> None:
        self.n += n
        for k, v in extra.items():
            self.extra[k] = self.extra.get(k, 0.0) + float(v)
        if self._bar is not None:
            self._bar.update(n)
            self._bar.set_postfix_str(self._postfix(), refresh=False)
        elif time.perf_counter() - self._last_log >= self.log_every_s:
            self._last_log = time.perf_counter()
            self.log.info("%s: %s", self.desc, self.status())

    def _postfix(self) -> str:
        return ", ".join(f"{_si(v)} {k}" for k, v in self.rates().items() if k != f"{self.unit}/s")

    def status(self) -> str:
        total = f"/{self.total}" if self.total else ""
        rates = ", ".join(f"{_si(v)} {k}" for k, v in self.rates().items())
        return f"{self.n}{total} {self.unit}, {rates}, elapsed {format_seconds(self.elapsed)}, ETA {format_seconds(self.eta())}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _si(v: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.3g}"


class MetricsWriter:
    """Appends metric records to `<dir>/metrics.jsonl` (and TensorBoard if tensorboardX is installed).

    Each record is `{"step": ..., "time": unix seconds, **metrics}`; non-finite floats are written
    as null so every line stays valid JSON.
    """

    def __init__(self, directory: str | os.PathLike, tensorboard: bool = True):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self._f = open(self.path, "a", buffering=1)
        self._tb = _tensorboard_writer(self.dir / "tensorboard") if tensorboard else None

    def truncate(self, last_step: int | None) -> int:
        """Keeps only the records of steps <= `last_step` (none for None); returns how many were
        dropped. A resumed run calls it with the step it restored, so the steps it recomputes are
        written once; an unreadable last line (a kill mid-write) is dropped too. The file is
        rewritten atomically."""
        self._f.close()
        kept, dropped, changed = [], 0, False
        with open(self.path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    keep = last_step is not None and int(rec["step"]) <= last_step
                except (ValueError, KeyError, TypeError):
                    keep = False
                if keep:
                    kept.append(line.rstrip("\n") + "\n")
                    changed = changed or not line.endswith("\n")
                elif line.strip():
                    dropped += 1
        if dropped or changed:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(kept))
            os.replace(tmp, self.path)
        self._f = open(self.path, "a", buffering=1)
        return dropped

    def write(self, step: int, metrics: Mapping[str, Any], prefix: str = "") -> None:
        rec: dict[str, Any] = {"step": int(step), "time": time.time()}
        for k, v in metrics.items():
            key = f"{prefix}{k}"
            if isinstance(v, (int, float)) or hasattr(v, "item"):
                v = float(v)
                rec[key] = v if math.isfinite(v) else None
                if self._tb is not None and math.isfinite(v):
                    self._tb.add_scalar(key, v, step)
            else:
                rec[key] = v
        self._f.write(json.dumps(rec) + "\n")

    def close(self) -> None:
        self._f.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _tensorboard_writer(path: Path):
    try:
        from tensorboardX import SummaryWriter  # type: ignore
    except ImportError:
        return None
    try:
        return SummaryWriter(str(path))
    except Exception:  # a broken optional install must not stop a run
        return None


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """All records of a `metrics.jsonl` file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
