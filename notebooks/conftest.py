"""The tutorials under nbval: strict output comparison, images included, kernels as on Binder.

- Collected with or without --nbval, so `python -m pytest` (testpaths include notebooks/) and
  `pytest notebooks/` run them; `pytest --nbval notebooks/` does the same. Runs that name only
  files under tests/ never load this file, so they pay nothing for it.
- nbval_sanitize.cfg beside this file is the default --nbval-sanitize-with (ports, generation
  ids, the id part of file names, timings).
- image/png and image/jpeg are compared too (nbval skips them by default): every picture the
  notebooks keep comes from a fixed seed, and the offline engine draws it byte for byte the same.
- A cell gets 2 minutes (nbval's default is 2000 s), unless --nbval-cell-timeout says otherwise.
- Display updates are applied as nbclient applies them when it saves a notebook: nbval ignores
  update_display_data, but a %%flux cell's output is updated in place once its images exist (by
  a later cell: flux_nb/notebook/_settled_output.py). An output with a display_id is therefore compared at
  the notebook's last cell, holding every update the later cells sent, as the stored file does.
- Each notebook's kernel is this Python (--nbval-current-env) working in a fresh temporary folder
  (so `flux_outputs/` starts empty, the panel's history is empty and nothing is written beside
  the notebooks) with no OXEN_API_KEY or other FLUX_NB_* variable: the embedded offline server
  makes every image. tests/notebook_runner.py runs kernels the same way to store the outputs.

To refresh the stored outputs after changing a notebook or the package:
    python tests/notebook_runner.py --write notebooks/*.ipynb
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

from nbval import kernel as nbval_kernel
from nbval import plugin as nbval_plugin
from nbval.plugin import NbCellError

HERE = Path(__file__).resolve().parent
SANITIZE_FILE = HERE / "nbval_sanitize.cfg"
COMPARED_IMAGES = ("image/png", "image/jpeg")
# Variables that would point the kernel at the hosted API, another server or another folder.
SCRUBBED = ("OXEN_API_KEY", "FLUX_NB_BASE_URL", "FLUX_NB_OUTPUT_DIR", "FLUX_NB_STEP_DELAY")
WORKDIR_PREFIX = "flux-nb-tutorial-"  # nbval_sanitize.cfg knows it
NBVAL_DEFAULT_CELL_TIMEOUT = 2000.0
CELL_TIMEOUT = 120.0  # a stuck `%flux wait` fails the cell in 2 minutes, not half an hour


# Pictures that a tutorial's own Pillow code draws (a sketch with ImageDraw, a hand-made contact
# sheet with Pillow's FreeType font, a quantize) change with the Pillow release; flux-nb's own
# pictures do not (lettering.py, the painter's own HLS). Such cells carry the tag DRAWN_BY_PILLOW,
# and FLUX_NB_COMPARE_PICTURES=flux-nb (scripts/test.sh sets it in .venv-colab, whose Pillow 11.3
# is not the one the outputs were stored with) leaves out only their pictures: every picture
# flux-nb makes is still compared byte for byte there.
DRAWN_BY_PILLOW = "pictures-drawn-by-pillow"
COMPARE_DRAWN = os.environ.get("FLUX_NB_COMPARE_PICTURES") != "flux-nb"


def pytest_configure(config):
    option = config.option
    if option.nbval_sanitize_with is None and getattr(option, "sanitize_with", None) is None:
        option.nbval_sanitize_with = str(SANITIZE_FILE)
    if not option.nbval_kernel_name:
        option.nbval_current_env = True
    if option.nbval_cell_timeout == NBVAL_DEFAULT_CELL_TIMEOUT:
        option.nbval_cell_timeout = CELL_TIMEOUT


def needs_local_engine(path) -> bool:
    """A tutorial of the flux2-klein engine (its metadata says so): it runs where flux-nb[local]
    is installed (.venv-local, scripts/test.sh), against a tiny random pipeline."""
    return (
        json.loads(Path(path).read_text(encoding="utf-8"))
        .get("metadata", {})
        .get("flux_nb", {})
        .get("engine")
        == "flux2-klein"
    )


KERNEL_ENV: dict[str, str] = {}  # added to the kernels' environment (not to this process's)


def tiny_klein_model() -> None:
    """FLUX_NB_MODEL for the flux2-klein tutorial's kernel: a tiny random pipeline saved in a
    folder whose name nbval_sanitize.cfg knows (no weights can be downloaded where tests run)."""
    if os.environ.get("FLUX_NB_MODEL") or "FLUX_NB_MODEL" in KERNEL_ENV:
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "local_engine"))
    from klein_random import tiny_pipeline

    folder = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX + "klein-")) / "tiny-random-klein"
    tiny_pipeline().save_pretrained(folder)
    KERNEL_ENV["FLUX_NB_MODEL"] = str(folder)


def pytest_collect_file(file_path, parent):
    option = parent.config.option
    if file_path.suffix == ".ipynb" and not (option.nbval or option.nbval_lax):
        if needs_local_engine(file_path):
            if importlib.util.find_spec("diffusers") is None:
                return None  # the main environment: scripts/test.sh runs it in .venv-local
            tiny_klein_model()
        return nbval_plugin.IPyNbFile.from_parent(parent, path=file_path)
    return None


def pytest_collectstart(collector):
    if isinstance(collector, nbval_plugin.IPyNbFile):
        collector.skip_compare = tuple(
            key for key in collector.skip_compare if key not in COMPARED_IMAGES
        )


def pytest_itemcollected(item):
    if type(item) is nbval_plugin.IPyNbCell:  # nbval's __init__ names its class: swap after
        item.__class__ = TutorialCell
        item.add_marker("colab")  # the tutorials run in Colab's package set too (.venv-colab)


class DisplayLedger:
    """What nbclient does with display_ids, for nbval: an update_display_data (or a new display
    with a known id) of the running cell replaces the data of every earlier output with that id.
    Messages of other cells are ignored, as nbclient ignores them."""

    SHOWN = ("display_data", "execute_result")

    def __init__(self):
        self.outputs: dict[str, list] = {}  # display_id -> outputs (of cells already settled)
        self.deferred: list[tuple] = []  # (cell, its outputs, reference, skip_compare)
        self.cell_msg_id: str | None = None
        self.events: list[tuple[str, str | None, dict]] = []  # the running cell's, in order

    def start_cell(self, msg_id: str) -> None:
        self.cell_msg_id, self.events = msg_id, []

    def take(self, msg: dict) -> bool:
        """Note a display message of the running cell. True for an update, which nbval's own
        loop does not handle (it would print 'unhandled iopub msg')."""
        kind = msg["msg_type"]
        if kind not in (*self.SHOWN, "update_display_data"):
            return False
        if msg["parent_header"].get("msg_id") != self.cell_msg_id:
            return kind == "update_display_data"
        display_id = (msg["content"].get("transient") or {}).get("display_id")
        if display_id:
            self._apply(self.outputs.get(display_id, ()), msg["content"])
        self.events.append((kind, display_id, msg["content"]))
        return kind == "update_display_data"

    def settle(self, outputs: list) -> bool:
        """Pair the running cell's outputs with its display messages, apply the updates it sent
        after each, and keep them for later cells' updates. True when one has a display_id."""
        shown = iter([o for o in outputs if o.output_type in self.SHOWN])
        here: dict[str, list] = {}
        for kind, display_id, content in self.events:
            if display_id:
                self._apply(here.get(display_id, ()), content)
            if kind in self.SHOWN:
                output = next(shown, None)
                if display_id and output is not None:
                    here.setdefault(display_id, []).append(output)
        self.events = []
        for display_id, found in here.items():
            self.outputs.setdefault(display_id, []).extend(found)
        return bool(here)

    @staticmethod
    def _apply(outputs, content: dict) -> None:
        for output in outputs:
            output["data"] = content["data"]
            output["metadata"] = content.get("metadata", {})


