# shellcheck shell=bash
# Sourced by launch/*.sh: creates ./.venv with python>=3.11 and installs somojax into it
# (editable) with the extras in $SOMOJAX_EXTRAS. Re-installs only when pyproject.toml changes.
set -euo pipefail
PY=${PYTHON:-python3}
"$PY" - <<'PYCHECK' || { echo "somojax needs Python >= 3.11 (found: $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PYCHECK
VENV=${SOMOJAX_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV with $("$PY" --version)"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
extras=${SOMOJAX_EXTRAS:-}
stamp="$VENV/.somojax-$(python -c 'import hashlib,sys;print(hashlib.sha1(open("pyproject.toml","rb").read()+sys.argv[1].encode()).hexdigest()[:12])' "$extras")"
if [ ! -f "$stamp" ]; then
  echo "==> installing somojax${extras:+[$extras]} into $VENV (first time: a few minutes)"
  python -m pip install -q --disable-pip-version-check --upgrade pip
  python -m pip install -q --disable-pip-version-check -e ".${extras:+[$extras]}"
  touch "$stamp"
fi
