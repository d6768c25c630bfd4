"""Timing, machine description, tables and JSON results shared by every benchmark.

Every measurement runs the function `warmup` times first (compilation excluded), then
`repeats` times, blocking on the results; it reports the median and the interquartile range.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np


def measure(fn: Callable[[], Any], warmup: int = 2, repeats: int = 5) -> dict:
    """Times `fn()` (which must block until its work is done). Returns seconds."""
    return round_robin({"fn": fn}, warmup, repeats)["fn"]


def round_robin(fns: dict[str, Callable[[], Any]], warmup: int = 2, repeats: int = 5) -> dict[str, dict]:
    """Times several functions interleaved (A B C A B C ...), so drifting load hits all alike.

    The warm-up rounds are interleaved too: the allocator then reaches the state the timed
    rounds see (warming each function alone left later first-touches of memory in the timed
    rounds: 2-3 s outliers of the 5-member training step).
    """
    first = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {n: [] for n in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name, ts in times.items():
        q1, q3 = np.percentile(ts, [25, 75])
        out[name] = {
            "median_s": statistics.median(ts),
            "iqr_s": float(q3 - q1),
            "min_s": min(ts),
            "first_call_s": first[name],
            "repeats": repeats,
            "times_s": [round(t, 6) for t in ts],
        }
    return out


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"model name\s*:\s*(.*)", text)
        if m:
            return m.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_models() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return [l.strip() for l in out.stdout.splitlines() if l.strip()]
    except (OSError, subprocess.SubprocessError):
        return []


def machine() -> dict:
    """What the numbers were measured on."""
    import jax

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    devs = jax.devices()
    return {
        "host": socket.gethostname(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu_model(),
        "cpu_cores": cores,
        "gpus": gpu_models(),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in devs],
        "device_kind": devs[0].device_kind,
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": {
            p: _version(p)
            for p in (
                "somojax",
                "jax",
                "jaxlib",
                "flax",
                "optax",
                "numpy",
                "zarr",
                "xarray",
                "torch",
                "neuralhydrology",
            )
        },
    }


def device_tag() -> str:
    """Short name of the device for file names: 'cpu-2c', 'gpu-nvidia-h100-80gb-hbm3' ..."""
    import jax

    if jax.default_backend() == "cpu":
        return f"cpu-{len(os.sched_getaffinity(0))}c"
    kind = jax.devices()[0].device_kind.lower()
    return f"{jax.default_backend()}-" + re.sub(r"[^a-z0-9]+", "-", kind).strip("-")


def save(name: str, payload: dict, out_dir: str | os.PathLike) -> Path:
    """Writes `<out_dir>/<name>-<device>.json` (the latest run on that device; git keeps history)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{device_tag()}.json"
    path.write_text(json.dumps(payload, indent=1, default=_jsonable) + "\n")
    return path


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """A Markdown table: columns are (key, header, format)."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" if f == "s" else "---:" for _, _, f in columns) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            cells.append("–" if v is None else (format(v, fmt) if fmt != "s" else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
