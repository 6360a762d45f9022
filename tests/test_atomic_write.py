"""core/_atomic_write.py: a file appears whole or not at all, and nothing partial is left behind."""

from __future__ import annotations

import pytest

from flux_nb.core._atomic_write import PARTIAL, write_atomically


def test_the_file_appears_whole_and_no_partial_file_stays(tmp_path):
    target = tmp_path / "new" / "image.png"  # the folder is made too
    write_atomically(target, b"\x89PNG whole")
    assert target.read_bytes() == b"\x89PNG whole"
    assert [p.name for p in target.parent.iterdir()] == ["image.png"]


def test_before_rename_runs_with_the_bytes_on_disk_and_the_target_not_yet_there(tmp_path):
    target = tmp_path / "image.png"
    seen = []

    def check() -> None:
        partial = [p for p in tmp_path.iterdir() if p.name.startswith(PARTIAL)]
        seen.append((target.exists(), [p.read_bytes() for p in partial]))

    write_atomically(target, b"data", check)
    assert seen == [(False, [b"data"])]


def test_a_failure_before_the_rename_leaves_nothing_and_no_target(tmp_path):
    target = tmp_path / "image.png"

    def fail() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomically(target, b"data", fail)
    assert list(tmp_path.iterdir()) == []
