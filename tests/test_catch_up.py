"""Cards catch up where updates sent while no cell runs are not shown (Colab's rule).

A real ipykernel kernel, driven by a fake front end that applies a kernel message only while the
execute request it answers is running (the model of colabtools #3373 in shared/colab-notes.md):
it keeps the widget models it applied, and beside them every model as the kernel sent it, so a
test can compare what the page shows with the truth. In Colab the kernel has `google.colab`
loaded; a stand-in module of that name makes this kernel one.
"""

from __future__ import annotations

import hashlib
import sys

import pytest
from widget_page import ColabPage

COLAB = (
    "import sys, types; sys.modules.setdefault('google.colab', types.ModuleType('google.colab'))"
)
FOX = "%%flux --seed 3 --steps 6 --name fox\na red fox in snow"


def _settled_while_idle(page: ColabPage) -> None:
    """Wait, with no cell running, until the kernel has sent the card's final state and the
    settled output (it sends that last, from the runner thread that finished the image)."""
    page.pump(
        lambda m: (
            m["msg_type"] == "update_display_data"
            and m["content"]["data"]["text/plain"].endswith("\ndone")
        ),
        timeout=120,
    )


@pytest.mark.colab
def test_one_later_cell_brings_the_card_to_its_final_picture_under_colabs_rule(page):
    page.run(COLAB)
    page.run("%load_ext flux_nb")
    page.run(FOX)
    _settled_while_idle(page)
    truth = page.card(page.truth)
    assert truth["picture"] and "done" in truth["status"] and truth["bars"] == 0
    before = page.card(page.models)
    assert before["picture"] is None and before["bars"] == 1  # what Colab draws today: stuck
    dropped = page.dropped
    assert dropped > 0

    later = page.run("1 + 1")

    assert page.card(page.models) == truth  # the final picture, status and no bar
    settled = [d for d in page.displays if d["data"]["text/plain"].endswith("\ndone")]
    assert [d["shown"] for d in settled] == [False, True]  # the static output, as before
    resent = page.widget_messages.get(later[0]["parent_header"]["msg_id"], 0)
    print(
        f"\nunder Colab's rule: {page.dropped} widget messages dropped (sent while no cell ran),"
        f" {page.shown} shown, {resent} of them sent again by the `1 + 1` cell"
    )
    want = page.run("import hashlib; hashlib.sha256(fox.thumbnail()).hexdigest()")
    (result,) = [m for m in want if m["msg_type"] == "execute_result"]
    assert (
        result["content"]["data"]["text/plain"].strip("'")
        == hashlib.sha256(truth["picture"]).hexdigest()
    )


@pytest.mark.colab
def test_flux_wait_shows_progress_live_and_leaves_nothing_to_catch_up(page):
    page.run(COLAB)
    page.run("%load_ext flux_nb")
    page.run(FOX)
    wait = page.run("%flux wait 60")
    wait_id = wait[0]["parent_header"]["msg_id"]
    assert page.widget_messages.get(wait_id, 0) > 0  # progress and the end went out live
    assert page.card(page.models) == page.card(page.truth)
    assert "done" in page.card(page.models)["status"]

    after = page.run("1 + 1")
    assert page.widget_messages.get(after[0]["parent_header"]["msg_id"], 0) == 0


def test_outside_colab_nothing_is_sent_again(page):
    """JupyterLab, Notebook 7, VS Code draw updates from threads as they come: a later cell
    sends no widget message at all."""
    page.run("%load_ext flux_nb")
    page.run(FOX)
    _settled_while_idle(page)
    sent = sum(1 for _ in page.truth)
    after = page.run("1 + 1")
    assert page.widget_messages.get(after[0]["parent_header"]["msg_id"], 0) == 0
    assert sum(1 for _ in page.truth) == sent


def test_colabs_kernel_is_known_by_its_module_or_its_launcher(monkeypatch):
    from flux_nb.notebook import _catch_up as catch_up

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr("sys.argv", ["/usr/lib/python3/site-packages/ipykernel_launcher.py"])
    assert not catch_up.needed()
    monkeypatch.setattr("sys.argv", ["/usr/local/lib/python3.13/colab_kernel_launcher.py"])
    assert catch_up.needed()
    monkeypatch.setattr("sys.argv", ["x"])
    monkeypatch.setitem(sys.modules, "google.colab", object())
    assert catch_up.needed()
