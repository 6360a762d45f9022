"""One exception tree for everything flux-nb raises; every message ends in what to do next."""

from __future__ import annotations


class FluxError(Exception):
    """Root of every error flux-nb raises on purpose. Its message is one line,
    fit for a notebook."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message
        if hint is not None:
            self.hint = hint
        text = message if not self.hint else f"{message} {self.hint}"
        super().__init__(text)


class ValidationError(FluxError, ValueError):
    """A parameter is missing, unknown or out of range; raised before anything is sent."""

    def __init__(self, message: str, *, field: str | None = None, hint: str | None = None):
        self.field = field
        super().__init__(message, hint=hint)


class CostLimitError(FluxError):
    """A cell would cost more than FluxMagics.max_cell_cost; nothing was sent."""


class InputImageError(ValidationError):
    """An input image cannot be read, decoded or found."""


class ApiError(FluxError):
    """The API answered with an error status."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None):
        self.status = status
        super().__init__(message, hint=hint)


class AuthError(ApiError):
    """401/403: the API key is missing, wrong or lacks rights."""

    hint = "Check OXEN_API_KEY (or run %flux backend hosted to enter it again)."


class CreditsError(ApiError):
    """402: the account has no credits left."""

    hint = "Add credits to your Oxen.ai account, then run again."


class NotFoundError(ApiError):
    """404: the generation, model or file does not exist."""

    hint = "Check the id; generations from another account or server are not visible here."


class BadRequestError(ApiError):
    """400/422 and other 4xx: the server refused the request's content."""

    hint = "Fix the request as the message says, then run again."


class RateLimitError(ApiError):
    """429 after every retry: too many requests."""

    hint = "Wait a minute, or send fewer generations at once."

    def __init__(self, message: str, *, status: int | None = 429, retry_after: float | None = None):
        self.retry_after = retry_after
        super().__init__(message, status=status)


class ServerError(ApiError):
    """5xx after every retry: the API is failing."""

    hint = "The service is having trouble: try again in a few minutes."


class NetworkError(FluxError):
    """The server could not be reached, or a call timed out, after every retry."""

    hint = "Check your network and FLUX_NB_BASE_URL, or unset OXEN_API_KEY to use the local server."


class GenerationFailed(FluxError):
    """The generation ended in status 'failed' on the server."""

    hint = "Change the recipe as the reason says, or try again."


class GenerationCancelled(FluxError):
    """The generation was cancelled before it finished."""

    hint = "Call .reproduce() to run it again."


class StorageError(FluxError):
    """A result could not be written to the output folder; the image is kept in memory."""

    hint = "Free some space or set FLUX_NB_OUTPUT_DIR to a writable folder, then call .save()."


__all__ = [
    "FluxError",
    "ValidationError",
    "InputImageError",
    "ApiError",
    "AuthError",
    "CreditsError",
    "NotFoundError",
    "BadRequestError",
    "RateLimitError",
    "ServerError",
    "NetworkError",
    "GenerationFailed",
    "GenerationCancelled",
    "StorageError",
]
