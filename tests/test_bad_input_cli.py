"""Bad input at the command line: every case ends in one `somojax <cmd>: error: ...` line naming
the key or path, the value and the fix, with exit code 2 — never an internal error."""

import errno
import logging
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from somojax import cli
from somojax.config import load_config


@pytest.fixture(autouse=True)
def fresh_log_handlers():
    """`cli.main` in-process attaches a handler to the sys.stderr of the moment (capsys's, closed
    after each test) and one per log file: remove them so the next test gets its own."""
    yield
    log = logging.getLogger("somojax")
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()


def run_main(capsys, *args) -> tuple[int, str]:
    rc = cli.main(list(args))
    err = capsys.readouterr().err
    assert "internal error" not in err and "Traceback" not in err, err
    return rc, err


@pytest.mark.parametrize(
    "command, override, shown",
    [
        (
            "predict",
            "infer.start=2001-02-30",
            "infer.start='2001-02-30' (from command-line override 'infer.start=2001-02-30'): must be a calendar date",
        ),
        (
            "train",
            "model.hidden_size=0",
            "model.hidden_size=0 (from command-line override 'model.hidden_size=0'): must be an integer >= 1",
        ),
        (
            "train",
            "train.members=0",
            "train.members=0 (from command-line override 'train.members=0'): must be an integer >= 1 (the ensemble size)",
        ),
        (
            "train",
            "model.dropout=1.5",
            "model.dropout=1.5 (from command-line override 'model.dropout=1.5'): must be a finite number >= 0 and < 1",
        ),
        ("train", "train.learning_rates=[[0,-1e-3]]", "train.learning_rates=[[0, -0.001]] (from command-line override"),
        ("evaluate", "evaluate.quantiles=[0.9,0.1]", "evaluate.quantiles=[0.9, 0.1]"),
        ("predict", "infer.bbox=[0,0,0,0]", "infer.bbox=[0.0, 0.0, 0.0, 0.0]"),
    ],
)
def test_config_errors_exit_2_before_anything_runs(capsys, tmp_path, command, override, shown):
    rc, err = run_main(capsys, command, "-c", "tiny", f"workdir={tmp_path}/run", override)
    assert rc == 2 and err.startswith(f"somojax {command}: error: {shown}"), err
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


def test_a_workdir_under_a_file_names_the_path(capsys, tmp_path):
    (tmp_path / "afile").write_text("")
    rc, err = run_main(capsys, "train", "-c", "tiny", f"workdir={tmp_path}/afile/run")
    assert rc == 2
    assert f"cannot write the resolved config into the run directory {tmp_path}/afile/run" in err
    assert "a part of the path is a file, not a directory" in err


