"""`somojax` command line: a thin dispatcher onto the library (docs/design.md#architecture).

Every subcommand takes `--config` (a shipped name such as `demo`, or a YAML path) and any number
of `section.key=value` overrides, writes the resolved config into the run directory, and calls
one library function. Errors the user can fix print as one line with a non-zero exit code;
`--debug` shows tracebacks.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import shlex
import sys
import textwrap
from typing import Callable, Sequence

from somojax import __version__
from somojax.errors import SomojaxError, describe_os_error, writing

DEFAULT_CONFIG = "demo"

COMMANDS: dict[str, str] = {
    "synth": "generate the synthetic Earth (raw ISMN, ERA5 and static files + truth)",
    "prepare": "build analysis-ready Zarr stores (forcings, statics, targets, statistics) from raw files",
    "train": "train the EA-LSTM ensemble, layer by layer (cascade), with checkpoints",
    "predict": "roll checkpoints out over a region and period into the prediction Zarr store",
    "export": "write the prediction store as CF NetCDF files per layer and year",
    "evaluate": "5-fold cross-validation, skill metrics, reference datasets, figures and report",
    "import-torch": "turn a PyTorch (SoMo.ml v1 / ealstm_regional) state dict into a somojax checkpoint",
    "bench": "measure training and rollout throughput against the PyTorch peers and the hardware floor",
    "run": "everything in order: synth (if synthetic) -> prepare -> train -> predict -> evaluate",
    "plan": "the cost of the configured rollout: cell-steps, FLOP, bytes, memory per device, expected wall time",
}

DETAILS: dict[str, str] = {
    "synth": "Writes <workdir>/raw (ISMN station files, ERA5-style NetCDF, static maps) and "
    "<workdir>/stores/truth.zarr. Region, period and stations come from the `synth` section.",
    "prepare": "Reads the raw inputs named in the `data` section (or the synthetic Earth's) and writes "
    "forcings.zarr, statics.zarr, targets.zarr, normalization.json and a preparation report to "
    "the store directory.",
    "train": "Trains `train.members` members of each layer in `train.layers` in one jitted, sharded "
    "step. Resumes from the last checkpoint when one exists.",
    "predict": "Exact (every day its own window of {window}) or chunked inference, tiled and resumable; "
    "writes sm and sm_spread (layer, time, latitude, longitude) to <workdir>/predictions.zarr; with "
    "infer.region=points (a list of points or stations), one CF timeSeries (discrete sampling geometry) "
    "NetCDF per layer in <workdir>/points.",
    "export": "One NetCDF file per layer and year, named somojax_<LAYER>_<YYYY>.nc.",
    "evaluate": "Scores SoMo.ml*-style cross-validated series per cell and layer against the targets, "
    "and reference products on the same cells and days.",
    "import-torch": "A state dict holds only weights: the window length and input order come from --seq-length or the "
    "config given with -c (SoMo.ml v1: -c somo-v1, docs/somo-v1.md), are logged and recorded in the checkpoint. "
    ".pt/.pth files need PyTorch (pip install 'somojax[torch]').",
    "bench": "Prints tables and writes JSON to benchmarks/results/.",
    "run": "The main job. With the default `demo` config it runs on the synthetic Earth in minutes.",
    "plan": "Counts the work of `somojax predict` for the config and divides it by measured rollout rates "
    "(benchmarks/results/rollout-*.json); a device without a measurement needs --device-gflops. Computes nothing.",
}


# settings users look for first; shown by `somojax --help` and the commands they concern
SETTINGS: dict[str, str] = {
    "workdir=DIR": "where every output of the run goes (default runs/{name}: runs/demo for -c demo)",
    "infer.region=land|bbox|cells|points": "what predict covers: the land cells in infer.bbox (default), every cell of the "
    "bbox, or the cells listed in infer.cells_file (all into the gridded store); points: one series per site of "
    "infer.points_file (CF timeSeries NetCDF in <workdir>/points)",
    "infer.bbox=[S,N,W,E]": "the region's south, north, west and east edges in degrees",
    "infer.cells_file=FILE": "CSV with latitude,longitude columns, one cell per row (infer.region=cells)",
    "infer.points_file=FILE": "CSV with latitude,longitude[,name] columns, or an ISMN archive (its stations) (infer.region=points)",
    "infer.forcing_tables=DIR": "points' inputs from SoMo.ml's features_<lat>_<lon>.dat tables (with infer.statics_table="
    "global_attri.dat) instead of the stores",
    "infer.start=YYYY-MM-DD": "first and last day of the product (also infer.end)",
}
SETTINGS_OF = {"predict": list(SETTINGS), "run": list(SETTINGS)}

# commands that join a multi-process job when the environment describes one (utils/distributed.py)
DISTRIBUTED = ("train", "predict")


def _settings_text(keys) -> str:
    lines = []
    for k in keys:
        lines.append(f"  {k}")
        lines += textwrap.wrap(SETTINGS[k], 88, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "settings (section.key=value after the command, or in the YAML file of -c):\n" + "\n".join(lines)


def _window_text(argv: Sequence[str]) -> str:
    """The exact-mode window as configured by the -c/override arguments of `argv` (for help)."""
    from somojax.config import load_config

    config, overrides, it = DEFAULT_CONFIG, [], iter(argv)
    for a in it:
        if a in ("-c", "--config"):
            config = next(it, config)
        elif a.startswith("--config="):
            config = a.split("=", 1)[1]
        elif "=" in a and not a.startswith("-"):
            overrides.append(a)
    try:
        n = load_config(config, overrides).model.seq_length
    except SomojaxError:
        return "model.seq_length days, each checkpoint's own"
    return (
        f"{n} days: model.seq_length in config {config}; a checkpoint uses the length it was trained or imported with"
    )


_AddCommand = Callable[..., argparse.ArgumentParser]


def _common_options() -> argparse.ArgumentParser:
    """The parent parser of every command: -c/--config, the section.key=value overrides, --debug."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        default=DEFAULT_CONFIG,
        help=f"config name (paper, demo, tiny) or YAML path (default: {DEFAULT_CONFIG})",
    )
    common.add_argument(
        "overrides",
        nargs="*",
        metavar="section.key=value",
        help="override config values, e.g. train.members=3 model.hidden_size=64",
    )
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    return common


