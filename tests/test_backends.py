"""jobs/_backends.py: which server a session's work goes to, chosen from the arguments and
settings."""

from __future__ import annotations

import pytest

from flux_nb.core import _errors as errors
from flux_nb.core._config import HOSTED_BASE_URL, Settings
from flux_nb.jobs._backends import choose


def test_no_key_and_no_url_chooses_the_shared_embedded_server() -> None:
    first = choose(None, Settings(step_delay=0.0))
    again = choose("local", Settings(step_delay=0.0))
    assert first.backend == "local" and first.key is None and first.server is again.server
    assert first.url == first.server.url and "offline stand-in" in first.describe()


def test_a_key_chooses_the_hosted_api_and_never_shows_it() -> None:
    chosen = choose(None, Settings(), api_key="sk-secret-choice")
    assert (chosen.backend, chosen.url, chosen.server) == ("hosted", HOSTED_BASE_URL, None)
    assert "sk-secret-choice" not in repr(chosen) + chosen.describe()


def test_another_url_is_a_custom_server_that_may_go_without_a_key() -> None:
    chosen = choose(None, Settings(), base_url="http://127.0.0.1:9/")
    assert chosen.backend == "custom" and chosen.key is None
    assert chosen.describe() == f"flux-nb: using the Oxen-compatible server at {chosen.url}."


def test_the_hosted_api_without_a_key_and_an_unknown_backend_are_refused() -> None:
    with pytest.raises(errors.AuthError, match="needs a key"):
        choose("hosted", Settings())
    with pytest.raises(errors.ValidationError, match="allowed: local, hosted"):
        choose("cloud", Settings())
