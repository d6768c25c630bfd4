"""`somojax import-torch`: ealstm_regional / SoMo.ml v1 state dicts become checkpoints that predict
what the PyTorch model predicts."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from somojax import constants as C
from somojax.checkpoint import load_bundle
from somojax.config import load_config
from somojax.errors import CheckpointError, InputDataError
from somojax.models import ealstm
from somojax.train.import_torch import import_torch

D, S, H = 6, 10, 16


def random_state_dict(seed: int, d=D, s=S, h=H) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "lstm.weight_ih": rng.standard_normal((d, 3 * h)) * 0.4,
        "lstm.weight_hh": rng.standard_normal((h, 3 * h)) * 0.3,
        "lstm.weight_sh": rng.standard_normal((s, h)) * 0.4,
        "lstm.bias": rng.standard_normal(3 * h) * 0.2,
        "lstm.bias_s": rng.standard_normal(h) * 0.2,
        "fc.weight": rng.standard_normal((1, h)) * 0.3,
        "fc.bias": rng.standard_normal(1) * 0.1,
    }


def ealstm_regional_numpy(sd, x_d, x_s):
    """ealstm_regional's EALSTM.forward + Model.fc in float64 (torch layout, seq-to-one)."""
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    i = sig(x_s @ sd["lstm.weight_sh"] + sd["lstm.bias_s"])
    h = np.zeros((x_d.shape[0], sd["lstm.weight_hh"].shape[0]))
    c = np.zeros_like(h)
    for t in range(x_d.shape[1]):
        gates = sd["lstm.bias"] + h @ sd["lstm.weight_hh"] + x_d[:, t] @ sd["lstm.weight_ih"]
        f, o, g = np.split(gates, 3, axis=1)
        c = sig(f) * c + i * np.tanh(g)
        h = sig(o) * np.tanh(c)
    return h @ sd["fc.weight"].T + sd["fc.bias"]  # [B, 1]


def write_stats(path, layer="L1", fmt="json"):
    names = list(C.DYNAMIC_INPUTS) + list(C.UPPER_LAYER_INPUTS[layer]) + list(C.STATIC_INPUTS)
    if fmt == "json":
        d = {n: {"mean": float(k), "std": 1.0 + k} for k, n in enumerate(names)}
        d["target"] = {"mean": 0.25, "std": 0.08}
        path.write_text(json.dumps(d))
    else:
        rows = ["variable,mean,std"] + [f"{n},{k},{1 + k}" for k, n in enumerate(names)] + [f"{layer},0.25,0.08"]
        path.write_text("\n".join(rows))
    return path


@pytest.fixture
def cfg(tmp_path):
    return load_config("tiny", [f"workdir={tmp_path}"])


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_npz_import_reproduces_numpy_float64(tmp_path, cfg, fmt):
    sds = [random_state_dict(0), random_state_dict(1)]
    paths = []
    for k, sd in enumerate(sds):
        p = tmp_path / f"m{k}.npz"
        np.savez(p, **{key: v.astype(np.float32) for key, v in sd.items()})
        paths.append(str(p))
    out = import_torch(
        cfg,
        state_dict=",".join(paths),
        stats=write_stats(tmp_path / f"stats.{fmt}", fmt=fmt),
        layer="L1",
        out=tmp_path / "ck",
    )
    b = load_bundle(out)
    assert b.n_members == 2 and b.layer == "L1" and b.model.hidden_size == H
    assert b.dynamic_inputs == C.DYNAMIC_INPUTS and b.static_inputs == C.STATIC_INPUTS
    assert b.stats.target_mean == {"L1": 0.25} and b.stats.target_std == {"L1": 0.08}
    assert b.stats.mean["t2m"] == 1.0 and b.stats.std["t2m"] == 2.0
    rng = np.random.default_rng(5)
    x_d = rng.standard_normal((4, 30, D)).astype(np.float32)
    x_s = rng.standard_normal((4, S)).astype(np.float32)
    for m, sd in enumerate(sds):
        want = ealstm_regional_numpy(
            {k: v.astype(np.float32) for k, v in sd.items()}, x_d.astype(np.float64), x_s.astype(np.float64)
        )
        p = jax.tree.map(lambda a: a[m], b.params)
        got = ealstm.forward(p, x_d, x_s, deterministic=True)
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)


