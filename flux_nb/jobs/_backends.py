"""Which server makes a session's images: the embedded local one (started once per process and
shared), Oxen.ai's hosted API, or another Oxen-compatible server; and the one line that says so.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from typing import Any

from ..core import _errors as errors
from ..core._config import HOSTED_BASE_URL, ApiKey, Settings, ipython_shell, normalize_base_url

_embedded: dict[tuple[float, Any], Any] = {}
_embedded_lock = threading.Lock()


def embedded_server(step_delay: float, engine: Any = "preview") -> Any:
    """The process's local Oxen-compatible server for this step delay and engine (a name or an
    EngineConfig), started on first use on a free loopback port and shared by every session that
    asks for the same."""
    from ..server.engines import EngineConfig

    config = EngineConfig.of(engine)
    key = (step_delay, config)
    with _embedded_lock:
        if key not in _embedded:
            from ..server._app import Limits, LocalExtras
            from ..server._embedded import LocalServer
            from ..server._results import EMBEDDED_BUDGET

            # Progress events are local-only: cards draw a progress bar from them,
            # nothing needs them.
            extras = LocalExtras(progress_events=True)
            # Its one client keeps what it downloads: a result leaves memory once fetched.
            limits = Limits(results_in_memory_bytes=EMBEDDED_BUDGET, spill_downloaded=True)
            # The kernel's own server, on loopback, for one person: it fetches input URLs on
            # this machine's network as the person could (a shared `flux-nb serve` refuses them).
            _embedded[key] = LocalServer(
                step_delay=step_delay,
                engine=config,
                extras=extras,
                limits=limits,
                allow_private_urls=True,
            ).start()
        return _embedded[key]


def local_engine(
    engine: Any = None, model: str | None = None, settings: Settings | None = None, **options: Any
) -> Any:
    """The embedded server's EngineConfig: the arguments (options: device, dtype, offload), else
    FLUX_NB_ENGINE and FLUX_NB_MODEL. A ValidationError names what is wrong or missing."""
    from ..server.engines import EngineConfig, EngineError

    settings = settings or Settings.from_env()
    try:
        if isinstance(engine, EngineConfig):
            config = engine
        else:
            name = engine or settings.engine
            if name == "flux2-klein":
                model = model or settings.model
            config = EngineConfig(name, model=model, **options)
        config.check_available()  # missing libraries: the pip line now, not at the first image
    except (ValueError, TypeError, EngineError) as exc:
        raise errors.ValidationError(f"local engine: {exc}", field="engine") from None
    return config


_announced: set[str] = set()


def announce_once(line: str, extra: str = "") -> None:
    """Say the backend line once per process (kernel): on stdout in IPython, where it is the
    cell's output; on stderr in a plain script, whose stdout is its own. `extra` (a hint to act
    on, appended) makes it said again."""
    if line in _announced and not extra:
        return
    _announced.add(line)
    in_ipython = ipython_shell() is not None
    print(f"{line} {extra}" if extra else line, file=sys.stdout if in_ipython else sys.stderr)


@dataclasses.dataclass(frozen=True)
class Choice:
    """Where a session sends its work."""

    backend: str  # 'local' (the embedded server), 'hosted' (Oxen.ai) or 'custom'
    url: str
    key: ApiKey | None = dataclasses.field(repr=False)  # None for the local server
    server: Any = None  # the embedded LocalServer, when local
    engine: str | None = None  # the local engine's label; None when another server draws

    def describe(self) -> str:
        """One line: which backend makes the images, and how to switch."""
        if self.server is not None and not self.server.runtime.engine.is_stand_in:
            return (
                f"flux-nb: images come from FLUX.2 Klein on this machine, {self.engine}, through"
                f" the local server at {self.url} (the model loads at the first image)."
            )
        if self.backend == "local":
            return (
                f"flux-nb: no OXEN_API_KEY, so images come from the local offline stand-in at"
                f" {self.url}"
                " (a preview engine, not FLUX.2 Klein). Set OXEN_API_KEY or run %flux backend"
                " hosted for the real model."
            )
        if self.backend == "hosted":
            return f"flux-nb: using Oxen.ai's hosted FLUX.2 Klein 4B at {self.url}."
        return f"flux-nb: using the Oxen-compatible server at {self.url}."


def choose(
    backend: str | None,
    settings: Settings,
    *,
    api_key: str | ApiKey | None = None,
    base_url: str | None = None,
    step_delay: float | None = None,
    engine: Any = None,
    model: str | None = None,
) -> Choice:
    """`backend`: 'local', 'hosted' or None to choose from the arguments and the environment (no
    key and no URL: the embedded local server, started here). A hosted choice without a key, or
    a backend that does not exist, is refused in one line."""
    key = ApiKey(api_key) if isinstance(api_key, str) else (api_key or settings.api_key)
    if backend not in (None, "local", "hosted"):
        raise errors.ValidationError(
            f"backend={backend!r} is not valid (allowed: local, hosted).", field="backend"
        )
    if backend is None:
        backend = (
            "local"
            if (key is None and base_url is None and settings.base_url is None)
            else "hosted"
        )
    if backend == "local":
        config = local_engine(engine, model, settings)
        server = embedded_server(settings.step_delay if step_delay is None else step_delay, config)
        return Choice("local", server.url, None, server, server.runtime.engine_label)
    url = normalize_base_url(base_url or settings.base_url or HOSTED_BASE_URL)
    chosen = "hosted" if url == HOSTED_BASE_URL else "custom"
    if key is None and chosen == "hosted":
        raise errors.AuthError(
            "The hosted API needs a key and none is set.",
            hint="Set OXEN_API_KEY, or run %flux backend hosted to type it (it is not stored).",
        )
    return Choice(chosen, url, key)
