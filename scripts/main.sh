#!/usr/bin/env bash
# The main job on the embedded default data: installs what it needs into .venv, then runs
# `trustml report` (simulate -> validate -> features -> model -> evaluation -> explanations -> economics).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/trustml report --out out --overwrite "$@"