def test_a_full_disk_names_what_was_written(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    os.symlink("/dev/full", run / "config.yaml.tmp")  # every write there fails with ENOSPC
    rc, err = run_main(capsys, "train", "-c", "tiny", f"workdir={run}")
    assert rc == 2
    assert (
        f"cannot write the resolved config into the run directory {run}: No space left on device; the disk is full"
        in err
    )
    assert not (run / "config.yaml").exists()


def test_any_os_error_inside_a_command_is_one_line(capsys, tmp_path, monkeypatch):
    def denied(args, cfg):
        raise PermissionError(errno.EACCES, "Permission denied", "/data/era5/2001.nc")

    monkeypatch.setattr(cli, "_dispatch", denied)
    rc, err = run_main(capsys, "prepare", "-c", "tiny", f"workdir={tmp_path}")
    errors = [line for line in err.splitlines() if line.startswith("somojax prepare: error:")]
    assert rc == 2 and len(errors) == 1 and err.strip().endswith(errors[0])  # one line, the last
    assert errors[0].startswith(
        "somojax prepare: error: cannot read or write /data/era5/2001.nc: Permission denied; no permission"
    )


def test_export_and_predict_without_their_inputs(capsys, tmp_path):
    rc, err = run_main(capsys, "export", "-c", "tiny", f"workdir={tmp_path}")
    assert (
        rc == 2
        and f"the predictions store {tmp_path}/predictions.zarr does not exist; run the stage that writes it first"
        in err
    )
    rc, err = run_main(capsys, "predict", "-c", "tiny", f"workdir={tmp_path}")
    assert rc == 2 and "does not exist; run the stage that writes it first" in err


def test_predict_with_a_bad_cells_file(capsys, tmp_path):
    from tests.test_infer import _bundle, _stores
    from somojax.checkpoint import save_bundle
    from somojax.config import load_config

    cfg = load_config("tiny", [f"workdir={tmp_path}"])
    _stores(cfg.store_dir)
    for layer in ("L1",):
        save_bundle(_bundle(layer, 1), cfg.checkpoint_dir / layer)
    cells = tmp_path / "cells.csv"
    cells.write_text("latitude,longitude\n40.125,-97.375\n40.375,n/a\n")
    rc, err = run_main(
        capsys,
        "predict",
        "-c",
        "tiny",
        f"workdir={tmp_path}",
        "infer.start=2000-04-01",
        "infer.end=2000-06-30",
        "infer.region=cells",
        f"infer.cells_file={cells}",
        "--layers",
        "L1",
    )
    assert (
        rc == 2
        and f"infer.cells_file='{cells}': 1 longitude values are not numbers in -180..360 (line 3: 'n/a')" in err
    )


def test_import_torch_with_garbage(capsys, tmp_path):
    from tests.test_import_torch import write_stats

    (tmp_path / "m.npz").write_bytes(b"garbage")
    stats = write_stats(tmp_path / "s.json")
    rc, err = run_main(
        capsys,
        "import-torch",
        "-c",
        "tiny",
        f"workdir={tmp_path}",
        "--state-dict",
        str(tmp_path / "m.npz"),
        "--stats",
        str(stats),
        "--layer",
        "L1",
    )
    assert rc == 2 and "m.npz is not a readable .npz archive of arrays" in err


def test_evaluate_refuses_an_unfinished_prediction_store(tmp_path):
    from somojax.errors import StoreError
    from somojax.evaluate import runner
    from somojax.infer import store as pstore

    assert runner._open_predictions(tmp_path / "none.zarr") is None  # optional: evaluate goes on without it
    layout = pstore.Layout(
        ("L1",), pd.date_range("2000-01-01", periods=4), np.array([40.125]), np.array([-97.125]), (4, 1, 1), (4, 1, 1)
    )
    pstore.open_or_create(tmp_path / "p.zarr", layout, {}, "fp", fresh=False)
    with pytest.raises(
        StoreError, match=r"p\.zarr is incomplete \(0 \(tile, block\) pairs finished\): run `somojax predict`"
    ):
        runner._open_predictions(tmp_path / "p.zarr")


# ----------------------------------------------------------------------------------------
# help where users look for it
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, window",
    [
        (["-c", "tiny"], "window of 30 days: model.seq_length in config tiny"),
        (["-c", "tiny", "model.seq_length=45"], "window of 45 days"),
        ([], f"window of {load_config('demo').model.seq_length} days: model.seq_length in config demo"),
        (["-c", "no_such_config"], "window of model.seq_length days, each checkpoint's own"),
    ],
)
def test_predict_help_states_the_configured_window(capsys, args, window):
    with pytest.raises(SystemExit) as e:
        cli.main(["predict", *args, "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert window in out and "365-day" not in out
    assert "infer.cells_file=FILE" in out and "workdir=DIR" in out


def test_top_level_help_shows_workdir_and_the_region_settings(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for key in ("workdir=DIR", "infer.region=land|bbox|cells", "infer.cells_file=FILE", "infer.bbox=[S,N,W,E]"):
        assert key in out, key


def test_end_to_end_bad_value_has_no_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "somojax", "train", "-c", "tiny", f"workdir={tmp_path}", "model.dropout=1.5"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == (
        "somojax train: error: model.dropout=1.5 (from command-line override 'model.dropout=1.5'): "
        "must be a finite number >= 0 and < 1 (a probability; 1 would drop everything)"
    )
