"""A key per person: the keys file (names beside sha256 hashes, never a key) and the server's
view of it, re-read whenever the file changes so a removed key is refused at its next request.

The file is JSON, written whole or not at all:

    {"keys": [{"name": "alice", "sha256": "<64 hex digits>", "added": 1765000000}]}

A key is shown once, when it is made (`flux-nb keys add NAME --keys-file PATH`); only its hash is
kept, so a leaked keys file gives nobody a key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..core._atomic_write import write_atomically

log = logging.getLogger("flux_nb.server")

KEY_PREFIX = "fnb_"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
HEX64 = re.compile(r"[0-9a-f]{64}")


class KeysFileError(ValueError):
    """The keys file cannot be read or written, or a name is not valid; one line, what to do."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """256 random bits, URL-safe, with a prefix that tells what it is when found in a paste."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Entry:
    name: str
    sha256: str
    added: int


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise KeysFileError(
            f"{name[:70]!r} is not a usable name: use 1-64 letters, digits, '.', '_', '@' or '-',"
            " starting with a letter or digit."
        )
    return name


def read_entries(path: Path) -> list[Entry]:
    """The file's entries ([] when it does not exist yet); KeysFileError when it is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise KeysFileError(f"cannot read the keys file {path}: {exc.strerror or exc}.") from None
    try:
        items = json.loads(text)["keys"]
        entries = [Entry(str(i["name"]), str(i["sha256"]), int(i.get("added", 0))) for i in items]
    except (ValueError, KeyError, TypeError) as exc:
        raise KeysFileError(
            f"{path} is not a flux-nb keys file ({type(exc).__name__}): make it with"
            " `flux-nb keys add NAME --keys-file PATH`."
        ) from None
    for entry in entries:
        if not HEX64.fullmatch(entry.sha256):
            raise KeysFileError(f"{path}: the entry {entry.name!r} has no valid sha256.")
    return entries


def write_entries(path: Path, entries: list[Entry]) -> None:
    data = {"keys": [vars(e) for e in entries]}
    try:
        write_atomically(path, (json.dumps(data, indent=1) + "\n").encode())
        os.chmod(path, 0o600)
    except OSError as exc:
        raise KeysFileError(f"cannot write the keys file {path}: {exc.strerror or exc}.") from None


def add_key(path: Path, name: str) -> str:
    """Make a key for `name`, store its hash, and return the key (the only time it exists)."""
    entries = read_entries(path)
    if any(e.name == check_name(name) for e in entries):
        raise KeysFileError(
            f"{name!r} already has a key in {path}: remove it first to give them a new one."
        )
    key = new_key()
    write_entries(path, [*entries, Entry(name, digest(key), int(time.time()))])
    return key


def remove_key(path: Path, name: str) -> None:
    entries = read_entries(path)
    kept = [e for e in entries if e.name != name]
    if len(kept) == len(entries):
        raise KeysFileError(f"{name!r} has no key in {path} (`flux-nb keys list` shows who has).")
    write_entries(path, kept)


class KeyRing:
    """The keys a server accepts: a shared --api-key and/or a keys file, checked per request.

    The file is stat()ed on each request's lookup (microseconds), at most once a second for all
    idle event streams together (still_accepts), and re-read when its identity, size or
    modification time changed. A file that goes missing or turns unreadable accepts no file key
    until it is fixed (fail closed); the reason is logged once.
    """

    SHARED = "shared-key"  # the name logs give the holder of --api-key

    def __init__(self, *, api_key: str | None = None, keys_file: str | Path | None = None):
        self.api_key = api_key or None
        self.path = Path(keys_file) if keys_file is not None else None
        self._lock = threading.Lock()
        self._stamp: tuple[int, ...] | None = None
        self._by_hash: dict[str, str] = {}
        self._problem: str | None = None
        self._checked = -float("inf")  # time.monotonic() of the last stat (still_accepts)
        if self.path is not None:
            if not self.path.is_file():
                raise KeysFileError(
                    f"no keys file at {self.path}: make one with"
                    f" `flux-nb keys add NAME --keys-file {self.path}`."
                )
            self._refresh(strict=True)  # a broken file: one line at start, not refusals later

    @property
    def required(self) -> bool:
        return self.api_key is not None or self.path is not None

    def name_of(self, token: str, hashed: str | None = None) -> str | None:
        """The name the token belongs to, or None when it is not a key this server accepts.
        hashed: digest(token) when the caller has it already (authorize's owner), not redone."""
        if self.api_key is not None and hmac.compare_digest(token.encode(), self.api_key.encode()):
            return self.SHARED
        if self.path is None or not token:
            return None
        self._refresh()
        return self._named(hashed or digest(token))

    def still_accepts(self, token: str, hashed: str, every: float) -> bool:
        """For an open event stream, asked while it idles: whether its key is still accepted.
        The file is stat()ed at most once per `every` seconds for all streams together."""
        if self.api_key is not None and hmac.compare_digest(token.encode(), self.api_key.encode()):
            return True
        if self.path is None or not token:
            return False
        with self._lock:
            fresh = time.monotonic() - self._checked < every
        if not fresh:
            self._refresh()
        return self._named(hashed) is not None

    def _named(self, hashed: str) -> str | None:
        with self._lock:
            # A dict lookup by hash: timing tells nothing about a key, only about its hash.
            return self._by_hash.get(hashed)

    def _refresh(self, *, strict: bool = False) -> None:
        """Re-read the file when its stat changed; strict (at start) raises what is wrong with it
        instead of refusing every person's key until it is mended."""
        assert self.path is not None
        try:
            st = self.path.stat()
            stamp: tuple[int, ...] | None = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        except OSError:
            stamp = None
        with self._lock:
            self._checked = time.monotonic()
            if stamp is not None and stamp == self._stamp:
                return
        try:
            if stamp is None:
                raise KeysFileError(f"the keys file {self.path} is gone")
            entries = read_entries(self.path)
        except KeysFileError as exc:
            if strict:
                raise
            with self._lock:
                self._by_hash, self._stamp = {}, stamp
                if self._problem != str(exc):
                    log.error("no person's key is accepted now: %s", exc)
                self._problem = str(exc)
            return
        by_hash = {e.sha256: e.name for e in entries}
        with self._lock:
            if self._stamp is not None:
                log.info("keys file re-read: %d people have keys", len(by_hash))
            self._by_hash, self._stamp, self._problem = by_hash, stamp, None
