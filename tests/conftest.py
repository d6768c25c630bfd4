"""Test setup: 8 fake CPU devices for sharding tests, shared sample-data paths, markers.

XLA_FLAGS must be set before jax is imported anywhere, hence at the top of conftest.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

# JAX's persistent compilation cache, fresh for each session and shared with the child processes
# the tests start: the suite compiles the same tiny programs again and again (every trainer a test
# builds jits anew, every killed-and-resumed child process starts cold), and a program read back
# is the program compiled (keyed by its HLO, the devices and the compiler), so results are the
# same. SOMOJAX_TEST_COMPILATION_CACHE=0 compiles everything.
if os.environ.get("SOMOJAX_TEST_COMPILATION_CACHE", "1") != "0" and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    _SESSION_CACHE = tempfile.mkdtemp(prefix="somojax-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _SESSION_CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.1"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _shared_data() -> Path | None:
    """The real sample files (../shared/data beside the checkout, or $SOMOJAX_SHARED_DATA)."""
    for cand in (os.environ.get("SOMOJAX_SHARED_DATA"), REPO.parent / "shared" / "data", "/work/shared/data"):
        if cand and (Path(cand) / "README.md").exists():
            return Path(cand)
    return None


SHARED_DATA = _shared_data()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the real sample data; tests needing it are skipped (with the reason) without it."""
    if SHARED_DATA is None:
        pytest.skip("real sample data not found: set SOMOJAX_SHARED_DATA to the shared/data folder")
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    import importlib.util

    import jax

    has_gpu = jax.default_backend() == "gpu"
    has_torch = importlib.util.find_spec("torch") is not None
    # on-demand studies stay out of the default run (and CI's) unless asked for by marker or env
    ondemand = "ondemand" in (config.option.markexpr or "") or os.environ.get("SOMOJAX_ONDEMAND") == "1"
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a GPU"))
        if "ondemand" in item.keywords and not ondemand:
            item.add_marker(pytest.mark.skip(reason="on-demand study: run with -m ondemand or SOMOJAX_ONDEMAND=1"))
        if "torch" in item.keywords and not has_torch:
            item.add_marker(pytest.mark.skip(reason="needs PyTorch (pip install 'somojax[torch]')"))


# The pytest process leaves without the interpreter's teardown, keeping pytest's exit status: after
# every test has passed, the teardown of C extensions loaded together (JAX/XLA, HDF5/netCDF, gloo,
# dask's worker threads) has crashed now and then (a segmentation fault, "double free or
# corruption"), which turned a green run red. The somojax command leaves the same way (cli.main).
_EXIT_STATUS = {}


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS["code"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if "code" in _EXIT_STATUS and not hasattr(config, "workerinput"):
        import shutil
        import sys

        if "_SESSION_CACHE" in globals():
            shutil.rmtree(_SESSION_CACHE, ignore_errors=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS["code"])
