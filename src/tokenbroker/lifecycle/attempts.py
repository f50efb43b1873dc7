"""How one refresh attempt failed when it may be retried (the refresher backs off and tries
again within ``[refresh] wait_seconds``); failures that end the attempt for good are typed
errors."""

from __future__ import annotations


class RetryableFailure(Exception):
    """The attempt failed for now (5xx, 429, malformed answer, lost lease); ``error`` names
    why, ``retry_after`` is the provider's own wait, if it gave one."""

    def __init__(self, error: str, retry_after: float | None) -> None:
        super().__init__(error)
        self.error = error
        self.retry_after = retry_after


class UncertainFailure(RetryableFailure):
    """The request was sent but no answer came: the provider may still rotate the token.

    Re-sending the same refresh token at once could race the first request and trip reuse
    detection (which revokes the whole token family), so the next attempt waits until the
    first one has surely finished at the provider.
    """


def retry_after_seconds(value: str | None) -> float | None:
    """A token endpoint's ``Retry-After`` in seconds (0 to 300), if it gave a number."""
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), 300.0)
    except ValueError:
        return None
