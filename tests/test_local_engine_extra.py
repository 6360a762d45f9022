"""flux2-klein where flux-nb[local] is not installed (this environment): the pip line, at once.

The engine itself is tested in tests/local_engine/, in its own environment (see scripts/test.sh)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from flux_nb import cli
from flux_nb.core import _errors as errors
from flux_nb.core._config import Settings
from flux_nb.jobs._sessions import Session
from flux_nb.server import create_app, engines
from flux_nb.server.engines import EngineUnavailable

PIP_LINE = "pip install 'flux-nb[local]'"


def test_this_environment_lacks_the_local_extra() -> None:
    assert (
        importlib.util.find_spec("torch") is None and importlib.util.find_spec("diffusers") is None
    )


def test_the_server_refuses_to_start_with_the_pip_line() -> None:
    with pytest.raises(EngineUnavailable, match=r"the flux2-klein engine needs torch, diffusers"):
        create_app(engine="flux2-klein")
    with pytest.raises(EngineUnavailable) as refused:
        create_app(engine=engines.EngineConfig("flux2-klein", model="/some/folder"))
    assert str(refused.value).endswith(f"run {PIP_LINE}")


def test_flux_nb_serve_says_what_to_install() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flux_nb", "serve", "--engine", "flux2-klein", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().endswith(PIP_LINE) and "Traceback" not in done.stderr


def test_a_notebook_session_says_what_to_install(tmp_path) -> None:
    settings = Settings(engine="flux2-klein", step_delay=0.0)
    with pytest.raises(errors.ValidationError, match=r"^local engine: .*pip install"):
        Session("local", settings=settings, output_dir=tmp_path, announce=None)


def test_settings_read_the_engine_and_model_from_the_environment() -> None:
    env = {"FLUX_NB_ENGINE": "flux2-klein", "FLUX_NB_MODEL": " /models/klein "}
    assert (Settings.from_env(env).engine, Settings.from_env(env).model) == (
        "flux2-klein",
        "/models/klein",
    )
    assert (Settings.from_env({}).engine, Settings.from_env({}).model) == ("preview", None)
    with pytest.raises(errors.ValidationError, match="unknown engine 'flux-dev'"):
        Session("local", settings=Settings(engine="flux-dev"), announce=None)


def test_the_cli_copies_of_the_engine_names_match_the_engines() -> None:
    # cli.py copies them so that `flux-nb --help` need not import the server.
    assert cli.ENGINE_NAMES == engines.ENGINE_NAMES
    assert cli.KLEIN_DEFAULT_MODEL == engines.KLEIN_DEFAULT_MODEL
    assert cli.DTYPES == engines.DTYPES
