"""The readers' tests: files flux-nb saves, read by the tools people read them with.

Runs in its own environment, .venv-readers (scripts/test.sh makes it: `bash scripts/test.sh
tests/readers`), where sd-parsers, SD Prompt Reader and piexif are pinned with the Pillow they
install, never in .venv (tests/conftest.py leaves this folder out of the main run). The files are
written by flux-nb in the main environment (.venv, or FLUX_NB_WRITER_PYTHON), as a user has it,
by make_files.py; they are kept in test-artifacts/readers/ for a look after a failure.
`exiftool` is Debian's libimage-exiftool-perl (.ci/run installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "readers"


@pytest.fixture(scope="session")
def made() -> list[dict]:
    """The manifest of make_files.py: one entry per file, with what flux-nb wrote into it."""
    writer = Path(os.environ.get("FLUX_NB_WRITER_PYTHON") or ROOT / ".venv" / "bin" / "python")
    if not writer.exists():
        pytest.fail(
            f"no flux-nb environment at {writer} to write the files: run "
            "`bash scripts/test.sh tests/readers`, which makes .venv, or set FLUX_NB_WRITER_PYTHON."
        )
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("OXEN_API_KEY", "FLUX_NB_BASE_URL")}
    done = subprocess.run(
        [str(writer), str(Path(__file__).with_name("make_files.py")), str(ARTIFACTS)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ARTIFACTS,
        timeout=300,
    )
    if done.returncode != 0:
        pytest.fail(f"make_files.py failed:\n{done.stderr[-3000:]}")
    files = json.loads(done.stdout)
    (ARTIFACTS / "manifest.json").write_text(done.stdout, "utf-8")
    return files


@pytest.fixture(scope="session")
def exiftool() -> str:
    found = shutil.which("exiftool")
    if found is None:
        pytest.fail("exiftool is missing: apt-get install libimage-exiftool-perl (.ci/run does).")
    return found