def test_layer_2_expects_the_upper_layer_input(tmp_path, cfg):
    sd = random_state_dict(2, d=7)
    np.savez(tmp_path / "l2.npz", **sd)
    out = import_torch(
        cfg,
        state_dict=tmp_path / "l2.npz",
        stats=write_stats(tmp_path / "s.json", layer="L2"),
        layer="L2",
        out=tmp_path / "ck2",
    )
    assert load_bundle(out).dynamic_inputs == C.DYNAMIC_INPUTS + ("sm_L1",)
    with pytest.raises(InputDataError, match=r"lstm.weight_ih has 7 dynamic inputs but layer L1 uses 6"):
        import_torch(
            cfg,
            state_dict=tmp_path / "l2.npz",
            stats=write_stats(tmp_path / "s1.json"),
            layer="L1",
            out=tmp_path / "ck3",
        )


def test_clear_errors_for_bad_state_dicts(tmp_path, cfg):
    stats = write_stats(tmp_path / "s.json")
    sd = random_state_dict(3)
    bad = dict(sd)
    del bad["lstm.bias_s"]
    np.savez(tmp_path / "a.npz", **bad)
    with pytest.raises(InputDataError, match=r"lacks \['lstm.bias_s'\]"):
        import_torch(cfg, state_dict=tmp_path / "a.npz", stats=stats, layer="L1", out=tmp_path / "x")
    bad = dict(sd, **{"fc.weight": np.zeros((2, H))})
    np.savez(tmp_path / "b.npz", **bad)
    with pytest.raises(InputDataError, match=r"fc.weight has shape \[2, 16\], expected \[1, 16\]"):
        import_torch(cfg, state_dict=tmp_path / "b.npz", stats=stats, layer="L1", out=tmp_path / "x")
    np.savez(tmp_path / "c.npz", **sd, **{"lstm.weight_extra": np.zeros(3)})
    with pytest.raises(InputDataError, match="lstm.weight_extra"):
        import_torch(cfg, state_dict=tmp_path / "c.npz", stats=stats, layer="L1", out=tmp_path / "x")
    np.savez(tmp_path / "ok.npz", **sd)
    (tmp_path / "nostats.json").write_text(json.dumps({"t2m": {"mean": 1, "std": 2}, "target": {"mean": 0, "std": 1}}))
    with pytest.raises(InputDataError, match="no mean/std for the model inputs"):
        import_torch(
            cfg, state_dict=tmp_path / "ok.npz", stats=tmp_path / "nostats.json", layer="L1", out=tmp_path / "x"
        )
    import_torch(cfg, state_dict=tmp_path / "ok.npz", stats=stats, layer="L1", out=tmp_path / "y")
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        import_torch(cfg, state_dict=tmp_path / "ok.npz", stats=stats, layer="L1", out=tmp_path / "y")


def test_cli_import_torch(tmp_path):
    from somojax.cli import main

    np.savez(tmp_path / "m.npz", **random_state_dict(4))
    stats = write_stats(tmp_path / "s.csv", fmt="csv")
    rc = main(
        [
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
        ]
    )
    assert rc == 0
    assert load_bundle(tmp_path / "checkpoints" / "L1").n_members == 1


@pytest.mark.torch
def test_torch_saved_state_dict_reproduces_torch_forward(tmp_path, cfg):
    import torch

    from somojax.bench.peers import regional_model  # ealstm_regional's layout, tested vs float64 in test_bench

    torch.manual_seed(0)
    model = regional_model(D, S, H).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.3)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    torch.save({"epoch": 30, "model_state_dict": model.state_dict()}, tmp_path / "ckpt.pth")
    out = import_torch(
        cfg,
        state_dict=[tmp_path / "model.pt", tmp_path / "ckpt.pth"],
        stats=write_stats(tmp_path / "s.json"),
        layer="L1",
        out=tmp_path / "ck",
    )
    b = load_bundle(out)
    x_d = torch.randn(8, 50, D)
    x_s = torch.randn(8, S)
    with torch.no_grad():
        want = model(x_d, x_s).numpy()
    for m in range(2):
        got = ealstm.forward(jax.tree.map(lambda a: a[m], b.params), x_d.numpy(), x_s.numpy(), deterministic=True)
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not an archive at all", r"g\.npz is not a readable \.npz archive of arrays"),
        (b"PK\x03\x04truncated", r"g\.npz is not a readable \.npz archive of arrays \(BadZipFile"),
    ],
)
def test_garbage_npz_is_a_clear_error(tmp_path, cfg, content, message):
    (tmp_path / "g.npz").write_bytes(content)
    with pytest.raises(InputDataError, match=message):
        import_torch(
            cfg, state_dict=tmp_path / "g.npz", stats=write_stats(tmp_path / "s.json"), layer="L1", out=tmp_path / "x"
        )


