"""Binder: an environment built only from binder/ runs every tutorial top to bottom with no key.

The slow test does what repo2docker does: copy the repository, make a fresh virtual environment,
`pip install -r binder/requirements.txt` from the copy's root, then run binder/postBuild if there
is one. tests/notebook_runner.py then runs each notebook with that environment's Python (its
nbclient, its ipykernel, the flux-nb it installed), in an empty folder and with no OXEN_API_KEY,
and the outputs must match the stored ones: the same outputs, the same text once sanitized with
notebooks/nbval_sanitize.cfg. (The pictures themselves are compared by nbval.)

It downloads flux-nb's dependencies and JupyterLab from PyPI: about 1.5 to 2 minutes on a fresh
machine, less with a warm pip cache. Leave it out with `-m "not binder"`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
# The flux2-klein tutorial needs flux-nb[local]: Binder's environment has not got it (see
# notebooks/conftest.py).
NOTEBOOKS = sorted(
    p
    for p in (REPO / "notebooks").glob("*.ipynb")
    if '"engine": "flux2-klein"' not in p.read_text(encoding="utf-8")
)
# What repo2docker would not find in a fresh clone.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".venv-*",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".ipynb_checkpoints",
    "flux_outputs",
    "test-artifacts",
)
SCRUBBED = ("OXEN_API_KEY", "FLUX_NB_BASE_URL", "FLUX_NB_OUTPUT_DIR", "FLUX_NB_STEP_DELAY")


def test_readme_binder_badge_opens_the_quickstart():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\((https://mybinder\.org/v2/[^)\s]+)\)", readme)
    assert links, "the README has no mybinder.org link"
    for link in links:
        labpath = parse_qs(urlsplit(link).query).get("labpath")
        assert labpath == ["notebooks/01-quickstart.ipynb"], link
    assert (REPO / "notebooks" / "01-quickstart.ipynb").is_file()


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    return result


@pytest.fixture(scope="module")
def binder_env(tmp_path_factory):
    """(python, repository copy, environment) of a fresh environment built only from binder/."""
    root = tmp_path_factory.mktemp("binder")
    repo = root / "repo"
    shutil.copytree(REPO, repo, ignore=NOT_IN_A_CLONE)
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in SCRUBBED and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    _run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        + ["-r", "binder/requirements.txt"],
        cwd=repo,
        env=env,
        timeout=1200,
    )
    post_build = repo / "binder" / "postBuild"
    if post_build.exists():
        _run(["bash", str(post_build)], cwd=repo, env=env, timeout=600)
    return python, repo, env


def _sanitizers() -> list[tuple[str, str]]:
    text = (REPO / "notebooks" / "nbval_sanitize.cfg").read_text(encoding="utf-8")
    return re.findall(r"^regex: (.*)$\n^replace: (.*)$", text, flags=re.MULTILINE)


def _outputs(nb, sanitizers) -> list[list[tuple]]:
    """Per code cell, each output's kind (stream name or MIME types) and its sanitized text."""

    def clean(text: str) -> str:
        for regex, replace in sanitizers:
            text = re.sub(regex, replace, text)
        return text

    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outs = []
        for out in cell.outputs:
            if out.output_type == "stream":
                # A kernel may split one print run into several messages: join them, as nbval does.
                if outs and outs[-1][0] == out.name:
                    outs[-1] = (out.name, outs[-1][1] + clean(out.text))
                else:
                    outs.append((out.name, clean(out.text)))
            elif out.output_type in ("display_data", "execute_result"):
                outs.append((tuple(sorted(out.data)), clean(out.data.get("text/plain", ""))))
            else:
                outs.append((out.output_type, out.get("ename"), out.get("evalue")))
        cells.append(outs)
    return cells


@pytest.mark.binder
def test_binder_environment_runs_every_notebook(binder_env):
    python, repo, env = binder_env
    where = _run(
        [python, "-c", "import flux_nb; print(flux_nb.__file__)"], cwd=repo.parent, env=env
    )
    module = Path(where.stdout.strip()).resolve()
    venv = Path(env["VIRTUAL_ENV"]).resolve()
    assert module.is_relative_to(venv), f"flux_nb came from {module}, not the Binder environment"

    names = [nb.name for nb in NOTEBOOKS]
    assert len(names) >= 5
    ran = _run(
        [python, "tests/notebook_runner.py", "--write", *(f"notebooks/{n}" for n in names)],
        cwd=repo,
        env=env,
        timeout=600,
    )
    sanitizers = _sanitizers()
    for name in names:
        stored = nbformat.read(REPO / "notebooks" / name, as_version=4)
        fresh = nbformat.read(repo / "notebooks" / name, as_version=4)
        assert _outputs(fresh, sanitizers) == _outputs(stored, sanitizers), (
            f"{name} ran differently in the Binder environment:\n{ran.stdout}"
        )
