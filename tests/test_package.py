"""The package's front door: a sorted, honest `__all__`, and `import flux_nb` stays light."""

import inspect
import re
import subprocess
import sys
import textwrap
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


# Public names whose module needs a heavy library: loaded on first use, never by `import flux_nb`.
NEEDS_HTTPX = {"Session"}  # its client is httpx


def test_importing_every_public_name_loads_nothing_heavy():
    code = (
        "import sys, flux_nb\n"
        f"[getattr(flux_nb, n) for n in flux_nb.__all__ if n not in {sorted(NEEDS_HTTPX)}]\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(done.stdout.split())
    assert "flux_nb" in loaded
    assert sorted(loaded & set(HEAVY)) == []


def test_the_session_class_loads_httpx_only_when_asked_for():
    code = (
        "import sys, flux_nb\n"
        "before = 'httpx' in sys.modules\n"
        "flux_nb.Session\n"
        "print(before, 'httpx' in sys.modules, flux_nb.Session.__module__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False", "True", "flux_nb.jobs._sessions"]


def test_every_public_function_says_what_it_returns():
    functions = {
        name: obj for name in flux_nb.__all__ if inspect.isfunction(obj := getattr(flux_nb, name))
    }
    assert {"generate", "agenerate", "session", "sweep", "reproduce"} <= set(functions)
    untyped = [
        name
        for name, function in functions.items()
        if inspect.signature(function).return_annotation is inspect.Signature.empty
    ]
    assert untyped == []


# A user's script, type-checked against the package as an editor would: exact types, not Any.
USER_SCRIPT = """
    import asyncio
    import pathlib

    from typing_extensions import assert_type

    import flux_nb

    g = flux_nb.generate("a red fox in snow", seed=7)
    assert_type(g, flux_nb.Generation)
    p: pathlib.Path | None = g.path
    assert_type(g.wait(30), flux_nb.Generation)
    assert_type(flux_nb.generate("four foxes", 4), "flux_nb.Generation | list[flux_nb.Generation]")
    assert_type(flux_nb.reproduce(g), flux_nb.Generation)
    assert_type(flux_nb.reproduce("fox.png", lineage=True), flux_nb.Generation)
    assert_type(flux_nb.resume(), list[flux_nb.Generation])
    s = flux_nb.session()
    assert_type(s, flux_nb.Session)
    assert_type(s.history, list[flux_nb.Generation])
    grid = flux_nb.sweep("a {red|blue} fox", seed=7, steps=[4, 8])
    assert_type(grid, flux_nb.Sweep)
    assert_type(grid[0, 1], flux_nb.Generation)
    assert_type(grid.save("sheet.png"), pathlib.Path)
    assert_type(flux_nb.read_recipe("fox.png"), flux_nb.Recipe)
    assert_type(flux_nb.read_recipe("fox.png").seed, int)


    async def main() -> None:
        one = await flux_nb.agenerate("a koi pond", seed=8)
        assert_type(one, flux_nb.Generation)
        async for done in flux_nb.as_completed([one, g]):
            assert_type(done, flux_nb.Generation)


    asyncio.run(main())
    try:
        g.wait()
    except flux_nb.GenerationFailed as error:
        assert_type(error, flux_nb.GenerationFailed)
    except flux_nb.FluxError:
        pass
"""

# Each line is wrong: mypy must say so on every one (else the check above could pass on Any).
WRONG_SCRIPT = """
    import flux_nb

    g = flux_nb.generate("a red fox in snow")
    seed: str = g.seed
    count: int = flux_nb.sweep("a fox", steps=[4, 8])
    flux_nb.generate(42)
    flux_nb.generat("a typo")
    flux_nb.Sesion
    path: int = flux_nb.reproduce(g).path
    also: flux_nb.Generation = flux_nb.generate("two", 2)
"""


def mypy_errors(tmp_path: Path, script: str) -> dict[int, str]:
    """mypy's errors on a script that imports flux_nb from this checkout: {line: message}."""
    path = tmp_path / "user_script.py"
    path.write_text(textwrap.dedent(script).lstrip("\n"), "utf-8")
    config = tmp_path / "mypy.ini"  # not the project's own [tool.mypy]
    config.write_text("[mypy]\n", "utf-8")
    command = [sys.executable, "-m", "mypy", "--config-file", str(config), "--strict"]
    command += ["--python-version", "3.10", "--follow-imports", "silent"]
    command += ["--ignore-missing-imports", "--cache-dir", str(tmp_path / "cache"), path.name]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**__import__("os").environ, "MYPYPATH": str(ROOT)},
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 2: mypy itself failed
    errors = {}
    for line in done.stdout.splitlines():
        if found := re.match(r"user_script.py:(\d+): error: (.*)", line):
            errors[int(found[1])] = errors.get(int(found[1]), "") + found[2]
    return errors


def test_a_user_script_type_checks_against_the_public_surface(tmp_path):
    assert mypy_errors(tmp_path, USER_SCRIPT) == {}


def test_a_wrong_user_script_is_rejected_on_every_wrong_line(tmp_path):
    errors = mypy_errors(tmp_path, WRONG_SCRIPT)
    assert sorted(errors) == [4, 5, 6, 7, 8, 9, 10], errors
    assert 'has no attribute "generat"' in errors[7] and "Sesion" in errors[8]


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
    assert "core/schema/*.json" in patterns and config["include-package-data"] is True


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


# Tests mirror the package: tests/test_<module>.py for every module of a room (flux_nb/jobs/
# _runner.py -> tests/test_runner.py) and of the top (cli.py), or an entry here saying which file
# tests it and why that one.
TESTED_ELSEWHERE = {
    # the HTML is what a card shows; no other user
    "flux_nb/notebook/_card_html.py": "tests/test_cards.py",
    # The local server is one unit that plays the API's part: tested through HTTP as a whole,
    # against Oxen's documented contract, and its engines through the engine interface.
    "flux_nb/server/": "tests/test_server.py",
    "flux_nb/server/engines/": "tests/test_engine.py",
    "flux_nb/server/engines/_painter/": "tests/test_engine.py",
    "flux_nb/server/engines/_flux2_klein.py": "tests/local_engine/test_klein_server.py",
}


def _tested_in(module: Path) -> Path:
    rel = module.relative_to(ROOT).as_posix()
    if rel in TESTED_ELSEWHERE:
        return ROOT / TESTED_ELSEWHERE[rel]
    room = rel.split("/")[1]
    if rel.count("/") == 1 or (rel.count("/") == 2 and room != "server"):  # the top or a room
        return ROOT / "tests" / f"test_{module.stem.removeprefix('_')}.py"
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
