"""core/_processes.py: one liveness check for the journal and the output folder, which never signals
a process on Windows (os.kill there terminates it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from flux_nb.core import _processes as processes
from flux_nb.core._atomic_write import PARTIAL
from flux_nb.files import _journal as journal_module
from flux_nb.files._journal import Journal
from flux_nb.files._storage import OutputFolder


def test_this_process_lives_and_a_finished_child_does_not() -> None:
    assert processes.alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(30)
    assert not processes.alive(child.pid)
    assert not processes.alive(0) and not processes.alive(-5)


class FakeKernel32:
    """OpenProcess/GetExitCodeProcess/CloseHandle as Windows answers them, for a few pids."""

    def __init__(self, running: set[int], exited: set[int], others: set[int]) -> None:
        self.running, self.exited, self.others = running, exited, others
        self.calls: list[tuple[str, int]] = []
        self.error = 0

    def OpenProcess(self, access: int, inherit: bool, pid: int) -> int:  # noqa: N802
        self.calls.append(("OpenProcess", pid))
        assert access == 0x1000 and inherit is False  # query only: never PROCESS_TERMINATE
        if pid in self.running | self.exited:
            return 1000 + pid
        self.error = 5 if pid in self.others else 87  # ACCESS_DENIED, INVALID_PARAMETER
        return 0

    def GetExitCodeProcess(self, handle: int, code) -> int:  # noqa: N802
        self.calls.append(("GetExitCodeProcess", handle - 1000))
        code._obj.value = 259 if handle - 1000 in self.running else 0
        return 1

    def CloseHandle(self, handle: int) -> int:  # noqa: N802
        self.calls.append(("CloseHandle", handle - 1000))
        return 1


@pytest.fixture
def windows(monkeypatch):
    """The Windows branch on this machine: os.kill must not be called at all."""
    fake = FakeKernel32(running={4242}, exited={4343}, others={4444})
    monkeypatch.setattr(processes, "WINDOWS", True)
    monkeypatch.setattr(processes, "_kernel32", lambda: (fake, lambda: fake.error))

    def kill(pid, sig):
        raise AssertionError(f"os.kill({pid}, {sig}) on Windows terminates the process")

    monkeypatch.setattr(os, "kill", kill)
    return fake


def test_on_windows_liveness_is_asked_of_openprocess_never_os_kill(windows) -> None:
    assert processes.alive(4242)  # STILL_ACTIVE
    assert not processes.alive(4343)  # exited: an exit code
    assert processes.alive(4444)  # another user's: it exists
    assert not processes.alive(4545)  # no such process
    assert processes.alive(os.getpid())
    opened = [pid for name, pid in windows.calls if name == "OpenProcess"]
    closed = [pid for name, pid in windows.calls if name == "CloseHandle"]
    assert opened == [4242, 4343, 4444, 4545] and closed == [4242, 4343]


def test_on_windows_the_journal_asks_without_signalling_another_kernel(
    windows, monkeypatch, tmp_path
) -> None:
    """Without fcntl (Windows) the journal falls back to the pid: the bug killed that kernel."""
    monkeypatch.setattr(journal_module, "fcntl", None)
    journal = Journal(tmp_path / "journal.jsonl")
    assert journal.is_alive("another-kernel", 4242)
    assert not journal.is_alive("a-gone-kernel", 4343)
    assert ("OpenProcess", 4242) in windows.calls


def test_on_windows_a_dead_writers_partial_file_is_swept_and_a_live_ones_kept(
    windows, tmp_path
) -> None:
    folder = OutputFolder(tmp_path / "out")
    folder.path.mkdir(parents=True)
    live = folder.path / f"{PARTIAL}4242-a.png"
    dead = folder.path / f"{PARTIAL}4343-b.png"
    for path in (live, dead):
        path.write_bytes(b"half")
        os.utime(path, (time.time(), time.time()))
    assert folder.sweep_partials() == 1
    assert live.exists() and not dead.exists()
