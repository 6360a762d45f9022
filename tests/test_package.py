"""The package's front door: a sorted, honest `__all__`, and `import flux_nb` stays light."""

import subprocess
import sys
from pathlib import Path

import pytest

import flux_nb

ROOT = Path(__file__).resolve().parents[1]
# What `import flux_nb` must not pull in: each loads only when the feature that needs it is used.
HEAVY = (
    "IPython",
    "PIL",
    "diffusers",
    "httpx",
    "httpx_sse",
    "ipywidgets",
    "numpy",
    "sse_starlette",
    "starlette",
    "torch",
    "uvicorn",
)


def test_all_is_sorted_without_duplicates():
    assert flux_nb.__all__ == sorted(set(flux_nb.__all__))


def test_every_public_name_exists():
    missing = [name for name in flux_nb.__all__ if not hasattr(flux_nb, name)]
    assert missing == []


def test_importing_every_public_name_loads_nothing_heavy():
    code = (
        "import sys, flux_nb\n"
        "[getattr(flux_nb, n) for n in flux_nb.__all__]\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(done.stdout.split())
    assert "flux_nb" in loaded
    assert sorted(loaded & set(HEAVY)) == []


def test_the_schema_is_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
    patterns = config["package-data"]["flux_nb"]
    package = ROOT / "flux_nb"
    for pattern in patterns:
        assert list(package.glob(pattern)), f"{pattern} matches no file"
    assert "schema/*.json" in patterns and config["include-package-data"] is True


def test_every_package_folder_goes_into_the_wheel():
    """The private painter package (server/engines/_painter) and any other folder with an
    __init__.py is found by the [tool.setuptools.packages.find] include patterns."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = pytest.importorskip("setuptools")  # in every 3.11 venv; the build backend
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
    found = set(setuptools.find_packages(str(ROOT), include=config["packages"]["find"]["include"]))
    folders = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "flux_nb").rglob("__init__.py")
    }
    assert "flux_nb.server.engines._painter" in folders
    assert sorted(folders - found) == []
