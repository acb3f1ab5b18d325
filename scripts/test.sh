#!/usr/bin/env bash
# The whole test suite: installs the package with its dev extra into .venv, then runs pytest
# (unit, property and end-to-end tests, doctests, the notebook suite under nbval, and a
# real-browser test of the what-if explorer in Debian's Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
# Chromium for the browser test comes from Debian's packages (Playwright drives that binary; it
# downloads no browser).
if ! command -v chromium >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  elif command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "note: cannot install chromium here (needs apt-get as root); the browser test will skip and say so" >&2
  fi
fi
# Lint first (config in pyproject.toml): habits checked by a tool, not by memory.
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