def _add_data_commands(add: _AddCommand) -> None:
    """Adds the data stages synth and prepare through `add(name, **kw)` (returns the subparser)."""
    add("synth")
    sp = add("prepare")
    sp.add_argument(
        "--scheduler",
        default=None,
        help="run the dask graphs on a cluster: local[:N] (N worker processes here), HOST:PORT, a scheduler file "
        "(*.json), slurm:N (dask-jobqueue); needs somojax[cluster]. Default: threads in this process",
    )


def _add_model_commands(add: _AddCommand) -> None:
    """Adds the model stages train, predict, export, evaluate through `add(name, **kw)`."""
    sp = add("train")
    sp.add_argument("--layers", nargs="+", default=None, help="layers to train (default: train.layers)")
    sp.add_argument("--fresh", action="store_true", help="ignore existing checkpoints and start over")
    sp = add("predict")
    sp.add_argument("--layers", nargs="+", default=None, help="layers to predict (default: all trained)")
    sp.add_argument("--fresh", action="store_true", help="discard an unfinished prediction store and start over")
    add("export")
    add("evaluate")


def _add_tool_commands(add: _AddCommand) -> None:
    """Adds the tools import-torch, bench, run (all stages), plan through `add(name, **kw)`."""
    sp = add("import-torch")
    sp.add_argument(
        "--state-dict",
        required=True,
        help="PyTorch state dict (.pt/.pth) or NumPy .npz of it; several (comma-separated): members",
    )
    sp.add_argument(
        "--stats",
        required=True,
        help="normalisation statistics, one file or several (comma-separated, merged): somojax JSON, CSV variable,mean,std, "
        "or SoMo.ml's scaler tables (scaler_ALL_layer0.dat,scaler_ALL_statics.dat: rows aveK/stdK)",
    )
    sp.add_argument(
        "--seq-length",
        type=int,
        default=None,
        help="the model's window length in days (a state dict does not record it; SoMo.ml v1: 365, or use -c somo-v1); "
        "default: model.seq_length of the config given with -c",
    )
    sp.add_argument("--layer", required=True, choices=["L1", "L2", "L3"], help="the layer this model predicts")
    sp.add_argument("--out", default=None, help="checkpoint directory (default: <workdir>/checkpoints/<layer>)")
    sp = add("bench")
    sp.add_argument(
        "--only",
        nargs="+",
        default=None,
        help="benchmarks to run (floor, train, scaling, rollout, forward, zarr, demo); default: all but demo",
    )
    add("run")
    sp = add("plan")
    sp.add_argument("--devices", type=int, default=1, help="devices the rollout runs on (default 1)")
    sp.add_argument(
        "--kind", default="cpu", help="device kind: cpu (a core of the measured machine), gpu, tpu (default cpu)"
    )
    sp.add_argument("--cells", type=int, default=None, help="cells to predict (default: counted in the statics store)")
    sp.add_argument(
        "--device-gflops", type=float, default=None, help="float32 matmul GFLOP/s of a device without a measured rate"
    )


