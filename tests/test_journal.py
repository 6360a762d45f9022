"""The journal: who wrote each entry, where it was sent, and which kernels are still alive.

Two kernels that share an output folder (two notebooks in one directory) must never resume each
other's live work, and each journalled generation is resumed against the server it was sent to.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flux_nb.core._config import RetryPolicy, Settings
from flux_nb.core._recipe import Recipe
from flux_nb.files._journal import Journal, Sent
from flux_nb.jobs._sessions import JOURNAL_NAME, Session

FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05)


def session_on(server, out: Path, token: str = "tok-journal") -> Session:
    return Session(
        base_url=server.url,
        api_key=token,
        output_dir=out,
        settings=Settings(),
        announce=None,
        retry=FAST,
    )


def test_entries_name_their_writer_and_server(local_server, tmp_path) -> None:
    session = session_on(local_server, tmp_path / "out")
    try:
        gen = session.generate("a named entry", seed=11, num_inference_steps=2)
        gen.wait(10)
        (submit,) = [e for e in session.journal.entries() if e["op"] == "submit"]
        assert submit["server"] == local_server.url and submit["writer"] == session.journal.writer
        assert "tok-journal" not in (tmp_path / "out" / JOURNAL_NAME).read_text()
    finally:
        session.close()


def test_a_live_kernel_keeps_its_work_and_a_closed_one_gives_it_up(make_server, tmp_path) -> None:
    server = make_server(step_delay=1.0)  # 50 steps: still running at the end, however slow
    out = tmp_path / "shared"
    first = session_on(server, out)
    gen = first.generate("still running here", seed=12, num_inference_steps=50)
    deadline = time.monotonic() + 30
    while gen.id is None and time.monotonic() < deadline:  # journaled and sent, however slow
        time.sleep(0.02)
    second = session_on(server, out)
    try:
        assert gen.id is not None and not gen.done
        assert second.journal_pending() == [] and second.resume() == []  # not the other's live work
        # That kernel is done (no cancel: one that lands first would end the entry, on a fast
        # machine or a slow one): what it left unsaved is resumable now.
        first.close()
        assert [e["key"] for e in second.journal_pending()] == [gen.key]
    finally:
        first.close()
        second.close()


CHILD = textwrap.dedent(
    """
    import sys, time
    from flux_nb.files._journal import Journal
    journal = Journal(sys.argv[1])
    journal.record({"op": "submit", "key": "child-key", "backend": "custom", "server": sys.argv[2],
                    "recipe": {"prompt": "from the child", "seed": 5}})
    print(journal.writer, flush=True)
    time.sleep(60)
    """
)


def test_another_process_is_alive_until_it_dies(tmp_path) -> None:
    """The lock is the operating system's: a killed process releases it at once."""
    path = tmp_path / "out" / JOURNAL_NAME
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), "http://127.0.0.1:9"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        writer = child.stdout.readline().strip()
        mine = Journal(path)
        (entry,) = mine.pending()
        assert entry["writer"] == writer and mine.is_alive(writer, entry["pid"])
    finally:
        child.kill()
        child.wait(10)
    assert not Journal(path).is_alive(writer, entry["pid"])


def test_entries_from_before_writers_were_recorded_count_as_gone(tmp_path) -> None:
    journal = Journal(tmp_path / JOURNAL_NAME)
    assert not journal.is_alive(None) and journal.is_alive(journal.writer)


def test_work_sent_to_another_server_is_not_resumed_here_and_says_why(
    local_server, tmp_path
) -> None:
    out = tmp_path / "out"
    old = Journal(out / JOURNAL_NAME)
    recipe = Recipe.build("sent elsewhere", seed=13)
    old.record(
        {
            "op": "submit",
            "key": "elsewhere",
            "backend": "hosted",
            "server": "https://other.example",
            "recipe": recipe.to_dict(),
        },
        {"op": "enqueued", "key": "elsewhere", "id": "0b9c3a52-0000-4000-8000-000000000000"},
    )
    old.close()
    session = session_on(local_server, out)
    try:
        assert session.resume() == []
        (note,) = session.resume_notes
        assert "https://other.example" in note and local_server.url in note
    finally:
        session.close()


