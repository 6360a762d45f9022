"""JupyterLab on loopback and headless Chromium, for the browser test (test_jupyterlab.py).

Runs in its own environment (.venv-browser, `pip install -e ".[browser]"`): scripts/test.sh makes
it and runs `pytest tests/browser` there, so JupyterLab and Playwright stay out of the plain test
environment. The browser is Debian's `chromium` (or FLUX_NB_CHROMIUM), driven by Playwright's
Python package through executable_path: `playwright install` is never needed.

- `lab`: one `jupyter lab` per session on 127.0.0.1 with a random token, temporary Jupyter
  config/data/runtime and IPython folders, no OXEN_API_KEY (the embedded offline server makes the
  images) and its own root folder holding the notebook, so flux_outputs/ starts empty.
- `notebook`: the notebook open in a Chromium page, its first cell (`%load_ext flux_nb` and a
  Panel) run and the panel on screen.
- Screenshots, JupyterLab's log, the browser console and the timings go to
  test-artifacts/browser/ (emptied at the start of each session); a failing test leaves a
  FAILED-<test>.png of the page there too.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
NOTEBOOK = "flux-browser-test.ipynb"
STEP_DELAY = "0.02"  # seconds per step on the embedded server: 28 steps (the default) = 0.56 s
LAB_START_TIMEOUT = 90.0
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Variables that would point the kernel at the hosted API, another server or another folder.
SCRUBBED = ("OXEN_API_KEY", "FLUX_NB_BASE_URL", "FLUX_NB_OUTPUT_DIR", "FLUX_NB_STEP_DELAY")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

GRID_CELL = "%%flux -n 4 --seed 100 --steps 50 --aspect 16:9\na grid of four harbours"
FAILED_CELL = (
    "%%flux --image http://127.0.0.1:9/missing.png --steps 2\nedit a picture that is not there"
)
# The server's own time for the panel's newest generations (POST received -> row terminal), from
# the local store's monotonic clock: a test-only reading, not part of the generation object.
SERVER_TIMES_CELL = (
    "import json\n"
    "_store = flux_nb.session().server.runtime.store\n"
    "_gens = [c.gen for c in reversed(panel.cards[:SAMPLES])]\n"
    "_rows = [_store.get(g.id) for g in _gens]\n"
    "print(json.dumps([[(r.finished_mono - r.created_mono) * 1000, g.created * 1000,"
    " g.finished * 1000] for r, g in zip(_rows, _gens)]))"
)
CELLS = [
    "%load_ext flux_nb\nimport flux_nb\n\npanel = flux_nb.Panel()\npanel",
    # --quality high: a truecolour picture, so the card and the saved file hold a JPEG thumbnail
    "%%flux --seed 4242 --steps 50 --aspect 4:3 --quality high\na lighthouse on a cliff at dusk",
    GRID_CELL,
    FAILED_CELL,
    SERVER_TIMES_CELL,
]
TIMING_SAMPLES = 7  # Generate clicks timed in the panel


def chromium_path() -> str | None:
    """FLUX_NB_CHROMIUM, else `chromium` on PATH, else None."""
    return os.environ.get("FLUX_NB_CHROMIUM") or shutil.which("chromium")


def _missing(reason: str) -> None:
    """No browser test possible: an error in CI, a skip (listed by -ra) elsewhere."""
    if IN_CI:
        pytest.fail(f"browser test cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"browser test NOT RUN: {reason}")


@dataclass
class Timings:
    """What the session measured, printed at the end and saved as timings.json."""

    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(round(value, 1))


_timings = Timings()


@pytest.fixture(scope="session")
def timings() -> Timings:
    return _timings


@pytest.fixture(scope="session")
def artifacts() -> Path:
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@dataclass(frozen=True)
class Lab:
    url: str  # http://127.0.0.1:PORT
    token: str
    root: Path  # the server's root folder and the kernel's working directory

    kind: str = "lab"  # or "notebook" (Notebook 7)

    def notebook_url(self, name: str) -> str:
        where = "lab/tree" if self.kind == "lab" else "notebooks"
        return f"{self.url}/{where}/{name}?token={self.token}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_notebook(path: Path) -> None:
    import nbformat  # comes with jupyterlab, so only in the browser environment

    nb = nbformat.v4.new_notebook()
    cells = [source.replace("SAMPLES", str(TIMING_SAMPLES)) for source in CELLS]
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nbformat.write(nb, path)


def _quiet_lab_settings(config_dir: Path) -> None:
    """No "get Jupyter news?" toast over the page (--LabApp.news_url=None does not stop it)."""
    folder = config_dir / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    folder.mkdir(parents=True)
    (folder / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )


def _wait_ready(proc: subprocess.Popen, url: str, token: str, log: Path) -> None:
    """Until the server answers /api/status with our token (polling the server's state)."""
    deadline = time.monotonic() + LAB_START_TIMEOUT
    request = urllib.request.Request(
        f"{url}/api/status", headers={"Authorization": f"token {token}"}
    )
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(request, timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"jupyter lab not answering after {LAB_START_TIMEOUT:.0f} s; see {log}"
            )
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM lets the server shut its kernels down; its process group is killed if it hangs."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def _serve(kind: str, tmp_path_factory, artifacts: Path, timings: Timings) -> Iterator[Lab]:
    """`jupyter lab` (kind "lab") or Notebook 7's `jupyter notebook` (kind "notebook") on
    loopback, with its own folders and the test notebook; stopped, kernels included, after."""
    try:
        import jupyterlab  # noqa: F401
        import notebook  # noqa: F401
    except ImportError:
        _missing(
            "jupyterlab or notebook is not installed here; scripts/test.sh runs this in"
            " .venv-browser"
        )
    base = tmp_path_factory.mktemp(kind)
    dirs = {name: base / name for name in ("config", "data", "runtime", "ipython", "root")}
    for folder in dirs.values():
        folder.mkdir()
    _quiet_lab_settings(dirs["config"])
    _write_notebook(dirs["root"] / NOTEBOOK)
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env.update(
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        IPYTHONDIR=str(dirs["ipython"]),
        FLUX_NB_STEP_DELAY=STEP_DELAY,
        PYTHONUNBUFFERED="1",
    )
    token = secrets.token_hex(16)
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "jupyterlab" if kind == "lab" else "notebook",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={dirs['root']}",
    ]
    if kind == "lab":
        command += [
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI containers run as root
    log = artifacts / f"jupyter-{kind}.log"
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            command,
            cwd=dirs["root"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, kernels included
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url, token, log)
        timings.add(f"jupyter {kind} start (s)", time.monotonic() - started)
        yield Lab(url, token, dirs["root"], kind)
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def lab(tmp_path_factory, artifacts, timings) -> Iterator[Lab]:
    yield from _serve("lab", tmp_path_factory, artifacts, timings)


@pytest.fixture(scope="session")
def notebook7(tmp_path_factory, artifacts, timings) -> Iterator[Lab]:
    yield from _serve("notebook", tmp_path_factory, artifacts, timings)


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed here; scripts/test.sh runs this in .venv-browser")
    executable = chromium_path()
    if executable is None:
        _missing("no chromium on PATH (apt-get install chromium, or set FLUX_NB_CHROMIUM)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Console:
    """The page's console errors and uncaught exceptions, also written to console.log."""

    def __init__(self, path: Path):
        self.path = path
        self.errors: list[str] = []

    def on_message(self, message) -> None:
        line = f"[{message.type}] {message.text}"
        with self.path.open("a") as out:
            out.write(line + "\n")
        if message.type == "error":
            self.errors.append(line)

    def on_page_error(self, error) -> None:
        line = f"[pageerror] {error}"
        with self.path.open("a") as out:
            out.write(line + "\n")
        self.errors.append(line)


@pytest.fixture(scope="session")
def console(artifacts) -> Console:
    return Console(artifacts / "console.log")


@pytest.fixture(scope="session")
def notebook(lab, browser, console, artifacts, timings):
    """The test notebook open in JupyterLab, its first cell run: the panel is on screen."""
    from notebook_page import NotebookPage

    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=lab.url)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.on("console", console.on_message)
    page.on("pageerror", console.on_page_error)
    started = time.monotonic()
    nb = NotebookPage(page, artifacts)
    nb.open(lab.notebook_url(NOTEBOOK))
    timings.add("notebook open, kernel idle (s)", time.monotonic() - started)
    nb.run_cell(0)
    nb.panel_cell.get_by_role("button", name="Generate").wait_for()
    nb.shot("01-panel", nb.panel_cell)
    try:
        yield nb
    finally:
        context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed:
        nb = item.funcargs.get("notebook")
        if nb is not None:
            try:
                nb.page.screenshot(path=str(ARTIFACTS / f"FAILED-{item.name}.png"))
            except Exception as exc:  # the report matters more than the picture
                report.sections.append(("screenshot", f"no failure screenshot: {exc}"))
    return report


def pytest_terminal_summary(terminalreporter):
    if not _timings.values:
        return
    terminalreporter.section("browser timings")
    for name, values in _timings.values.items():
        terminalreporter.write_line(f"{name}: {', '.join(str(v) for v in values)}")
    terminalreporter.write_line(f"screenshots and logs: {ARTIFACTS}")
    if ARTIFACTS.exists():
        (ARTIFACTS / "timings.json").write_text(json.dumps(_timings.values, indent=2) + "\n")
