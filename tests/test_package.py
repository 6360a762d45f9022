"""The package's front door: a sorted, honest `__all__`, and `import flux_nb` stays light."""

import subprocess
import sys
from pathlib import Path

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


def pyproject() -> dict:
    """pyproject.toml, read by tomllib (3.11+) or tomli, its backport (the test extra, 3.10)."""
    try:
        import tomllib
    except ModuleNotFoundError:
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))


def test_the_schema_is_package_data():
    config = pyproject()["tool"]["setuptools"]
    patterns = config["package-data"]["flux_nb"]
    package = ROOT / "flux_nb"
    for pattern in patterns:
        assert list(package.glob(pattern)), f"{pattern} matches no file"
    assert "schema/*.json" in patterns and config["include-package-data"] is True


def test_every_package_folder_goes_into_the_wheel():
    """The private painter package (server/engines/_painter) and any other folder with an
    __init__.py is found by the [tool.setuptools.packages.find] include patterns."""
    import setuptools  # the build backend; the test extra installs it (3.12+ venvs lack it)

    config = pyproject()["tool"]["setuptools"]
    found = set(setuptools.find_packages(str(ROOT), include=config["packages"]["find"]["include"]))
    folders = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "flux_nb").rglob("__init__.py")
    }
    assert "flux_nb.server.engines._painter" in folders
    assert sorted(folders - found) == []


# Tests mirror the package: tests/test_<module>.py for every module with behaviour of its own,
# or an entry here saying which file tests it and why that one.
TESTED_ELSEWHERE = {
    "flux_nb/card_html.py": "tests/test_cards.py",  # the HTML is what a card shows; no other user
    # The local server is one unit that plays the API's part: tested through HTTP as a whole,
    # against Oxen's documented contract, and its engines through the engine interface.
    "flux_nb/server/": "tests/test_server.py",
    "flux_nb/server/engines/": "tests/test_engine.py",
    "flux_nb/server/engines/_painter/": "tests/test_engine.py",
    "flux_nb/server/engines/flux2_klein.py": "tests/local_engine/test_klein_server.py",
}


def _tested_in(module: Path) -> Path:
    rel = module.relative_to(ROOT).as_posix()
    if rel in TESTED_ELSEWHERE:
        return ROOT / TESTED_ELSEWHERE[rel]
    if rel.count("/") == 1:  # a top-level module
        return ROOT / "tests" / f"test_{module.stem}.py"
    return ROOT / TESTED_ELSEWHERE[rel.rsplit("/", 1)[0] + "/"]


def test_every_module_has_a_test_file_named_for_it_or_says_where():
    missing = []
    for module in sorted((ROOT / "flux_nb").rglob("*.py")):
        if module.name in ("__init__.py", "__main__.py"):
            continue
        tests = _tested_in(module)
        if not tests.is_file() or "def test_" not in tests.read_text("utf-8"):
            missing.append(f"{module.relative_to(ROOT)} -> {tests.relative_to(ROOT)}")
    assert not missing, "modules without tests: " + ", ".join(missing)
