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
#   bash scripts/test.sh py310 [pytest args]   the main suite on Python 3.10 (.venv-py310)
#   bash scripts/test.sh pillow11 [pytest args]   the pixel-pinning tests on Pillow 11.3.0
#   bash scripts/test.sh tests/readers [-x]    the image readers' tests only (.venv-readers)
#   bash scripts/test.sh notebooks/07-real-klein-on-a-colab-gpu.ipynb   its tutorial (tiny model)
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

# venv DIR [PYTHON]: make the environment DIR on first use (with PYTHON, else $PYTHON).
venv() {
  if [ ! -x "$1/bin/python" ]; then
    "${2:-$PYTHON}" -m venv "$1"
  fi
}
# pip_in DIR ARGS...: pip install, quietly, into DIR.
pip_in() {
  local dir=$1
  shift
  "$dir/bin/python" -m pip install -q --disable-pip-version-check "$@"
}
# pyenv_python X.Y: the newest pyenv Python X.Y here, or nothing.
pyenv_python() {
  ls -d "$HOME"/.pyenv/versions/"$1"*/bin/python 2>/dev/null | tail -n 1 || true
}

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
  venv .venv-browser
  pip_in .venv-browser -e ".[browser]"
  FLUX_NB_CHROMIUM=$chromium .venv-browser/bin/python -m pytest "$@"
}

# The main suite on Python 3.10, the oldest the package admits (pip picks Pillow 12 there; .venv
# has 13): .venv-py310. Python 3.10 comes from pyenv (FLUX_NB_PY310=/path/to/python3.10 to choose).
py310_tests() {
  local py=${FLUX_NB_PY310:-}
  if [ -z "$py" ]; then
    py=$(pyenv_python 3.10)
  fi
  if [ -z "$py" ] && command -v python3.10 >/dev/null 2>&1; then
    py=$(command -v python3.10)
  fi
  if [ -z "$py" ]; then
    echo "ERROR: no Python 3.10 found (pyenv's ~/.pyenv/versions/3.10*, python3.10, or FLUX_NB_PY310)" >&2
    [ "${CI:-}" = true ] && return 1
    echo "##  PYTHON 3.10 LEG NOT RUN: not tested." >&2
    return 0
  fi
  venv .venv-py310 "$py"
  pip_in .venv-py310 -e ".[test]"
  # schemathesis 4.32.5 needs Python 3.11+: the OpenAPI fuzzing runs in the main suite (.venv)
  .venv-py310/bin/python -m pytest --ignore=tests/browser --ignore=tests/local_engine \
    --ignore=tests/readers --ignore=tests/test_fuzz_openapi.py "$@"
}

# The tests that pin pixels, on Pillow 11.3.0 (Colab's): .venv-pillow11. With the main suite on
# Pillow 13 and the 3.10 leg on 12, the stand-in's pictures are checked on every Pillow we admit.
PIXEL_TESTS=(tests/test_engine.py tests/test_sheet.py tests/test_lettering.py tests/test_thumbnail.py)
pillow11_tests() {
  venv .venv-pillow11
  pip_in .venv-pillow11 -e ".[test]" "pillow==11.3.0"
  .venv-pillow11/bin/python -m pytest -q "${PIXEL_TESTS[@]}" "$@"
}

local_engine_tests() {
  venv .venv-local
  pip_in .venv-local torch==2.13.0
  pip_in .venv-local -e ".[local,test]"
  # PATH: the flux2-klein tutorial runs `!flux-nb plan` in its kernel
  PATH="$PWD/.venv-local/bin:$PATH" HF_HUB_OFFLINE=1 .venv-local/bin/python -m pytest "$@"
}
KLEIN_TUTORIAL=notebooks/07-real-klein-on-a-colab-gpu.ipynb  # needs flux-nb[local]: .venv-local

# The readers' tests (tests/readers) run in .venv-readers: sd-parsers, SD Prompt Reader and piexif,
# pinned, with the Pillow they pin (SD Prompt Reader 1.3.5 pins 10.3.0 and sd-parsers 0.6 needs
# >= 10.4: 10.4.0, and the reader's GUI dependencies left out with --no-deps). flux-nb writes the
# files they read from .venv, as a user's install would. exiftool: Debian's libimage-exiftool-perl.
readers_tests() {
  if [ ! -x .venv/bin/python ]; then
    venv .venv
    pip_in .venv -e .
  fi
  venv .venv-readers
  pip_in .venv-readers sd-parsers==0.6 piexif==1.1.3 pillow==10.4.0 "pytest>=8"
  pip_in .venv-readers --no-deps sd-prompt-reader==1.3.5
  .venv-readers/bin/python -m pytest --confcutdir=tests/readers "$@"
}

# Colab's package set (tests/colab-constraints-*.txt: IPython 7.34, ipywidgets 7.7.1, ipykernel
# 6.17.1 ...) in .venv-colab on Python 3.13 as Colab has it (else this Python): the tests marked
# `colab` (kernel, cards, panel, the install check) and the tutorials under nbval, every picture
# flux-nb makes compared byte for byte (Pillow 11.3 and Python 3.13 draw the same pixels); pictures
# the tutorials' own Pillow code draws are not (notebooks/conftest.py: DRAWN_BY_PILLOW).
COLAB_SET=tests/colab-constraints-2026-08-19.txt
COLAB_PACKAGES="ipython ipywidgets widgetsnbextension ipykernel jupyter_client traitlets tornado
  pillow httpx starlette uvicorn numpy"
colab_tests() {
  venv .venv-colab "$(pyenv_python 3.13)"
  # shellcheck disable=SC2086  # COLAB_PACKAGES is a list of names
  pip_in .venv-colab -c "$COLAB_SET" $COLAB_PACKAGES -e ".[test]"
  FLUX_NB_COMPARE_PICTURES=flux-nb .venv-colab/bin/python -m pytest -m colab \
    --ignore=tests/browser --ignore=tests/local_engine --ignore=tests/readers "$@"
}

if [ "${1:-}" = tests/readers ] || [[ "${1:-}" == tests/readers/* ]]; then
  readers_tests "$@"
  exit
fi
if [ "${1:-}" = --colab ]; then
  shift
  colab_tests "$@"
  exit
fi
if [ "${1:-}" = tests/browser ] || [[ "${1:-}" == tests/browser/* ]]; then
  browser_tests "$@"
  exit
fi
if [ "${1:-}" = tests/local_engine ] || [[ "${1:-}" == tests/local_engine/* ]] ||
  [ "${1:-}" = "$KLEIN_TUTORIAL" ]; then
  local_engine_tests "$@"
  exit
fi
if [ "${1:-}" = py310 ]; then
  shift
  py310_tests "$@"
  exit
fi
if [ "${1:-}" = pillow11 ]; then
  shift
  pillow11_tests "$@"
  exit
fi

venv .venv
pip_in .venv -e ".[test]"
.venv/bin/ruff check flux_nb tests benchmarks
.venv/bin/ruff format --check -q flux_nb tests benchmarks
.venv/bin/mypy  # [tool.mypy] in pyproject.toml: every module of flux_nb
.venv/bin/python -m pytest --ignore=tests/browser --ignore=tests/local_engine \
  --ignore=tests/readers "$@"
if [ $# -eq 0 ]; then
  browser_tests tests/browser
  py310_tests
  pillow11_tests
  readers_tests tests/readers
  local_engine_tests tests/local_engine "$KLEIN_TUTORIAL"
  colab_tests tests notebooks
fi
