#!/usr/bin/env bash
# The whole test suite: installs the package with its dev extra into .venv, then runs pytest
# (unit, property and end-to-end tests, doctests).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
