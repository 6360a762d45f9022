#!/usr/bin/env bash
# The main job on the embedded default: makes .venv on first use, then generates an image with a
# fixed seed and prints where it was saved (with OXEN_API_KEY set it uses the hosted model).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/flux-nb generate "${@:-a red fox in a snowy pine forest at dawn}" --seed 42
