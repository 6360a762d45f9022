"""core/_errors.py: one tree, each message one line that ends in what to do next."""

from __future__ import annotations

import pytest

from flux_nb.core import _errors as errors


def test_every_public_error_is_a_flux_error():
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.FluxError), name


@pytest.mark.parametrize(
    "cls, words",
    [
        (errors.AuthError, "OXEN_API_KEY"),
        (errors.CreditsError, "credits"),
        (errors.StorageError, "FLUX_NB_OUTPUT_DIR"),
    ],
)
def test_a_class_hint_follows_the_message_on_the_same_line(cls, words):
    exc = cls("The server said no.")
    text = str(exc)
    assert text.startswith("The server said no. ") and words in text
    assert "\n" not in text
    assert exc.message == "The server said no."


def test_a_hint_given_replaces_the_class_hint():
    exc = errors.AuthError("Key refused.", hint="Enter the key again with %flux backend hosted.")
    assert str(exc) == "Key refused. Enter the key again with %flux backend hosted."


def test_a_validation_error_is_also_a_value_error_and_names_its_field():
    exc = errors.ValidationError("seed=-1 is out of range.", field="seed")
    assert isinstance(exc, ValueError) and exc.field == "seed"
    assert isinstance(
        errors.InputImageError("unreadable", field="input_image"), errors.ValidationError
    )


def test_api_errors_keep_the_status():
    assert errors.NotFoundError("gone", status=404).status == 404
    assert errors.RateLimitError("slow down", retry_after=2.5).status == 429