def test_work_sent_to_this_server_is_fetched_by_id_not_sent_again(local_server, tmp_path) -> None:
    out = tmp_path / "out"
    first = session_on(local_server, out, token="tok-same-server")
    gen = first.generate("collect me by id", seed=14, num_inference_steps=2)
    gen.wait(10)
    # Pretend the kernel died after the enqueue answer but before the file was journalled.
    entries = [e for e in first.journal.entries() if e["op"] in ("submit", "enqueued")]
    first.close()
    (out / JOURNAL_NAME).write_text("".join(json.dumps(e) + "\n" for e in entries))
    for image in out.glob("*.png"):
        image.unlink()
    second = session_on(local_server, out, token="tok-same-server")
    try:
        (resumed,) = second.resume()
        assert resumed.wait(10).id == gen.id and resumed.path.exists()
        assert second.runner.stats["enqueues"] == 0  # fetched, not sent (and paid for) again
    finally:
        second.close()


def test_an_unwritable_journal_sends_nothing(local_server, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / JOURNAL_NAME).mkdir()  # a folder where the journal file should be: it cannot be written
    session = session_on(local_server, out)
    try:
        with pytest.raises(Exception, match="Nothing was sent") as info:
            session.generate("never sent", seed=15, num_inference_steps=2)
        assert type(info.value).__name__ == "StorageError" and session.runner.stats["enqueues"] == 0
    finally:
        session.close()


def test_a_torn_journal_line_does_not_swallow_the_next_record(tmp_path) -> None:
    journal = Journal(tmp_path / JOURNAL_NAME)
    journal.record({"op": "submit", "key": "a", "recipe": {}})
    with open(journal.path, "ab") as fh:
        fh.write(b'{"t": 1, "op": "enqu')  # a write cut short by a full disk or a crash
    journal.record({"op": "submit", "key": "b", "recipe": {}})
    assert [e["key"] for e in journal.entries()] == ["a", "b"]


# -- one method per record, the lines on disk as before ------------------------------------------


def test_each_record_method_writes_the_line_older_versions_wrote(tmp_path) -> None:
    """The files on disk keep their format: a journal written now is read by an older flux-nb,
    and one an older flux-nb wrote is resumed now."""
    journal = Journal(tmp_path / JOURNAL_NAME)
    recipe = Recipe.build("typed records", seed=21).to_dict()
    lineage = {"inputs": ["sha256:" + "0" * 64], "steps": {}}
    journal.submitted(
        [Sent("a", recipe), Sent("b", recipe, lineage), Sent("c", recipe), Sent("d", recipe)],
        backend="custom",
        server="http://127.0.0.1:1",
    )
    journal.enqueued("a", "id-a")
    journal.saved("a", "id-a", tmp_path / "a.png")
    journal.ended("b", None, "failed", "HTTP 422: bad seed")
    journal.ended("c", "id-c", "cancelled")
    journal.resumed("d", None)
    lines = [json.loads(line) for line in journal.path.read_text().splitlines()]
    assert all(e.pop("writer") == journal.writer and e.pop("t") and e.pop("pid") for e in lines)
    base = {"op": "submit", "backend": "custom", "server": "http://127.0.0.1:1", "recipe": recipe}
    assert lines == [
        {**base, "key": "a"},
        {**base, "key": "b", "lineage": lineage},
        {**base, "key": "c"},
        {**base, "key": "d"},
        {"op": "enqueued", "key": "a", "id": "id-a"},
        {"op": "saved", "key": "a", "id": "id-a", "path": str(tmp_path / "a.png")},
        {"op": "failed", "key": "b", "id": None, "reason": "HTTP 422: bad seed"},
        {"op": "cancelled", "key": "c", "id": "id-c", "reason": ""},
        {"op": "resumed", "key": "d", "id": None},
    ]
    (left,) = journal.pending()
    assert left["key"] == "d" and left["recipe"] == recipe and "id" not in left


def test_a_journal_an_older_version_wrote_is_resumed(local_server, tmp_path) -> None:
    """Lines as flux-nb wrote them before the journal had a method per record (no writer, no
    pid: its kernel is gone): the work is sent again here and saved."""
    out = tmp_path / "out"
    out.mkdir()
    recipe = Recipe.build("from an old journal", seed=22, num_inference_steps=2).to_dict()
    line = {"t": 1, "op": "submit", "key": "old", "backend": "custom", "recipe": recipe}
    (out / JOURNAL_NAME).write_text(json.dumps(line) + "\n")
    session = session_on(local_server, out, token="tok-old-journal")
    try:
        (gen,) = session.resume()
        assert gen.wait(10).key == "old" and gen.path is not None and gen.path.exists()
        ops = [(e["op"], e["key"]) for e in session.journal.entries()]
        assert ops[1:] == [("resumed", "old"), ("enqueued", "old"), ("saved", "old")]
        assert session.journal_pending() == []
    finally:
        session.close()