def _parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The somojax argument parser; `argv` only decides how much the help of predict spells out."""
    epilog = "commands:\n" + "\n".join(f"  {k:<13} {v}" for k, v in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="somojax",
        description="Global daily soil moisture from in-situ data: SoMo.ml's EA-LSTM ensemble in JAX.",
        epilog=epilog
        + "\n\n"
        + _settings_text(SETTINGS)
        + "\n\nRun `somojax <command> --help` for the options of a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"somojax {__version__}")
    sub = p.add_subparsers(dest="command", metavar="<command>")
    common = _common_options()
    asks_help = "-h" in argv or "--help" in argv
    window = _window_text(argv) if asks_help and "predict" in argv else "model.seq_length days"

    def add(name: str, **kw) -> argparse.ArgumentParser:
        if name in SETTINGS_OF:
            kw["epilog"] = _settings_text(SETTINGS_OF[name])
        return sub.add_parser(
            name,
            parents=[common],
            help=COMMANDS[name],
            description=COMMANDS[name] + ". " + DETAILS[name].format(window=window),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kw,
        )

    _add_data_commands(add)
    _add_model_commands(add)
    _add_tool_commands(add)
    return p


def _dispatch(args: argparse.Namespace, cfg) -> object:
    """Calls the library function of the command. Imports are deferred so --help stays fast."""
    cmd = args.command
    if cmd == "synth":
        from somojax.synth import generate

        return generate(cfg)
    if cmd == "prepare":
        from somojax.prepare import prepare

        return prepare(cfg, scheduler=args.scheduler)
    if cmd == "train":
        from somojax.train import train

        return train(cfg, layers=args.layers, fresh=args.fresh)
    if cmd == "predict":
        from somojax.infer import predict

        return predict(cfg, layers=args.layers, fresh=args.fresh)
    if cmd == "export":
        from somojax.infer import export

        return export(cfg)
    if cmd == "evaluate":
        from somojax.evaluate import evaluate

        return evaluate(cfg)
    if cmd == "import-torch":
        from somojax.train.import_torch import import_torch

        seq_length, told = _import_window(args, cfg)
        return import_torch(
            cfg,
            state_dict=args.state_dict,
            stats=args.stats,
            layer=args.layer,
            out=args.out,
            seq_length=seq_length,
            told=told,
        )
    if cmd == "bench":
        from somojax.bench import run_benchmarks

        return run_benchmarks(cfg, only=args.only)
    if cmd == "plan":
        from somojax.plan import plan

        return plan(cfg, devices=args.devices, kind=args.kind, cells=args.cells, device_gflops=args.device_gflops)
    if cmd == "run":
        from somojax.pipeline import run

        return run(cfg)
    raise AssertionError(cmd)  # pragma: no cover


def _import_window(args: argparse.Namespace, cfg) -> tuple[int | None, str]:
    """(window length, where it and the input order come from) for import-torch.

    A PyTorch state dict does not record its window length, so it must be told: `--seq-length`,
    or a config named with -c (or a model.seq_length override). The default config's length
    would be a guess (the demo's window, not SoMo.ml's 365 days).
    """
    from somojax.errors import ConfigError

    if args.seq_length is not None:
        return args.seq_length, f"--seq-length {args.seq_length}, inputs from config {cfg.name}"
    if args.config_given or any(o.startswith("model.seq_length=") for o in args.overrides):
        return None, f"config {args.config}"
    raise ConfigError(
        "import-torch needs the model's window length, which a PyTorch state dict does not record: give --seq-length "
        f"(SoMo.ml v1: 365) or the config the model was trained with (-c somo-v1 for SoMo.ml v1; the default config "
        f"{DEFAULT_CONFIG} would give model.seq_length={cfg.model.seq_length})"
    )


def _config_given(argv: Sequence[str]) -> bool:
    return any(
        a in ("-c", "--config")
        or a.startswith("--config=")
        or (a.startswith("-c") and len(a) > 2 and not a.startswith("--"))
        for a in argv
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `somojax` console script (`argv` given: an in-process call, which
    returns the exit code and leaves the process's signal handlers as they were)."""
    if argv is not None:
        return _main(list(argv), console=False)
    code = _main(sys.argv[1:], console=True)
    # Leave without the interpreter's teardown (JAX's and XLA's take seconds), during which a
    # SIGTERM would find the default handler back and kill a finished command; all output is
    # written and every file closed by now.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _main(argv: list[str], console: bool) -> int:
    """Runs the command `argv` names and returns its exit code: 0 done, 2 an error the user can
    fix or no command, 1 a bug, 130/143 interrupted (`--debug` raises errors instead)."""
    parser = _parser(argv)
    args = _parse_args(parser, argv)
    if not args.command:
        parser.print_help()
        return 2
    from somojax.utils.logging import setup_logging

    from somojax.utils import signals

    setup_logging(logging.DEBUG if args.debug else logging.INFO)
    handlers = signals.install()  # SIGINT/SIGTERM: a clean stop, exit 130/143 (somojax/utils/signals.py)
    try:
        _run_command(args)
        return 0
    except SomojaxError as e:
        if args.debug:
            raise
        print(f"somojax {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the user gave: unreadable, unwritable, full disk
        if args.debug:
            raise
        print(f"somojax {args.command}: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # SIGINT or SIGTERM (signals.Interrupted), Ctrl-C elsewhere
        code = getattr(e, "exit_code", 130)
        again = shlex.join(["somojax"] + [a for a in argv if a != "--fresh"])
        print(
            f"somojax {args.command}: interrupted by {getattr(e, 'signal_name', 'SIGINT')}; what was finished is kept. "
            f"To resume, run the same command again: {again}",
            file=sys.stderr,
        )
        return code
    except Exception as e:  # a bug: say so briefly, with the way to see more
        if args.debug:
            raise
        msg = textwrap.shorten(str(e), 500)
        print(
            f"somojax {args.command}: internal error: {type(e).__name__}: {msg}\n"
            "  (this is a bug in somojax or an unexpected input; rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        signals.finishing() if console else signals.restore(handlers)  # a signal now: exit at once


def _parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """`argv` parsed, with the overrides that a list option (`--layers`, `--only`) took back
    among the overrides, and `config_given` (whether `argv` names a config)."""
    args = parser.parse_args(argv)
    for name in ("layers", "only"):  # `--layers L1 train.epochs=2`: the list option took the overrides
        values = getattr(args, name, None)
        if values:
            setattr(args, name, [v for v in values if "=" not in v] or None)
            args.overrides = [v for v in values if "=" in v] + list(args.overrides)
    args.config_given = _config_given(argv)
    return args


def _run_command(args: argparse.Namespace) -> None:
    """Loads the config, sets up the devices (and the processes of a multi-process job), saves
    the resolved config and opens the log file in the run directory, then runs the command."""
    from somojax.config import load_config, save_config
    from somojax.utils.logging import setup_logging

    cfg = load_config(args.config, args.overrides)
    from somojax.utils.devices import configure_cpu_devices

    configure_cpu_devices(cfg.layout.cpu_devices, cfg.train.batch_size)  # before JAX starts
    pid = 0
    if args.command in DISTRIBUTED:  # a multi-process job (SLURM, TPU pod, SOMOJAX_COORDINATOR)
        from somojax.utils.distributed import initialize

        pid, _ = initialize()
    if args.command != "bench":  # benchmarks report first-call (compile) times as they are
        from somojax.utils.compile_cache import enable_compilation_cache

        enable_compilation_cache()
    run_dir = cfg.run_dir
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    if pid == 0:  # one writer per job; every process logs to its own file
        with writing("the resolved config into the run directory", run_dir):
            save_config(cfg, run_dir / "config.yaml")
            save_config(cfg, run_dir / "configs" / f"{args.command}-{stamp}.yaml")
    log_name = f"{args.command}.log" if pid == 0 else f"{args.command}.p{pid}.log"
    log = setup_logging(logging.DEBUG if args.debug else logging.INFO, run_dir / "logs" / log_name)
    log.info("somojax %s %s: config %s, run directory %s", __version__, args.command, args.config, run_dir)
    _dispatch(args, cfg)
    if args.command in DISTRIBUTED:
        from somojax.utils.distributed import finish

        finish()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
