"""The tutorials under nbval: strict output comparison, images included, kernels as on Binder.

- Collected with or without --nbval, so `python -m pytest` (testpaths include notebooks/) and
  `pytest notebooks/` run them; `pytest --nbval notebooks/` does the same. Runs that name only
  files under tests/ never load this file, so they pay nothing for it.
- nbval_sanitize.cfg beside this file is the default --nbval-sanitize-with (ports, generation
  ids, the id part of file names, timings).
- image/png and image/jpeg are compared too (nbval skips them by default): every picture the
  notebooks keep comes from a fixed seed, and the offline engine draws it byte for byte the same.
- A cell gets 2 minutes (nbval's default is 2000 s), unless --nbval-cell-timeout says otherwise.
- Each notebook's kernel is this Python (--nbval-current-env) working in a fresh temporary folder
  (so `flux_outputs/` starts empty, the panel's history is empty and nothing is written beside
  the notebooks) with no OXEN_API_KEY or other FLUX_NB_* variable: the embedded offline server
  makes every image. tests/notebook_runner.py runs kernels the same way to store the outputs.

To refresh the stored outputs after changing a notebook or the package:
    python tests/notebook_runner.py --write notebooks/*.ipynb
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import weakref
from pathlib import Path

from nbval import kernel as nbval_kernel
from nbval import plugin as nbval_plugin

HERE = Path(__file__).resolve().parent
SANITIZE_FILE = HERE / "nbval_sanitize.cfg"
COMPARED_IMAGES = ("image/png", "image/jpeg")
# Variables that would point the kernel at the hosted API, another server or another folder.
SCRUBBED = ("OXEN_API_KEY", "FLUX_NB_BASE_URL", "FLUX_NB_OUTPUT_DIR", "FLUX_NB_STEP_DELAY")
WORKDIR_PREFIX = "flux-nb-tutorial-"  # nbval_sanitize.cfg knows it
NBVAL_DEFAULT_CELL_TIMEOUT = 2000.0
CELL_TIMEOUT = 120.0  # a stuck `%flux wait` fails the cell in 2 minutes, not half an hour


def pytest_configure(config):
    option = config.option
    if option.nbval_sanitize_with is None and getattr(option, "sanitize_with", None) is None:
        option.nbval_sanitize_with = str(SANITIZE_FILE)
    if not option.nbval_kernel_name:
        option.nbval_current_env = True
    if option.nbval_cell_timeout == NBVAL_DEFAULT_CELL_TIMEOUT:
        option.nbval_cell_timeout = CELL_TIMEOUT


def pytest_collect_file(file_path, parent):
    option = parent.config.option
    if file_path.suffix == ".ipynb" and not (option.nbval or option.nbval_lax):
        return nbval_plugin.IPyNbFile.from_parent(parent, path=file_path)
    return None


def pytest_collectstart(collector):
    if isinstance(collector, nbval_plugin.IPyNbFile):
        collector.skip_compare = tuple(
            key for key in collector.skip_compare if key not in COMPARED_IMAGES
        )


class TutorialKernel(nbval_kernel.RunningKernel):
    """nbval's kernel, started in an empty temporary folder with a scrubbed environment."""

    def __init__(self, kernel_name, cwd=None, startup_timeout=60, **_ignored):
        self.workdir = tempfile.mkdtemp(prefix=WORKDIR_PREFIX)
        weakref.finalize(self, shutil.rmtree, self.workdir, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        self.km, self.kc = nbval_kernel.start_new_kernel(
            startup_timeout=startup_timeout,
            kernel_name=kernel_name,
            stderr=subprocess.DEVNULL,
            cwd=self.workdir,
            env=env,
        )
        self._ensure_iopub_up()

    def stop(self):
        try:
            super().stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


# IPyNbFile.setup() starts `RunningKernel(name, cwd=<notebook folder>, ...)` by this module name
# (nbval 0.11). This file is only loaded when notebooks/ is collected.
nbval_plugin.RunningKernel = TutorialKernel
