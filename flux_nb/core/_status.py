"""Where a generation stands: the one set of status names flux-nb uses, and which of them end it.

The API spells them in lower case ("canceled" too, in some answers: `normalize` makes it
"cancelled"). The local server keeps its own copy (server/store.py): it plays the API's part.
"""

from __future__ import annotations

from typing import Literal

Status = Literal["submitting", "queued", "processing", "succeeded", "failed", "cancelled"]

SUBMITTING: Status = "submitting"  # ours only: sent, or about to be, no generation id yet
QUEUED: Status = "queued"
PROCESSING: Status = "processing"
SUCCEEDED: Status = "succeeded"
FAILED: Status = "failed"
CANCELLED: Status = "cancelled"

ACTIVE: tuple[Status, ...] = (SUBMITTING, QUEUED, PROCESSING)
TERMINAL: tuple[Status, ...] = (SUCCEEDED, FAILED, CANCELLED)
ENDED_BADLY: tuple[Status, ...] = (FAILED, CANCELLED)


def normalize(text: object) -> str:
    """A status as an API answer spells it, in flux-nb's spelling (may be none of the above)."""
    return str(text or "").lower().replace("canceled", "cancelled")
