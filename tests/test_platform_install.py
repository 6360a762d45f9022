"""Installing flux-nb where Colab's or Kaggle's package set is installed changes none of it.

Colab's front end is built for its own IPython (7.34) and ipywidgets (7.7.1); Kaggle pins
ipywidgets 8.1.5 on the same base. A package whose ranges exclude them makes pip replace them,
which asks for a runtime restart or breaks the widget manager (shared notes: colab-notes.md).
pip's `--dry-run --report` says what an install would do:

- here, in the running environment (scripts/test.sh runs this in .venv-colab, which holds Colab's
  set): `pip install <this checkout>` would change no installed package;
- for each set as a whole, resolved for Python 3.13 on this platform with every package of the set
  pinned beside `flux-nb[local]` (which holds the base install's requirements too): pip finds an
  install, and its report lists every package of the set at the set's version.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COLAB_SET = ROOT / "tests" / "colab-constraints-2026-08-19.txt"
# Kaggle's image builds on Colab's and pins ipywidgets 8.1.5 on top (widgetsnbextension follows it).
KAGGLE_CHANGES = {"ipywidgets": "8.1.5", "widgetsnbextension": None}
PIP_TIMEOUT = 900  # s: resolving ~150 packages against the index, on a slow link


def colab_set() -> dict[str, str]:
    pins = {}
    for line in COLAB_SET.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_key(name)] = version
    return pins


def kaggle_set() -> dict[str, str]:
    pins = colab_set()
    for name, version in KAGGLE_CHANGES.items():
        if version is None:
            pins.pop(name)
        else:
            pins[name] = version
    return pins


SETS = {"colab": colab_set, "kaggle": kaggle_set}


def _key(name: str) -> str:
    return name.lower().replace("_", "-")


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
    )


def _installs(report: Path) -> dict[str, str]:
    return {
        _key(item["metadata"]["name"]): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }


@pytest.mark.colab
def test_installing_flux_nb_here_changes_no_installed_package(tmp_path):
    report = tmp_path / "report.json"
    done = _pip("install", "--dry-run", "--report", str(report), str(ROOT))
    assert done.returncode == 0, done.stderr
    installed = {
        _key(line.split("==")[0]): line.split("==")[1]
        for line in _pip("freeze", "--all").stdout.splitlines()
        if "==" in line
    }
    changed = {
        name: (installed[name], version)
        for name, version in _installs(report).items()
        if name in installed and name != "flux-nb" and installed[name] != version
    }
    assert changed == {}


def _set_reports(tmp: Path) -> dict[str, Path]:
    """One dry run per set, side by side (each spends its time waiting on the index)."""
    wheels = tmp / "wheel"
    built = _pip("wheel", "--no-deps", "-w", str(wheels), str(ROOT))
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("flux_nb-*.whl")

    def resolve(name: str) -> Path:
        pins = tmp / f"{name}.txt"
        pins.write_text("".join(f"{n}=={v}\n" for n, v in SETS[name]().items()))
        report = tmp / f"{name}-report.json"
        done = _pip(
            "install", "--dry-run", "--report", str(report),
            "--target", str(tmp / "never-written"), "--python-version", "3.13",
            "--only-binary=:all:", f"{wheel}[local]", "-r", str(pins),
        )  # fmt: skip
        assert done.returncode == 0, f"{name}: {done.stderr}"
        return report

    with ThreadPoolExecutor(len(SETS)) as pool:
        return dict(zip(SETS, pool.map(resolve, SETS), strict=True))


@pytest.fixture(scope="module")
def set_reports(tmp_path_factory) -> dict[str, Path]:
    return _set_reports(tmp_path_factory.mktemp("platform-sets"))


@pytest.mark.parametrize("name", sorted(SETS))
def test_flux_nb_local_installs_beside_the_set_without_changing_it(set_reports, name):
    installs = _installs(set_reports[name])
    assert installs.get("flux-nb"), "the report installs flux-nb"
    changed = {
        package: (version, installs.get(package))
        for package, version in SETS[name]().items()
        if installs.get(package) != version
    }
    assert changed == {}
