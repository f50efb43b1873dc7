"""The Python SDK agents use to call APIs through tokenbroker (sync and async)."""

from __future__ import annotations

from tokenbroker.client.aio import AsyncBroker
from tokenbroker.client.errors import (
    AuthorizationRequired,
    BrokerError,
    BrokerUnavailable,
    InsufficientGrant,
    InvalidToken,
    ProviderUnavailable,
    RateLimited,
    error_from_response,
    parse_retry_after,
)
from tokenbroker.client.sync import Broker, proxy_url

__all__ = [
    "AsyncBroker",
    "AuthorizationRequired",
    "Broker",
    "BrokerError",
    "BrokerUnavailable",
    "InsufficientGrant",
    "InvalidToken",
    "ProviderUnavailable",
    "RateLimited",
    "error_from_response",
    "parse_retry_after",
    "proxy_url",
]
