"""What an idle event stream costs the server with a keys file: each open stream asks once a second
whether its key is still accepted (app.next_event). Per check: KeyRing.still_accepts (the hash the
stream holds, the file stat()ed at most once a second for all streams) beside name_of (a stat and
a SHA-256 of the token, what a request pays and what each stream paid before).

    python benchmarks/idle_streams.py
"""

from __future__ import annotations

import tempfile
import timeit
from pathlib import Path

from flux_nb.server._keys import KeyRing, add_key, digest

CHECKS = 20_000


def per_check_us(check) -> float:
    return min(timeit.repeat(check, number=CHECKS, repeat=5)) / CHECKS * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        keys_file = Path(folder) / "keys.json"
        token = add_key(keys_file, "alice")
        ring = KeyRing(keys_file=keys_file)
        owner = digest(token)
        request = per_check_us(lambda: ring.name_of(token))
        stream = per_check_us(lambda: ring.still_accepts(token, owner, 1.0))
    print("idle stream key check, per check (us)")
    print(f"  name_of (stat + sha256)           {request:6.2f}")
    print(f"  still_accepts (held hash)         {stream:6.2f}")
    before, after = 100 * request / 1000, 100 * stream / 1000
    print(f"  100 idle streams, per second (ms) {before:6.3f} -> {after:.3f}")


if __name__ == "__main__":
    main()
