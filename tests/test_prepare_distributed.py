"""`somojax prepare --scheduler`: the same stores from a dask.distributed cluster of worker
processes as from the threads of one process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from somojax import constants as C
from somojax import stores
from somojax.config import load_config
from somojax.errors import ConfigError
from somojax.prepare import prepare
from somojax.prepare.scheduler import dask_scheduler

distributed = pytest.importorskip(
    "distributed", reason="dask.distributed is the `cluster` extra (pip install 'somojax[cluster]')"
)


def _arrays(store) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(store), mode="r")
    return {k: np.asarray(a[...]) for k, a in g.arrays()}


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "fiub":
        return a.tobytes() == b.tobytes()
    return a.tolist() == b.tolist()  # strings (provenance)


@pytest.mark.slow
def test_prepare_on_a_local_cluster_of_two_processes_gives_the_same_stores(tmp_path):
    from test_prepare_synth import _contract_raw

    one = load_config("tiny", [f"workdir={tmp_path}/run"])
    _contract_raw(one)
    prepare(one)
    two = load_config("tiny", [f"workdir={tmp_path}/run", f"data.store_dir={tmp_path}/cluster"])
    with dask_scheduler("local:2") as client:  # the cluster is seen doing the work
        assert len(client.scheduler_info()["workers"]) == 2
        before = sum(client.run(lambda dask_worker: len(dask_worker.data) + dask_worker.state.executed_count).values())
        prepare(two)
        after = sum(client.run(lambda dask_worker: len(dask_worker.data) + dask_worker.state.executed_count).values())
    assert after > before
    for kind in ("forcings", "statics", "targets"):
        a, b = _arrays(stores.store_path(one.store_dir, kind)), _arrays(stores.store_path(two.store_dir, kind))
        assert a.keys() == b.keys() and a, kind
        differ = [k for k in a if not _same_bytes(a[k], b[k])]
        assert not differ, f"{kind}: {differ}"
    assert json.loads((one.store_dir / C.STATS_FILE).read_text()) == json.loads(
        (two.store_dir / C.STATS_FILE).read_text()
    )


def test_cli_scheduler_option_runs_prepare_on_a_local_cluster(tmp_path, monkeypatch):
    import somojax.prepare.core as core
    from somojax.cli import main

    seen = []
    monkeypatch.setattr(
        core, "_prepare", lambda cfg, report: seen.append(distributed.get_client().scheduler_info()["workers"]) or {}
    )
    assert main(["prepare", "-c", "tiny", f"workdir={tmp_path}", "--scheduler", "local:1"]) == 0
    assert len(seen) == 1 and len(seen[0]) == 1


def test_without_a_scheduler_nothing_changes():
    with dask_scheduler(None) as client:
        assert client is None
    with pytest.raises(ValueError):
        distributed.get_client()  # no client was made


@pytest.mark.parametrize(
    "spec,needle", [("cluster", "expected local, local:N"), ("local:0", "at least 1"), ("slurm:0", "")]
)
def test_bad_scheduler_is_a_clear_error(spec, needle):
    with pytest.raises(ConfigError) as e:
        with dask_scheduler(spec):
            pass
    assert needle in str(e.value) and spec in str(e.value)