class TutorialCell(nbval_plugin.IPyNbCell):
    """nbval's cell, comparing outputs that later cells may update at the notebook's end."""

    def runtest(self):
        ledger = self.parent.kernel.displays
        self._settled = False
        try:
            super().runtest()
        finally:
            if not self._settled:  # not compared (an error, or a cell that is not checked)
                ledger.settle(self.test_outputs or [])
        if self.cell_num == sum(c.cell_type == "code" for c in self.parent.nb.cells) - 1:
            self._compare_deferred(ledger)

    def compare_outputs(self, test, ref, skip_compare=None):
        self._settled = True
        if skip_compare is None:
            skip_compare = self.parent.skip_compare
        if not COMPARE_DRAWN and DRAWN_BY_PILLOW in self.cell.metadata.get("tags", []):
            skip_compare = (*skip_compare, *COMPARED_IMAGES)
        if not self.parent.kernel.displays.settle(test):
            return super().compare_outputs(test, ref, skip_compare)
        self.parent.kernel.displays.deferred.append((self, test, ref, skip_compare))
        return True

    def _compare_deferred(self, ledger: DisplayLedger) -> None:
        deferred, ledger.deferred = ledger.deferred, []
        failed = [
            cell
            for cell, test, ref, skip_compare in deferred
            if not nbval_plugin.IPyNbCell.compare_outputs(cell, test, ref, skip_compare)
        ]
        if failed:
            raise NbCellError(
                failed[0].cell_num,
                f"Cell outputs differ in cell(s) {', '.join(str(c.cell_num) for c in failed)}"
                " (compared at the last cell, with the display updates the later cells sent)",
                failed[0].cell.source,
                "\n\n".join(
                    f"Cell {c.cell_num}:\n" + "\n".join(c.comparison_traceback) for c in failed
                ),
            )


class TutorialKernel(nbval_kernel.RunningKernel):
    """nbval's kernel, started in an empty temporary folder with a scrubbed environment, that
    keeps the DisplayLedger of its notebook."""

    def __init__(self, kernel_name, cwd=None, startup_timeout=60, **_ignored):
        self.workdir = tempfile.mkdtemp(prefix=WORKDIR_PREFIX)
        weakref.finalize(self, shutil.rmtree, self.workdir, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED} | KERNEL_ENV
        self.km, self.kc = nbval_kernel.start_new_kernel(
            startup_timeout=startup_timeout,
            kernel_name=kernel_name,
            stderr=subprocess.DEVNULL,
            cwd=self.workdir,
            env=env,
        )
        self.displays = DisplayLedger()
        self._ensure_iopub_up()

    def execute_cell_input(self, cell_input, allow_stdin=None):
        msg_id = super().execute_cell_input(cell_input, allow_stdin)
        self.displays.start_cell(msg_id)
        return msg_id

    def get_message(self, stream, timeout=None):
        while True:
            msg = super().get_message(stream, timeout)
            if stream != "iopub" or not self.displays.take(msg):
                return msg

    def stop(self):
        try:
            super().stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


# IPyNbFile.setup() starts `RunningKernel(name, cwd=<notebook folder>, ...)` by this module name
# (nbval 0.11). This file is only loaded when notebooks/ is collected.
nbval_plugin.RunningKernel = TutorialKernel
