"""SoMo.ml v1 as its authors publish it: a bundle in their format (written here from NumPy) imports
with `-c somo-v1`, records its window length, inputs and statistics, and predicts what a NumPy
float64 EA-LSTM with the authors' normalisation predicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from somojax import constants as C
from somojax.checkpoint import load_bundle
from somojax.cli import main
from somojax.config import load_config
from somojax.errors import CheckpointError, InputDataError
from somojax.infer import engine, rollout
from somojax.train.import_torch import read_stats
from tests.test_import_torch import ealstm_regional_numpy, random_state_dict

L, H = 365, 128
# the authors' column orders (scaler_ALL_layer0.dat, features_*.dat), not the model's input order
SCALER_COLUMNS = ("t2m", "log_tp", "snr", "ssrd", "skt", "q", "sm")
FORCING_COLUMNS = ("t2m", "tp", "log_tp", "snr", "ssrd", "skt", "q")


def scaler_stats(seed: int = 0) -> dict[str, tuple[float, float]]:
    """Plausible (mean, std) per variable, with the 5 decimals the authors print."""
    rng = np.random.default_rng(seed)
    base = {
        "t2m": (287.2, 12.2),
        "log_tp": (0.58, 0.82),
        "snr": (8.07, 5.34),
        "ssrd": (17.7, 7.73),
        "skt": (287.3, 13.5),
        "q": (0.0076, 0.0047),
        "sm": (0.2536, 0.1107),
    }
    base.update({v: (float(rng.uniform(0.1, 900)), float(rng.uniform(0.05, 300))) for v in C.STATIC_INPUTS})
    return {k: (round(m, 5), round(s, 5)) for k, (m, s) in base.items()}


def write_scaler(path, stats, columns) -> None:
    """A scaler table as the authors write it: header ',var,...', rows aveK and stdK."""
    df = pd.DataFrame(
        [[stats[c][0] for c in columns], [stats[c][1] for c in columns]], index=["aveK", "stdK"], columns=list(columns)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, sep=",")


def write_bundle(root, sd, stats) -> dict[str, object]:
    """The released layout: model/model_epoch15.pt, ismn/lis/scaler_ALL_layer0.dat, ismn/attri/scaler_ALL_statics.dat."""
    import torch

    (root / "model").mkdir(parents=True, exist_ok=True)
    torch.save(
        {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in sd.items()}, root / "model" / "model_epoch15.pt"
    )
    write_scaler(root / "ismn" / "lis" / "scaler_ALL_layer0.dat", stats, SCALER_COLUMNS)
    write_scaler(root / "ismn" / "attri" / "scaler_ALL_statics.dat", stats, C.STATIC_INPUTS)
    return {
        "pt": root / "model" / "model_epoch15.pt",
        "stats": f"{root / 'ismn' / 'lis' / 'scaler_ALL_layer0.dat'},{root / 'ismn' / 'attri' / 'scaler_ALL_statics.dat'}",
    }


def long_memory_state_dict(seed: int, h: int = H) -> dict[str, np.ndarray]:
    """An EA-LSTM with a forget bias of 5 (as trained from ealstm_regional's init): long memory."""
    sd = random_state_dict(seed, d=6, s=10, h=h)
    sd["lstm.weight_hh"] = sd["lstm.weight_hh"] * (0.6 / np.sqrt(h))
    sd["lstm.weight_ih"] = sd["lstm.weight_ih"] * 0.5
    sd["lstm.bias"][:h] += 5.0
    return sd


def authors_prediction(sd, stats, forcing: np.ndarray, static: np.ndarray) -> np.ndarray:
    """The released final_main.py in float64: z-score with aveK/stdK, windows of L days, the
    EA-LSTM, `* stdK + aveK` of sm, clip at 0. forcing [T, 6] in the model's input order."""
    dyn = C.DYNAMIC_INPUTS
    x = (forcing - np.array([stats[v][0] for v in dyn])) / np.array([stats[v][1] for v in dyn])
    xs = (static - np.array([stats[v][0] for v in C.STATIC_INPUTS])) / np.array([stats[v][1] for v in C.STATIC_INPUTS])
    windows = np.stack([x[t - L + 1 : t + 1] for t in range(L - 1, len(x))])
    y = ealstm_regional_numpy(sd, windows, np.repeat(xs[None], len(windows), 0))[:, 0]
    return np.maximum(y * stats["sm"][1] + stats["sm"][0], 0.0)


def synthetic_forcing(n_days: int, stats, seed: int) -> np.ndarray:
    """[T, 6] raw forcing in the model's input order around the scaler's means."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_days, 6)).cumsum(0) * 0.05 + rng.standard_normal((n_days, 6)) * 0.8
    return np.array([stats[v][0] for v in C.DYNAMIC_INPUTS]) + z * np.array([stats[v][1] for v in C.DYNAMIC_INPUTS])


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    pytest.importorskip(
        "torch", reason="the released weights are a torch.save'd .pt: needs PyTorch (pip install 'somojax[torch]')"
    )
    root = tmp_path_factory.mktemp("somo_v1")
    sd, stats = long_memory_state_dict(0), scaler_stats(0)
    files = write_bundle(root / "somo_lstm", sd, stats)
    rc = main(
        [
            "import-torch",
            "-c",
            "somo-v1",
            f"workdir={root}/run",
            "--layer",
            "L1",
            "--state-dict",
            str(files["pt"]),
            "--stats",
            files["stats"],
        ]
    )
    assert rc == 0
    return root, sd, stats, load_bundle(root / "run" / "checkpoints" / "L1")


@pytest.mark.torch
def test_the_released_bundle_imports_as_published(imported):
    _, _, stats, b = imported
    assert b.model.seq_length == L and b.model.hidden_size == H and b.model.predict_last_n == 1
    assert b.dynamic_inputs == ("log_tp", "t2m", "snr", "ssrd", "q", "skt") and b.static_inputs == C.STATIC_INPUTS
    assert b.stats.mean["t2m"] == stats["t2m"][0] and b.stats.std["poro_mid"] == stats["poro_mid"][1]
    assert (b.stats.target_mean["L1"], b.stats.target_std["L1"]) == stats["sm"]


@pytest.mark.torch
def test_imported_model_predicts_what_the_authors_code_does(imported):
    """Raw forcing -> de-normalised, clipped prediction: somojax's exact rollout vs NumPy float64."""
    _, sd, stats, b = imported
    n_days = L + 40
    forcing = [synthetic_forcing(n_days, stats, seed) for seed in (1, 2)]
    static = np.array([[stats[v][0] + (k - 0.5) * stats[v][1] for v in C.STATIC_INPUTS] for k in range(2)])
    columns = {v: np.stack([f[:, i] for f in forcing]) for i, v in enumerate(C.DYNAMIC_INPUTS)}
    got = engine.layer_predictions(b, columns, {v: static[:, i] for i, v in enumerate(C.STATIC_INPUTS)})
    for c in range(2):
        want = authors_prediction(sd, stats, forcing[c], static[c])
        assert np.isnan(got.mean[c, : L - 1]).all()
        np.testing.assert_allclose(got.mean[c, L - 1 :], want, atol=2e-6, rtol=0)
        assert np.ptp(want) > 0.01  # the test data moves the output


@pytest.mark.torch
def test_predicting_with_a_config_that_disagrees_is_an_error(imported):
    root, _, _, b = imported
    demo = load_config("demo", [f"workdir={root}/run"])
    with pytest.raises(
        CheckpointError,
        match=rf"records model\.seq_length=365, but config demo says model\.seq_length={demo.model.seq_length}",
    ):
        rollout.check_settings(demo, {"L1": b})
    fewer = load_config("somo-v1", [f"workdir={root}/run", "data.dynamic_inputs=[log_tp,t2m,snr]"])
    with pytest.raises(
        CheckpointError,
        match=r"records data\.dynamic_inputs=\['log_tp', 'q'.*says data\.dynamic_inputs=\['log_tp', 'snr', 't2m'\]",
    ):
        rollout.check_settings(fewer, {"L1": b})
    rollout.check_settings(load_config("somo-v1", [f"workdir={root}/run"]), {"L1": b})


def test_import_without_a_window_length_is_an_error(tmp_path, capsys):
    np.savez(tmp_path / "m.npz", **random_state_dict(0))
    stats = scaler_stats(0)
    write_scaler(tmp_path / "dyn.dat", stats, SCALER_COLUMNS)
    write_scaler(tmp_path / "sta.dat", stats, C.STATIC_INPUTS)
    args = [
        "import-torch",
        f"workdir={tmp_path}",
        "--layer",
        "L1",
        "--state-dict",
        str(tmp_path / "m.npz"),
        "--stats",
        f"{tmp_path}/dyn.dat,{tmp_path}/sta.dat",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "needs the model's window length, which a PyTorch state dict does not record: give --seq-length" in err
    assert f"the default config demo would give model.seq_length={load_config('demo').model.seq_length}" in err
    assert main(args + ["--seq-length", "200"]) == 0
    assert load_bundle(tmp_path / "checkpoints" / "L1").model.seq_length == 200


def test_scaler_tables_are_read_by_content_and_merged(tmp_path):
    stats = scaler_stats(1)
    write_scaler(tmp_path / "scaler_ALL_layer0.dat", stats, SCALER_COLUMNS)
    write_scaler(tmp_path / "scaler_ALL_statics.dat", stats, C.STATIC_INPUTS)
    norm, _ = read_stats([tmp_path / "scaler_ALL_layer0.dat", tmp_path / "scaler_ALL_statics.dat"], "L1")
    assert set(norm.mean) == set(C.DYNAMIC_INPUTS) | set(C.STATIC_INPUTS)
    assert norm.mean["q"] == stats["q"][0] and norm.std["ETOPOsd"] == stats["ETOPOsd"][1]
    assert norm.target_mean == {"L1": stats["sm"][0]}
    other = dict(stats, t2m=(250.0, 3.0))
    write_scaler(tmp_path / "other.dat", other, ("t2m",))
    with pytest.raises(InputDataError, match=r"give 't2m' different statistics"):
        read_stats(f"{tmp_path}/scaler_ALL_layer0.dat,{tmp_path}/other.dat", "L1")


@pytest.mark.parametrize(
    "content",
    ["ETOPOavg 3 4\nsomething else\n", ",t2m,q\nmean_value,1,2\nspread,3,4\n", "\x00\x01binary"],
)
def test_an_unknown_statistics_format_shows_the_accepted_ones(tmp_path, content):
    (tmp_path / "scaler.dat").write_text(content)
    with pytest.raises(InputDataError) as e:
        read_stats(tmp_path / "scaler.dat", "L1")
    msg = str(e.value)
    assert "scaler.dat" in msg and "JSONDecodeError" not in msg
    assert "SoMo.ml scaler table" in msg and "variable,mean,std" in msg and "somojax JSON" in msg
