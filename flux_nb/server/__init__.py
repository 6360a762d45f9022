"""A local, offline stand-in for Oxen.ai's inference API (Starlette + uvicorn + sse-starlette).

It speaks the same HTTP contract as the hosted API for FLUX.2 Klein 4B, so the client runs
unchanged against either; its images come from an offline engine and are not FLUX's.

    from flux_nb.server import LocalServer
    with LocalServer(step_delay=0.02) as server:
        print(server.url)

Or from a shell: `flux-nb serve --port 8765`.
"""

from __future__ import annotations

from ._app import Limits, create_app
from ._embedded import LocalServer
from ._faults import Faults, ForcedStatus

__all__ = ["Faults", "ForcedStatus", "Limits", "LocalServer", "create_app"]
