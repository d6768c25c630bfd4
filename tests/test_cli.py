"""The command line: every subcommand is listed and documented; errors are one clear line."""

import subprocess
import sys

import pytest

from somojax import cli

SUBCOMMANDS = ["synth", "prepare", "train", "evaluate", "predict", "export", "import-torch", "bench", "run"]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "somojax", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_every_subcommand():
    out = run_cli("--help")
    assert out.returncode == 0
    for name in SUBCOMMANDS:
        assert f"  {name} " in out.stdout, name


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([name, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert cli.COMMANDS[name].split(" (")[0][:30] in text
    assert "--config" in text and "section.key=value" in text


def test_bad_config_key_is_one_line_and_nonzero(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: tiny\ntrain:\n  epoch: 3\n")
    out = run_cli("train", "--config", str(bad), cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "unknown key 'train.epoch'" in out.stderr and "did you mean 'train.epochs'" in out.stderr


def test_no_command_prints_help():
    out = run_cli()
    assert out.returncode == 2 and "commands:" in out.stdout


def test_overrides_after_a_list_option_are_overrides(tmp_path, monkeypatch):
    seen = {}

    def fake_dispatch(args, cfg):
        seen.update(layers=args.layers, epochs=cfg.train.epochs, workdir=cfg.workdir)

    monkeypatch.setattr(cli, "_dispatch", fake_dispatch)
    assert cli.main(["train", "-c", "tiny", f"workdir={tmp_path}", "--layers", "L1", "L2", "train.epochs=7"]) == 0
    assert seen["layers"] == ["L1", "L2"] and seen["epochs"] == 7 and str(seen["workdir"]) == str(tmp_path)


def test_compilation_cache_location(monkeypatch, tmp_path):
    from somojax.utils import compile_cache

    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.cache_dir() == tmp_path / "xdg" / "somojax" / "jax"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    assert compile_cache.cache_dir() == tmp_path / "jax"
    monkeypatch.setenv("SOMOJAX_COMPILATION_CACHE", "0")
    assert compile_cache.cache_dir() is None and compile_cache.enable_compilation_cache() is None


def test_predict_help_names_points(capsys):
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "infer.region=points" in text and "CF timeSeries" in text and "infer.points_file" in text
