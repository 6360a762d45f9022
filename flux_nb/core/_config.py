"""Settings read once from the environment, timeouts and retry policy in one place,
and the key holder."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

HOSTED_BASE_URL = "https://hub.oxen.ai"
STAND_IN_ENGINE = "preview"  # the local server's offline engine: its pictures are not FLUX's


def is_stand_in(engine: str | None) -> bool:
    """Whether an engine, by its name or by the label the local server gives each generation
    ("preview (offline stand-in, not FLUX)"), is the offline stand-in; None (not known) is not."""
    return (engine or "").startswith(STAND_IN_ENGINE)


def in_colab() -> bool:
    """Whether this kernel runs in Google Colab: its kernel is started by colab_kernel_launcher,
    with its kernel class from google.colab (so that package is loaded there)."""
    launcher = sys.argv[0] if sys.argv else ""
    return "google.colab" in sys.modules or "colab_kernel_launcher" in launcher


def ipython_shell() -> Any:
    """The running IPython shell (a kernel's, or a terminal's), else None. Asked of IPython only
    where it is loaded already, so asking never loads it: a shell cannot run without it."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    return get_ipython() if get_ipython is not None else None


def kernel_shell() -> Any:
    """The shell when it runs in a kernel (Jupyter, Colab, VS Code: the places that show widgets
    and display updates), else None: terminal IPython has a shell but no kernel."""
    shell = ipython_shell()
    return shell if getattr(shell, "kernel", None) is not None else None


def in_kernel() -> bool:
    """Whether this code runs in a kernel (see kernel_shell)."""
    return kernel_shell() is not None


def colab_secret(name: str) -> str:
    """The Colab secret `name` (stored in Colab's key panel, with this notebook given access),
    else "": not Colab, no such secret, or access not granted. The value is never logged."""
    if not in_colab():
        return ""
    try:
        from google.colab import userdata

        return str(userdata.get(name) or "").strip()
    except Exception:  # SecretNotFoundError, NotebookAccessError...: ask as anywhere else
        return ""


def normalize_base_url(url: str) -> str:
    """The server root: Oxen's docs give the base URL as https://hub.oxen.ai/api/ai, but the event
    stream lives at /api/events, outside it, so every path is built from the host root."""
    url = url.strip().rstrip("/")
    for suffix in ("/api/ai", "/api"):
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url


class ApiKey:
    """Holds the API key so that it cannot leak by accident: no repr, str,
    pickling or equality shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        value = (value or "").strip()
        if not value:
            raise ValueError("an API key cannot be empty")
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the Authorization header only."""
        return self._value

    def redact(self, text: str) -> str:
        """Text with every occurrence of the key replaced, for messages that quote a server."""
        return text.replace(self._value, "***") if text else text

    def __repr__(self) -> str:
        return "ApiKey(***)"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("ApiKey cannot be pickled: it would write the key somewhere")


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for each phase of a call. sse_read is how long a silent event stream is
    trusted before the runner polls itself and reconnects: the hosted stream sends `: keep-alive`
    every 15 s, so 20 s of nothing means a held-back or dead stream."""

    connect: float = 5.0
    read: float = 30.0
    write: float = 30.0
    pool: float = 5.0
    download: float = 120.0
    sse_read: float = 20.0


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently safe calls are repeated on 429, 5xx and network errors."""

    attempts: int = 5
    backoff: float = 0.5
    max_backoff: float = 20.0
    max_retry_after: float = 60.0
    # 429 means "not taken, slow down": it is repeated, honouring Retry-After, up to this many
    # times and this many seconds of waiting (a patient budget), before the call fails.
    rate_limit_attempts: int = 30
    rate_limit_budget: float = 300.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before attempt number `attempt` (1-based) is repeated."""
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_retry_after))
        import random

        return min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the environment says: key, base URL, output folder, and the embedded server's step
    delay, engine (FLUX_NB_ENGINE: preview or flux2-klein) and model (FLUX_NB_MODEL)."""

    api_key: ApiKey | None = None
    base_url: str | None = None
    output_dir: Path = Path("flux_outputs")
    step_delay: float = 0.02
    engine: str = "preview"
    model: str | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        key = env.get("OXEN_API_KEY", "").strip()
        base = normalize_base_url(env.get("FLUX_NB_BASE_URL", "")) or None
        try:
            delay = float(env.get("FLUX_NB_STEP_DELAY", "0.02"))
        except ValueError:
            delay = 0.02
        return cls(
            api_key=ApiKey(key) if key else None,
            base_url=base,
            output_dir=Path(env.get("FLUX_NB_OUTPUT_DIR", "").strip() or "flux_outputs"),
            step_delay=max(0.0, delay),
            engine=env.get("FLUX_NB_ENGINE", "").strip() or "preview",
            model=env.get("FLUX_NB_MODEL", "").strip() or None,
        )

    @property
    def wants_local(self) -> bool:
        """The embedded default: no key and no base URL means the local offline server."""
        return self.api_key is None and self.base_url is None
