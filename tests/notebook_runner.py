"""Run the tutorial notebooks top to bottom the way a Binder user would, and optionally store
their outputs.

    python tests/notebook_runner.py notebooks/*.ipynb           # run each; exit 1 on an error
    python tests/notebook_runner.py --write notebooks/*.ipynb   # run each and save its outputs

Each notebook gets a fresh kernel of *this* Python, working in an empty temporary folder (so
`flux_outputs/` starts empty and nothing is written beside the notebook), with no OXEN_API_KEY or
other FLUX_NB_* variable: the embedded offline server makes every image, as on Binder. The
nbval tests (notebooks/conftest.py) run the kernels the same way, so outputs written here compare.

Widget state is not stored: every card and panel holds its thumbnails as widget state, which
would add several hundred KB per notebook and, taken by nbclient only while a cell runs, show
cards half-finished. GitHub and nbviewer show each output's image/png and text/plain instead;
JupyterLab draws the widgets once the cells run.

Only nbclient and nbformat are used (no pytest, no flux_nb import), so tests/test_binder.py runs
this file in the environment built from binder/ alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from traitlets import default

# Variables that would point the kernel at the hosted API, another server or another folder.
SCRUBBED = ("OXEN_API_KEY", "FLUX_NB_BASE_URL", "FLUX_NB_OUTPUT_DIR", "FLUX_NB_STEP_DELAY")
CELL_TIMEOUT = 120


def kernel_env() -> dict[str, str]:
    """This process's environment without anything that changes where images come from."""
    return {k: v for k, v in os.environ.items() if k not in SCRUBBED}


class _ThisPythonSpecs(KernelSpecManager):
    """Every kernel name means an ipykernel of the running interpreter (as nbval's
    --nbval-current-env does), whatever kernelspecs the user's Jupyter folders hold."""

    def get_kernel_spec(self, kernel_name):
        from ipykernel import kernelspec

        return self.kernel_spec_class(
            resource_dir=kernelspec.RESOURCES, **kernelspec.get_kernel_dict()
        )


class ThisPythonKernelManager(KernelManager):
    @default("kernel_spec_manager")
    def _kernel_spec_manager_default(self):
        return _ThisPythonSpecs(data_dir=self.data_dir)


def run(path: str | Path, write: bool = False) -> nbformat.NotebookNode:
    """Execute one notebook in a temporary working folder; raise CellExecutionError on an error.
    With write=True the notebook is saved back with its new outputs (and widget state)."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="flux-nb-tutorial-") as workdir:
        client = NotebookClient(
            nb,
            kernel_manager_class=ThisPythonKernelManager,
            timeout=CELL_TIMEOUT,
            record_timing=False,  # no timestamps in cell metadata: the stored files stay stable
            store_widget_state=False,  # see the module docstring
            resources={"metadata": {"path": workdir}},
        )
        # stderr: only ipykernel's start-up chatter; failures come back as cell errors.
        client.execute(env=kernel_env(), stderr=subprocess.DEVNULL)
    if write:
        nbformat.write(nb, path)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--write", action="store_true", help="save the outputs into the notebooks")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.notebooks:
        start = time.perf_counter()
        try:
            run(path, write=args.write)
        except CellExecutionError as exc:
            failed += 1
            print(f"FAILED {path}: {exc}", file=sys.stderr)
            continue
        print(f"ok {path} {time.perf_counter() - start:.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
