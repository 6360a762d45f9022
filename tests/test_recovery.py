"""jobs/_recovery.py: what a gone kernel left in the journal, taken up by another one."""

from __future__ import annotations

from flux_nb.core._config import Settings
from flux_nb.core._recipe import Recipe
from flux_nb.files._journal import Journal, Sent
from flux_nb.jobs._recovery import collect, unfinished
from flux_nb.jobs._sessions import JOURNAL_NAME, Session


def test_an_image_on_disk_is_loaded_and_work_for_another_server_is_left_with_a_note(
    local_server, tmp_path
) -> None:
    out = tmp_path / "out"
    first = Session(
        base_url=local_server.url, api_key="tok-recovery", output_dir=out, announce=None
    )
    made = first.generate("saved, then the kernel died", seed=31, num_inference_steps=2).wait(10)
    first.close()
    gone = Journal(out / JOURNAL_NAME)  # a kernel that died between saving and journalling
    recipe = Recipe.build("sent elsewhere", seed=32).to_dict()
    gone.submitted(
        [Sent("on-disk", made.recipe.to_dict())], backend="custom", server=first.client.base_url
    )
    gone.enqueued("on-disk", made.id)
    gone.submitted([Sent("elsewhere", recipe)], backend="hosted", server="https://other.example")
    gone.close()

    second = Session(
        base_url=local_server.url,
        api_key="tok-recovery",
        output_dir=out,
        settings=Settings(),
        announce=None,
    )
    try:
        entries = unfinished(second.journal, second.history)
        assert sorted(e["key"] for e in entries) == ["elsewhere", "on-disk"]
        gens, notes = collect(second.runner, entries)
        (loaded,) = gens
        assert loaded.path == made.path and loaded.status == "succeeded"
        assert second.runner.stats["enqueues"] == 0  # nothing sent, nothing paid twice
        (note,) = notes
        assert note.startswith("elsewher ('sent elsewhere')") and "https://other.example" in note
        saved = [e for e in second.journal.entries() if e["op"] == "saved"]
        assert [e["key"] for e in saved] == [made.key, "on-disk"]
        assert [e["key"] for e in unfinished(second.journal, second.history)] == ["elsewhere"]
    finally:
        second.close()
