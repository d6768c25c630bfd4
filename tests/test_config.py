"""Configuration: shipped configs load, unknown keys and bad values fail with clear messages."""

import dataclasses

import pytest

from somojax import config as cfgmod
from somojax.config import ConfigError, load_config


@pytest.mark.parametrize("name", ["paper", "demo", "tiny", "region", "somo-v1"])
def test_shipped_configs_load_and_roundtrip(name, tmp_path):
    cfg = load_config(name)
    assert cfg.name == name
    path = cfgmod.save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(path)
    assert again == cfg
    assert cfgmod.from_dict(cfgmod.to_dict(cfg)) == cfg


def test_paper_config_is_the_papers_settings():
    cfg = load_config("paper")
    assert (cfg.model.hidden_size, cfg.model.dropout, cfg.model.seq_length, cfg.model.predict_last_n) == (
        128,
        0.5,
        365,
        1,
    )
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
    with pytest.raises(ConfigError, match="'demo', 'paper', 'region', 'somo-v1', 'tiny'"):
        load_config("nonexistent_config_name")


def test_configs_are_frozen():
    cfg = load_config("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.hidden_size = 3  # type: ignore[misc]


def test_unquoted_yes_and_no_reach_yes_no_options():
    # YAML 1.1 reads `yes`/`no` as booleans; options spelled "yes"/"no" still take them
    assert load_config("tiny", ["kernel.hoist=yes"]).kernel.hoist == "yes"
    assert load_config("tiny", ["kernel.hoist=no"]).kernel.hoist == "no"
    with pytest.raises(ConfigError, match="kernel.hoist"):
        load_config("tiny", ["kernel.hoist=maybe"])


@pytest.mark.parametrize("hoist", ["yes", "no", "auto"])
def test_kernel_hoist_yes_and_no_win_over_the_backend_and_auto_follows_it(hoist):
    from somojax.models.kernel import infer_kernel, train_kernel

    cfg = load_config("tiny", [f"kernel.hoist={hoist}"])
    for backend in ("cpu", "gpu", "tpu"):
        want = {"yes": True, "no": False, "auto": backend != "cpu"}[hoist]
        assert train_kernel(cfg.kernel, cfg.model, backend).hoist is want
        assert infer_kernel(cfg.kernel).resolved_hoist(backend) is want
    assert infer_kernel(cfg.kernel).hoist is {"yes": True, "no": False, "auto": None}[hoist]


def test_performance_and_layout_keys_live_apart_from_the_science():
    # what changes the numbers is in the stage sections; how fast and in which pieces is in
    # `kernel` and `layout`, which no stage's fingerprint (pipeline, resume) reads
    from somojax.pipeline import STAGE_INPUTS

    science = {f.name for s in ("data", "model", "train", "infer") for f in dataclasses.fields(cfgmod.SECTIONS[s])}
    knobs = {f.name for s in ("kernel", "layout") for f in dataclasses.fields(cfgmod.SECTIONS[s])}
    assert not science & knobs
    assert not {"hoist", "remat", "unroll", "backward", "tile_cells", "shard_lat", "cpu_devices"} & science
    assert all("kernel" not in v and "layout" not in v for v in STAGE_INPUTS.values())


def test_moved_keys_are_read_under_their_new_names(tmp_path, caplog):
    old = tmp_path / "old.yaml"
    old.write_text("base: tiny\nmodel:\n  hoist: 'no'\ninfer:\n  shard_lat: 8\n  chunk_lat: 4\ncpu_devices: 1\n")
    with caplog.at_level("WARNING", logger="somojax.config"):
        cfg = load_config(old, ["train.ensemble_mode=loop", "data.chunk_days=365"])
    assert (cfg.kernel.hoist, cfg.layout.shard_lat, cfg.layout.chunk_lat, cfg.layout.cpu_devices) == ("no", 8, 4, 1)
    assert (cfg.kernel.ensemble_mode, cfg.layout.forcing_chunk_days) == ("loop", 365)
    assert "model.hoist is now kernel.hoist" in caplog.text and "data.chunk_days is now" in caplog.text
    # a checkpoint's saved model settings from before the move still load
    saved = cfgmod.to_dict(cfg)["model"] | {"hoist": "auto", "remat": True, "unroll": 1, "backward": "auto"}
    assert cfgmod.from_dict({"model": saved}).model == cfg.model
    # the old and the new spelling with different values: which one was meant is unknown
    both = tmp_path / "both.yaml"
    both.write_text("base: tiny\nmodel:\n  hoist: 'no'\nkernel:\n  hoist: 'yes'\n")
    with pytest.raises(ConfigError, match="sets kernel.hoist twice"):
        load_config(both)
    # a moved key still gets its value rule, under its new name
    with pytest.raises(ConfigError, match="layout.tile_cells"):
        load_config("tiny", ["infer.tile_cells=0"])


# ----------------------------------------------------------------------------------------
# value rules (somojax/config_checks.py)
# ----------------------------------------------------------------------------------------
def test_every_field_has_a_value_rule_or_a_reason():
    from somojax.config_checks import RULES, field_keys

    keys = field_keys(cfgmod.Config())
    missing = [k for k in keys if k not in RULES]
    assert not missing, f"add rules for {missing} to RULES in somojax/config_checks.py"
    assert not [k for k in RULES if k not in keys], "RULES names fields that do not exist"
    assert all(v.strip() for v in RULES.values() if isinstance(v, str))  # a reason, not a blank


BAD_VALUES = [
    ("model.hidden_size=0", "an integer >= 1"),
    ("model.dropout=1.5", ">= 0 and < 1"),
    ("model.dropout=-0.1", ">= 0 and < 1"),
    ("model.dropout=.nan", "a finite number"),
    ("model.seq_length=0", "an integer >= 1"),
    ("kernel.unroll=0", "an integer >= 1"),
    ("train.members=0", "the ensemble size"),
    ("train.batch_size=0", "an integer >= 1"),
    ("train.epochs=0", "an integer >= 1"),
    ("train.learning_rates=[[0, -1.0e-3]]", "rates finite and > 0"),
    ("train.learning_rates=[[0, 1e-3], [0, 5e-4]]", "epochs increasing"),
    ("train.learning_rates=[[2, 1e-3]]", "the first epoch 0"),
    ("train.nse_eps=0", "> 0"),
    ("train.clip_norm=-1", ">= 0"),
    ("train.layers=[L1, L4]", "distinct layers from ['L1', 'L2', 'L3']"),
    ("train.layers=[]", "a non-empty list"),
    ("train.max_updates_per_epoch=0", "null or an integer >= 1"),
    ("train.seed=-1", "a random seed"),
    ("infer.start=2001-02-30", "a calendar date YYYY-MM-DD that exists"),
    ("infer.end=2001-13-01", "a calendar date"),
    ("infer.start=yesterday", "a calendar date"),
    ("infer.bbox=[44, 40, -98, -96]", "-90 <= south < north <= 90"),
    ("infer.bbox=[40, 44, -98, 200]", "-180 <= west < east <= 180"),
    ("layout.tile_cells=0", "an integer >= 1"),
    ("layout.memory_budget_gb=0", "> 0"),
    ("data.lat_range=[-95, 10]", "latitude edges in -90..90"),
    ("data.lon_range=[10, -10]", "the first edge must be smaller than the second"),
    ("data.val_fraction=0", "> 0 and < 1"),
    ("data.quality_flags=[]", "a non-empty list"),
    ("data.dynamic_inputs=[t2m, t2m]", "distinct"),
    ("data.arid_min_precip=0", "> 0"),
    ("evaluate.folds=1", "at least 2 folds"),
    ("evaluate.quantiles=[0.8, 0.2]", "0 <= low < high <= 1"),
    ("evaluate.anomaly_window_days=34", "an odd number of days"),
    ("bench.repeats=0", "an integer >= 1"),
    ("name=''", "a non-empty run name"),
    ("workdir=runs/{user}", "the only placeholder allowed is {name}"),
    ("layout.cpu_devices=-2", "an integer >= 0"),
]


@pytest.mark.parametrize("override, allowed", BAD_VALUES)
def test_bad_values_name_key_source_value_and_range(override, allowed):
    key, text = override.split("=", 1)
    with pytest.raises(ConfigError) as e:
        load_config("tiny", [override])
    msg = str(e.value)
    assert msg.startswith(f"{key}="), msg
    assert f"(from command-line override {override!r}): must be " in msg and allowed in msg, msg


def test_a_bad_value_in_a_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: tiny\ninfer:\n  start: 2001-02-30\nmodel:\n  dropout: 0.2\n")  # an unquoted impossible date
    with pytest.raises(
        ConfigError, match=rf"infer\.start='2001-02-30' \(from config {bad.resolve()}\): must be a calendar date"
    ):
        load_config(bad)
    bad.write_text("base: tiny\nmodel:\n  dropout: 1.0\n")
    with pytest.raises(ConfigError, match=rf"model\.dropout=1\.0 \(from config {bad.resolve()}\)"):
        load_config(bad)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["infer.start=2001-06-01", "infer.end=2001-01-31"],
            r"the prediction period must not end before it starts; found infer\.start='2001-06-01' \(from command-line override",
        ),
        (
            ["data.target_start=1999-01-01"],
            r"target period must lie inside the forcing period .*data\.forcing_start='2000-01-01' \(from config .*tiny\.yaml\)",
        ),
        (
            ["data.split=period", "data.val_start=2005-01-01", "data.val_end=2005-12-31"],
            "validation period must lie inside the target period",
        ),
        (
            ["model.predict_last_n=31"],
            r"predict_last_n must not exceed model\.seq_length; found model\.predict_last_n=31 .*model\.seq_length=30 \(from config",
        ),
        (["layout.shard_time=100"], r"layout\.shard_time must be a multiple of layout\.chunk_time"),
        (
            ["infer.region=cells"],
            r"infer\.region=cells needs infer\.cells_file.*infer\.cells_file='' \(from the default\)",
        ),
        (["synth.station_start=1990-01-01"], "must lie within synth.start..synth.end"),
        (["evaluate.anomaly_min_count=40"], "must not exceed evaluate.anomaly_window_days"),
    ],
)
def test_relations_between_keys_name_every_key_and_its_source(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", overrides)


def test_edge_values_that_mean_something_are_allowed():
    cfg = load_config(
        "tiny",
        [
            "model.dropout=0",
            "train.clip_norm=0",
            "layout.mesh_member_size=0",
            "train.max_updates_per_epoch=null",
            "kernel.rows_per_step=0",
            "infer.bbox=[-90, 90, -180, 180]",
            "data.split=period",
            "synth.hours_per_obs=24",
            "evaluate.quantiles=[0, 1]",
            "layout.cpu_devices=0",
        ],
    )
    assert cfg.train.max_updates_per_epoch is None and cfg.infer.bbox == (-90.0, 90.0, -180.0, 180.0)


def test_exponents_without_a_dot_are_numbers_and_dates_stay_text():
    # YAML 1.1 reads 1e-3 as a string and 2000-01-01 as a date object
    cfg = load_config("tiny", ["train.learning_rates=[[0, 1e-3], [1, 5E-4]]", "infer.start=2000-07-01"])
    assert cfg.train.learning_rates == ((0, 1e-3), (1, 5e-4)) and cfg.infer.start == "2000-07-01"
    with pytest.raises(ConfigError, match="expected a number"):
        load_config("tiny", ["model.dropout=1e-x"])


def test_a_binary_file_as_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "weights.yaml"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ConfigError, match=r"weights\.yaml is not valid YAML"):
        load_config(bad)


def test_a_directory_as_config_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot be read: Is a directory; give a YAML file"):
        load_config(tmp_path)
