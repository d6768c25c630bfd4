"""Configuration: shipped configs load, unknown keys and bad values fail with clear messages."""

import dataclasses

import pytest

from somojax import config as cfgmod
from somojax.config import ConfigError, load_config


@pytest.mark.parametrize("name", ["paper", "demo", "tiny"])
def test_shipped_configs_load_and_roundtrip(name, tmp_path):
    cfg = load_config(name)
    assert cfg.name == name
    path = cfgmod.save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(path)
    assert again == cfg
    assert cfgmod.from_dict(cfgmod.to_dict(cfg)) == cfg


def test_paper_config_is_the_papers_settings():
    cfg = load_config("paper")
    assert (cfg.model.hidden_size, cfg.model.dropout, cfg.model.seq_length, cfg.model.predict_last_n) == (128, 0.5, 365, 1)
    assert cfg.train.members == 5 and cfg.train.layers == ("L1", "L2", "L3")
    assert cfg.train.learning_rates == ((0, 1e-3), (10, 5e-4), (25, 1e-4))
    assert cfg.model.forget_bias == 5.0 and cfg.train.nse_eps == 0.1


def test_base_chain_inherits_and_overrides():
    tiny, demo = load_config("tiny"), load_config("demo")
    assert tiny.model.hidden_size == 8 and demo.model.hidden_size == 32
    assert tiny.model.forget_bias == demo.model.forget_bias == 5.0  # from paper via demo
    assert tiny.data.source == "synthetic"


def test_misspelt_key_names_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: demo\nmodel:\n  hiden_size: 64\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert "model.hiden_size" in str(e.value) and str(bad.resolve()) in str(e.value)
    assert "did you mean 'model.hidden_size'" in str(e.value)


def test_unknown_section_and_wrong_type(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle:\n  hidden_size: 64\n")
    with pytest.raises(ConfigError, match="unknown key 'modle'.*did you mean 'model'"):
        load_config(bad)
    bad.write_text("train:\n  members: five\n")
    with pytest.raises(ConfigError, match=r"TrainConfig.members='five'.*expected an integer"):
        load_config(bad)
    bad.write_text("train:\n  loss: mae\n")
    with pytest.raises(ConfigError, match="must be one of 'nse', 'mse'"):
        load_config(bad)


def test_overrides_are_typed():
    cfg = load_config("demo", ["train.members=4", "data.quality_flags=[G, U]", "model.dropout=0", "name=x"])
    assert cfg.train.members == 4
    assert cfg.data.quality_flags == ("G", "U")
    assert cfg.model.dropout == 0.0 and isinstance(cfg.model.dropout, float)
    assert cfg.run_dir.name == "x"
    with pytest.raises(ConfigError, match="did you mean 'train.members'"):
        load_config("demo", ["train.member=4"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("demo", ["train.members"])


def test_unknown_config_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="'demo', 'paper', 'tiny'"):
        load_config("nonexistent_config_name")


def test_configs_are_frozen():
    cfg = load_config("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.hidden_size = 3  # type: ignore[misc]


def test_unquoted_yes_and_no_reach_yes_no_options():
    # YAML 1.1 reads `yes`/`no` as booleans; options spelled "yes"/"no" still take them
    cfg = load_config("tiny", ["model.hoist=yes", "infer.hoist=no"])
    assert cfg.model.hoist == "yes" and cfg.infer.hoist == "no"
    with pytest.raises(ConfigError, match="model.hoist"):
        load_config("tiny", ["model.hoist=maybe"])
