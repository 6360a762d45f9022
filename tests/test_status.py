"""core/_status.py: one set of status names, which of them end a generation, and the API's
spellings."""

from __future__ import annotations

import typing

import pytest

from flux_nb.core import _status as status


def test_every_status_is_either_active_or_terminal_never_both():
    names = set(typing.get_args(status.Status))
    assert set(status.ACTIVE) | set(status.TERMINAL) == names
    assert not set(status.ACTIVE) & set(status.TERMINAL)
    assert (
        set(status.ENDED_BADLY) < set(status.TERMINAL)
        and status.SUCCEEDED not in status.ENDED_BADLY
    )


@pytest.mark.parametrize(
    "answer, ours",
    [
        ("succeeded", "succeeded"),
        ("SUCCEEDED", "succeeded"),
        ("canceled", "cancelled"),  # some answers spell it the American way
        ("Cancelled", "cancelled"),
        (None, ""),
        ("paused", "paused"),  # unknown ones pass through for the caller to refuse
    ],
)
def test_the_apis_spellings_become_ours(answer, ours):
    assert status.normalize(answer) == ours
