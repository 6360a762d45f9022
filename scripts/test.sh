#!/usr/bin/env bash
# The test command the README gives and CI runs: lint, unit and kernel tests, notebooks with nbval,
# then the browser test (JupyterLab in headless Chromium, tests/browser/) and the flux2-klein
# engine tests (tests/local_engine/), each in its own environment. Makes .venv (and .venv-browser,
# .venv-local) on first use, so it works on a fresh machine.
#
#   bash scripts/test.sh                       everything
#   bash scripts/test.sh tests/test_client.py -x   the main suite with these pytest arguments only
#   bash scripts/test.sh tests/browser [-x]    the browser test only
#   bash scripts/test.sh tests/local_engine [-x]   the flux2-klein engine tests only
#   bash scripts/test.sh --colab [-x]          the tests marked `colab` in Colab's package set only
#
# The engine tests run in .venv-local: flux-nb[local] with torch pinned to 2.13.0 (a CPU build;
# an unpinned torch would pull gigabytes of CUDA wheels). They build a tiny random
# Flux2KleinPipeline and never reach the Hugging Face hub (HF_HUB_OFFLINE=1).
#
# The browser test runs in .venv-browser (flux-nb[browser]: JupyterLab and Playwright), never in
# .venv: JupyterLab slows every `import nbformat` there. It needs Debian's `chromium` (or
# FLUX_NB_CHROMIUM=/path); without it the run says so loudly, and fails when CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# Tests never reach the hosted API: no key, no base URL, whatever the shell has.
unset OXEN_API_KEY FLUX_NB_BASE_URL

browser_tests() {
  local chromium=${FLUX_NB_CHROMIUM:-$(command -v chromium || true)}
  if [ -z "$chromium" ] || [ ! -x "$chromium" ]; then
    local why="no chromium found (apt-get install chromium, or set FLUX_NB_CHROMIUM=/path/to/chromium)"
    if [ "${CI:-}" = true ]; then
      echo "ERROR: the browser test (tests/browser) cannot run in CI: $why" >&2
      return 1
    fi
    {
      echo
      echo "##########################################################################"
      echo "##  BROWSER TEST NOT RUN: $why"
      echo "##  tests/browser (JupyterLab in headless Chromium) was skipped: not tested."
      echo "##########################################################################"
    } >&2
    return 0
  fi
  if [ ! -x .venv-browser/bin/python ]; then
    "$PYTHON" -m venv .venv-browser
  fi
  .venv-browser/bin/python -m pip install -q --disable-pip-version-check -e ".[browser]"
  FLUX_NB_CHROMIUM=$chromium .venv-browser/bin/python -m pytest "$@"
}

local_engine_tests() {
  if [ ! -x .venv-local/bin/python ]; then
    "$PYTHON" -m venv .venv-local
  fi
  .venv-local/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
  .venv-local/bin/python -m pip install -q --disable-pip-version-check -e ".[local,test]"
  HF_HUB_OFFLINE=1 .venv-local/bin/python -m pytest "$@"
}

# Colab's package set (tests/colab-constraints-*.txt: IPython 7.34, ipywidgets 7.7.1, ipykernel
# 6.17.1 ...) in .venv-colab on Python 3.13 as Colab has it (else this Python): the tests marked
# `colab` (kernel, cards, panel, the install check) and the tutorials under nbval, whose pictures
# are not byte-compared there (notebooks/conftest.py: Colab's Pillow draws text a few pixels apart).
COLAB_SET=tests/colab-constraints-2026-08-19.txt
COLAB_PACKAGES="ipython ipywidgets widgetsnbextension ipykernel jupyter_client traitlets tornado
  pillow httpx starlette uvicorn numpy"
colab_tests() {
  if [ ! -x .venv-colab/bin/python ]; then
    local python
    python=$(ls -d "$HOME"/.pyenv/versions/3.13*/bin/python 2>/dev/null | tail -1 || true)
    "${python:-$PYTHON}" -m venv .venv-colab
  fi
  # shellcheck disable=SC2086  # COLAB_PACKAGES is a list of names
  .venv-colab/bin/python -m pip install -q --disable-pip-version-check -c "$COLAB_SET" \
    $COLAB_PACKAGES -e ".[test]"
  FLUX_NB_COMPARE_PICTURES=0 .venv-colab/bin/python -m pytest -m colab --ignore=tests/browser \
    --ignore=tests/local_engine "$@"
}

if [ "${1:-}" = --colab ]; then
  shift
  colab_tests "$@"
  exit
fi
if [ "${1:-}" = tests/browser ] || [[ "${1:-}" == tests/browser/* ]]; then
  browser_tests "$@"
  exit
fi
if [ "${1:-}" = tests/local_engine ] || [[ "${1:-}" == tests/local_engine/* ]]; then
  local_engine_tests "$@"
  exit
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
.venv/bin/ruff check flux_nb tests benchmarks
.venv/bin/ruff format --check -q flux_nb tests benchmarks
.venv/bin/mypy  # [tool.mypy] in pyproject.toml: every module of flux_nb
.venv/bin/python -m pytest --ignore=tests/browser --ignore=tests/local_engine "$@"
if [ $# -eq 0 ]; then
  browser_tests tests/browser
  local_engine_tests tests/local_engine
  colab_tests tests notebooks
fi
