"""One device-count point of the training-step scaling benchmark (run in its own process, since
XLA_FLAGS must be set before JAX starts): `python -m somojax.bench.scaling --devices 4 --json f`."""

from __future__ import annotations

import argparse
import json

from somojax.bench import harness


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    from somojax.utils.malloc import keep_freed_memory

    keep_freed_memory()
    import jax

    from somojax.bench.suite import _engine_step
    from somojax.config import load_config

    cfg = load_config(
        "paper", [f"bench.batch_size={a.batch}", f"bench.seq_length={a.days}", f"bench.hidden_size={a.hidden}"]
    )
    devices = jax.devices()[: a.devices]
    if len(devices) < a.devices:
        raise SystemExit(f"only {len(devices)} devices available, asked for {a.devices}")
    run, mesh = _engine_step(cfg, 5, devices)
    t = harness.measure(run, warmup=1, repeats=a.repeats)
    with open(a.json, "w") as f:
        json.dump(
            {
                "devices": a.devices,
                "mesh": str(tuple(mesh.shape.values())),
                "ms": t["median_s"] * 1e3,
                "iqr_ms": t["iqr_s"] * 1e3,
            },
            f,
        )


if __name__ == "__main__":
    main()