@pytest.mark.torch
def test_garbage_pt_is_a_clear_error(tmp_path, cfg):
    (tmp_path / "g.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(
        InputDataError, match=r"g\.pt is not a readable PyTorch file .*torch\.save\(model\.state_dict\(\), path\)"
    ):
        import_torch(
            cfg, state_dict=tmp_path / "g.pt", stats=write_stats(tmp_path / "s.json"), layer="L1", out=tmp_path / "x"
        )


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e39])  # 1e39 overflows float32
def test_non_finite_weights_are_refused(tmp_path, cfg, bad):
    sd = random_state_dict(6)
    sd["lstm.weight_hh"][3, 7] = bad
    np.savez(tmp_path / "nan.npz", **sd)
    with pytest.raises(
        InputDataError,
        match=r"lstm\.weight_hh has 1 of 768 values that are NaN or Inf in float32 \(first at index \[3, 7\]",
    ):
        import_torch(
            cfg, state_dict=tmp_path / "nan.npz", stats=write_stats(tmp_path / "s.json"), layer="L1", out=tmp_path / "x"
        )
    assert not (tmp_path / "x").exists()


def test_non_numeric_weights_and_empty_lists_are_refused(tmp_path, cfg):
    sd = random_state_dict(6)
    sd["fc.bias"] = np.array(["a"])
    np.savez(tmp_path / "s.npz", **sd)
    stats = write_stats(tmp_path / "s.json")
    with pytest.raises(InputDataError, match=r"fc\.bias has dtype <U1, expected floating-point weights"):
        import_torch(cfg, state_dict=tmp_path / "s.npz", stats=stats, layer="L1", out=tmp_path / "x")
    with pytest.raises(InputDataError, match=r"names no file"):
        import_torch(cfg, state_dict=" , ", stats=stats, layer="L1", out=tmp_path / "x")


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            {"target": {"mean": 0.25, "std": 0.0}},
            r"the target 'target' has mean 0\.25 and std 0\.0; the std must be positive",
        ),
        ({"target": {"mean": float("nan"), "std": 0.1}}, r"the target 'target' has mean nan"),
        ({"t2m": {"mean": 1.0, "std": 0.0}}, r"variable 't2m' has mean 1\.0 and std 0\.0"),
        ({"t2m": {"mean": float("inf"), "std": 1.0}}, r"variable 't2m' has mean inf"),
    ],
)
def test_statistics_with_nan_or_zero_std_are_refused(tmp_path, cfg, entry, message):
    np.savez(tmp_path / "m.npz", **random_state_dict(4))
    d = json.loads(write_stats(tmp_path / "s.json").read_text())
    d.update(entry)
    (tmp_path / "s.json").write_text(json.dumps(d))  # json writes NaN / Infinity literals
    with pytest.raises(InputDataError, match=message):
        import_torch(cfg, state_dict=tmp_path / "m.npz", stats=tmp_path / "s.json", layer="L1", out=tmp_path / "x")


def test_unreadable_statistics_files(tmp_path, cfg):
    np.savez(tmp_path / "m.npz", **random_state_dict(4))
    run = lambda p: import_torch(cfg, state_dict=tmp_path / "m.npz", stats=p, layer="L1", out=tmp_path / "x")  # noqa: E731
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(InputDataError, match=r"list\.json holds a JSON list, not a mapping"):
        run(tmp_path / "list.json")
    csv = write_stats(tmp_path / "s.csv", fmt="csv")
    csv.write_text(csv.read_text() + "\nt2m,5,5")
    with pytest.raises(InputDataError, match=r"variables \['t2m'\] have more than one row"):
        run(csv)
    (tmp_path / "words.csv").write_text("variable,mean,std\nt2m,warm,1\n")
    with pytest.raises(InputDataError, match=r"words\.csv is not a statistics file somojax understands.*'warm'"):
        run(tmp_path / "words.csv")
    with pytest.raises(InputDataError, match=r"statistics file .*nothere\.json does not exist"):
        run(tmp_path / "nothere.json")


def test_an_interrupted_import_is_replaced_a_finished_one_kept(tmp_path, cfg):
    np.savez(tmp_path / "m.npz", **random_state_dict(4))
    stats = write_stats(tmp_path / "s.json")
    leftover = tmp_path / "ck" / "best" / "0.orbax-checkpoint-tmp-123"  # what a killed save leaves
    leftover.mkdir(parents=True)
    out = import_torch(cfg, state_dict=tmp_path / "m.npz", stats=stats, layer="L1", out=tmp_path / "ck")
    assert load_bundle(out).n_members == 1 and not leftover.exists()
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        import_torch(cfg, state_dict=tmp_path / "m.npz", stats=stats, layer="L1", out=tmp_path / "ck")
    (tmp_path / "file").write_text("")
    with pytest.raises(CheckpointError, match=r"--out .*file is a file, not a directory"):
        import_torch(cfg, state_dict=tmp_path / "m.npz", stats=stats, layer="L1", out=tmp_path / "file")
