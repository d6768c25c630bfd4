#!/usr/bin/env bash
# The test suite: sets up ./.venv with the test extra on first use, then runs pytest with
# 8 fake CPU devices (tests/conftest.py) in two worker processes. Extra arguments go to pytest,
# e.g. -m "not slow".
set -euo pipefail
cd "$(dirname "$0")/.."
SOMOJAX_EXTRAS="test" source launch/_env.sh
# PyTorch is optional (import-torch, peers). Install it only where a local CPU wheel exists (a
# wheel house in pip's find-links); from PyPI it would be a multi-GB CUDA build. Otherwise the
# tests marked 'torch' are skipped.
if ! python -c "import torch" 2>/dev/null; then
  if python -m pip download -q --no-index --no-deps torch==2.13.0 -d "${TMPDIR:-/tmp}/somojax-torch" 2>/dev/null; then
    python -m pip install -q torch==2.13.0 || echo "==> PyTorch install failed: tests marked 'torch' will be skipped"
  else
    echo "==> no local PyTorch CPU wheel: tests marked 'torch' will be skipped"
  fi
fi
# GRIB reading (cfgrib + the ecCodes binary wheel) is the optional `grib` extra; the ERA5 GRIB
# sample tests need it. Try it; without it those tests are skipped with the reason.
if ! python -c "import cfgrib, eccodes" 2>/dev/null; then
  python -m pip install -q --disable-pip-version-check "cfgrib>=0.9.14" "eccodes>=2.38" 2>/dev/null \
    || echo "==> cfgrib/ecCodes not installable here: the GRIB tests will be skipped"
fi
# CF checks of the exported files (tests/test_export_cf.py): CDO and the udunits2 library of
# cfchecker come from Debian (root only), cfchecker and the CF standard-name table (shipped in
# compliance-checker) from PyPI. Without them those checks are skipped with the reason.
if ! command -v cdo >/dev/null || ! ldconfig -p 2>/dev/null | grep -q libudunits2; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cdo libudunits2-dev; } >/dev/null 2>&1 \
      || echo "==> cdo/libudunits2 not installable with apt-get: the CDO and cfchecks tests will be skipped"
  else
    echo "==> cdo/libudunits2 missing and apt-get unavailable (or not root): the CDO and cfchecks tests will be skipped"
  fi
fi
if ! python -c "import cfchecker, compliance_checker" 2>/dev/null; then
  python -m pip install -q --disable-pip-version-check cfchecker compliance-checker 2>/dev/null \
    || echo "==> cfchecker/compliance-checker not installable here: the cfchecks test will be skipped"
fi
# Two worker processes (pytest-xdist), each test file on one of them (`--dist loadfile`: a file's
# module fixtures are built once): most tests are single-threaded dispatch of tiny programs, so
# two of them at a time use the two cores of a small machine. SOMOJAX_TEST_WORKERS=0 runs the
# tests in this process; -n N among the arguments overrides it.
workers="${SOMOJAX_TEST_WORKERS:-2}"
if [ "$workers" != 0 ] && python -c "import xdist" 2>/dev/null; then
  set -- -n "$workers" --dist loadfile "$@"
fi
exec python -m pytest "$@"
