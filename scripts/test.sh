#!/usr/bin/env bash
# The test command the README gives and CI runs: lint, unit and kernel tests, notebooks with nbval.
# Makes .venv on first use, so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
# Tests never reach the hosted API: no key, no base URL, whatever the shell has.
unset OXEN_API_KEY FLUX_NB_BASE_URL
.venv/bin/ruff check flux_nb tests
.venv/bin/python -m pytest "$@"
