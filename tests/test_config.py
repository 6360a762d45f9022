"""core/_config.py: what the environment says, the key holder, timeouts and the retry policy."""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import pytest

from flux_nb.core._config import (
    HOSTED_BASE_URL,
    ApiKey,
    RetryPolicy,
    Settings,
    in_kernel,
    ipython_shell,
    is_stand_in,
    kernel_shell,
    normalize_base_url,
)


@pytest.mark.parametrize(
    "given",
    [
        "https://hub.oxen.ai",
        "https://hub.oxen.ai/",
        "https://hub.oxen.ai/api/ai",  # the base URL Oxen's docs give
        "https://hub.oxen.ai/api/ai/",
        " https://hub.oxen.ai/api ",
    ],
)
def test_every_spelling_of_the_api_base_is_the_host_root(given):
    assert normalize_base_url(given) == HOSTED_BASE_URL


def test_the_key_never_shows_in_repr_str_format_or_pickle():
    key = ApiKey("  sk-secret-value  ")
    assert key.reveal() == "sk-secret-value"
    for shown in (repr(key), str(key), f"{key}", repr([key]), repr({"k": key})):
        assert "sk-secret-value" not in shown
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key)
    assert key.redact("Bearer sk-secret-value was refused") == "Bearer *** was refused"


def test_an_empty_key_is_refused():
    with pytest.raises(ValueError, match="cannot be empty"):
        ApiKey("   ")


def test_no_key_and_no_base_url_is_the_embedded_default():
    settings = Settings.from_env({})
    assert settings.wants_local
    assert settings.api_key is None and settings.base_url is None
    assert settings.output_dir == Path("flux_outputs") and settings.engine == "preview"


def test_blank_variables_count_as_unset():
    settings = Settings.from_env(
        {
            "OXEN_API_KEY": "  ",
            "FLUX_NB_BASE_URL": " ",
            "FLUX_NB_OUTPUT_DIR": " ",
            "FLUX_NB_ENGINE": "",
        }
    )
    assert settings.wants_local and settings.output_dir == Path("flux_outputs")
    assert settings.engine == "preview"


def test_the_environment_sets_key_server_folder_and_engine(tmp_path):
    settings = Settings.from_env(
        {
            "OXEN_API_KEY": "sk-from-env",
            "FLUX_NB_BASE_URL": "https://hub.oxen.ai/api/ai",
            "FLUX_NB_OUTPUT_DIR": str(tmp_path),
            "FLUX_NB_ENGINE": "flux2-klein",
            "FLUX_NB_MODEL": "/models/klein",
            "FLUX_NB_STEP_DELAY": "0.5",
        }
    )
    assert not settings.wants_local
    assert settings.api_key is not None and settings.api_key.reveal() == "sk-from-env"
    assert settings.base_url == HOSTED_BASE_URL
    assert settings.output_dir == tmp_path
    assert (settings.engine, settings.model, settings.step_delay) == (
        "flux2-klein",
        "/models/klein",
        0.5,
    )
    assert "sk-from-env" not in repr(settings)


@pytest.mark.parametrize("given, expected", [("-3", 0.0), ("0", 0.0), ("not a number", 0.02)])
def test_the_step_delay_is_never_negative(given, expected):
    assert Settings.from_env({"FLUX_NB_STEP_DELAY": given}).step_delay == expected


def test_retry_after_is_honoured_up_to_its_cap():
    policy = RetryPolicy(max_retry_after=60.0)
    assert policy.delay(1, retry_after=7.0) == 7.0
    assert policy.delay(1, retry_after=3600.0) == 60.0
    assert policy.delay(1, retry_after=-1.0) == 0.0


def test_backoff_doubles_with_jitter_and_stops_at_its_ceiling():
    policy = RetryPolicy(backoff=0.5, max_backoff=20.0)
    for attempt, full in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0)):
        for _ in range(20):
            assert full * 0.5 <= policy.delay(attempt) <= full
    assert all(policy.delay(12) <= 20.0 for _ in range(20))


class _Shell:
    """What get_ipython() gives: a terminal shell, or (with a kernel) a kernel's."""

    def __init__(self, kernel: object = None) -> None:
        self.kernel = kernel


def _ipython_with(monkeypatch: pytest.MonkeyPatch, shell: _Shell | None) -> None:
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))


def test_no_ipython_loaded_means_no_shell_and_asking_does_not_load_it(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert ipython_shell() is None and kernel_shell() is None and not in_kernel()
    assert "IPython" not in sys.modules


def test_a_terminal_shell_is_a_shell_but_not_a_kernel(monkeypatch):
    terminal = _Shell()
    _ipython_with(monkeypatch, terminal)
    assert ipython_shell() is terminal
    assert kernel_shell() is None and not in_kernel()


def test_a_kernels_shell_is_both(monkeypatch):
    kernel = _Shell(kernel=object())
    _ipython_with(monkeypatch, kernel)
    assert ipython_shell() is kernel is kernel_shell()
    assert in_kernel()


def test_ipython_loaded_without_a_running_shell_is_no_shell(monkeypatch):
    _ipython_with(monkeypatch, None)
    assert ipython_shell() is None and not in_kernel()


@pytest.mark.parametrize(
    ("engine", "stand_in"),
    [
        ("preview", True),  # the engine's name
        ("preview (offline stand-in, not FLUX)", True),  # the label the server gives
        ("flux2-klein", False),
        ("flux2-klein (FLUX.2 Klein through diffusers)", False),
        (None, False),  # another server: no local engine known
        ("", False),
    ],
)
def test_the_stand_in_is_known_by_its_name_or_its_label(engine, stand_in):
    assert is_stand_in(engine) is stand_in
