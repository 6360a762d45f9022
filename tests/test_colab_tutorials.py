"""The tutorials open in Colab as they open on Binder: a badge for each beside its Binder badge,
and a first code cell that installs flux-nb where it is missing and does nothing where it is."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from unittest import mock

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

REPO = Path(__file__).resolve().parents[1]
ALL = sorted((REPO / "notebooks").glob("*.ipynb"))


def _engine(path: Path) -> str | None:
    return nbformat.read(path, as_version=4).metadata.get("flux_nb", {}).get("engine")


# The offline tutorials (Binder and Colab alike) and the GPU one (Colab only: Binder has no GPU).
NOTEBOOKS = [p for p in ALL if _engine(p) != "flux2-klein"]
GPU_NOTEBOOKS = [p for p in ALL if _engine(p) == "flux2-klein"]
BINDER = "https://mybinder.org/v2/gh/OWNER/flux-nb/HEAD?labpath=notebooks/{}"
COLAB = "https://colab.research.google.com/github/OWNER/flux-nb/blob/main/notebooks/{}"


def test_there_are_six_offline_tutorials_and_one_for_a_gpu():
    assert len(NOTEBOOKS) == 6 and len(GPU_NOTEBOOKS) == 1


@pytest.mark.parametrize("path", GPU_NOTEBOOKS, ids=lambda p: p.name)
@pytest.mark.parametrize("in_colab", [True, False])
def test_the_gpu_tutorial_opens_in_colab_and_installs_the_local_extra_only_there(path, in_colab):
    cells = nbformat.read(path, as_version=4).cells
    first = next(c for c in cells if c.cell_type == "markdown")
    assert COLAB.format(path.name) in first.source and "mybinder.org" not in first.source
    install = next(c for c in cells if c.cell_type == "code")
    code = TransformerManager().transform_cell(install.source)
    shell = Shell()
    modules = {"google.colab": mock.MagicMock()} if in_colab else {}
    google = {"google": mock.MagicMock(colab=modules.get("google.colab"))} if in_colab else {}
    with mock.patch.dict("sys.modules", {**modules, **google}):
        if not in_colab:
            sys.modules.pop("google.colab", None)
        exec(compile(code, path.name, "exec"), {"get_ipython": lambda: shell, "__name__": "nb"})
    pips = [line for name, line in shell.magics if name == "pip"]
    assert pips == (['install -q "flux-nb[local]"'] if in_colab else [])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_tutorial_has_its_colab_badge_beside_its_binder_badge(path):
    first = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    links = re.findall(r"\]\((https://[^)\s]+)\)", first.source)
    assert BINDER.format(path.name) in links and COLAB.format(path.name) in links
    lines = first.source.splitlines()
    binder = next(i for i, line in enumerate(lines) if BINDER.format(path.name) in line)
    assert COLAB.format(path.name) in lines[binder + 1]  # on the next line: side by side


def test_the_readme_has_a_colab_badge_beside_the_binder_badge():
    readme = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    binder = next(i for i, line in enumerate(readme) if "mybinder.org/badge_logo.svg" in line)
    assert COLAB.format("01-quickstart.ipynb") in " ".join(readme[binder : binder + 2])


class Shell:
    """get_ipython() for the first cell: records the line magics it runs."""

    def __init__(self):
        self.magics: list[tuple[str, str]] = []

    def run_line_magic(self, name, line):
        self.magics.append((name, line))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
@pytest.mark.parametrize("installed", [True, False])
def test_the_first_code_cell_installs_flux_nb_only_where_it_is_missing(path, installed):
    first = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    lines = first.source.splitlines()
    guard = lines[: lines.index("%load_ext flux_nb") + 1]  # not what the cell goes on to do
    code = TransformerManager().transform_cell("\n".join(guard))
    shell = Shell()
    real = importlib.util.find_spec
    absent = {"flux_nb"} if not installed else set()
    with mock.patch.object(
        importlib.util, "find_spec", lambda name, *a: None if name in absent else real(name, *a)
    ):
        exec(compile(code, path.name, "exec"), {"get_ipython": lambda: shell, "__name__": "nb"})
    pips = [line for name, line in shell.magics if name == "pip"]
    assert pips == ([] if installed else ["install -q flux-nb"])
    assert ("load_ext", "flux_nb") in shell.magics  # then loads it, as before


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_no_tutorial_turns_on_colabs_custom_widget_manager(path):
    """The cards and the panel are ipywidgets' own, which Colab shows as they are; its custom
    widget manager is for third-party widgets and breaks Accordion and Tab (colab-notes)."""
    code = "\n".join(
        c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"
    )
    assert "enable_custom_widget_manager" not in code
