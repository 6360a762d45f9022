"""Is a process still running? Asked without signalling it, on every platform.

`os.kill(pid, 0)` is the POSIX way to ask. On Windows `os.kill` with any signal but the two console
events calls TerminateProcess: asking would end the process asked about (another kernel writing to
the same output folder). There the question goes to OpenProcess and GetExitCodeProcess instead.
The journal and the output folder both ask here.
"""

from __future__ import annotations

import os
from typing import Any

WINDOWS = os.name == "nt"
_QUERY_LIMITED_INFORMATION = 0x1000  # PROCESS_QUERY_LIMITED_INFORMATION
_STILL_ACTIVE = 259
_ACCESS_DENIED = 5


def alive(pid: int) -> bool:
    """True while process `pid` runs; True also when it exists but is not ours to ask about
    (its files are then left alone, which is the safe side)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    if WINDOWS:
        return _alive_on_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def _kernel32() -> tuple[Any, Any]:
    """Windows' kernel32 and the function that reads its last error (both Windows-only)."""
    import ctypes

    dll = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined,unused-ignore]
    return dll, ctypes.get_last_error  # type: ignore[attr-defined,unused-ignore]


def _alive_on_windows(pid: int) -> bool:
    import ctypes

    kernel32, last_error = _kernel32()
    handle = kernel32.OpenProcess(_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        return last_error() == _ACCESS_DENIED  # exists, another user's; else: no such process
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True  # it exists and its state is unknown: leave its files alone
        return code.value == _STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


__all__ = ["WINDOWS", "alive"]
