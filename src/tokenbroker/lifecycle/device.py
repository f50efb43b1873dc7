"""The RFC 8628 device authorization grant for users of headless agents.

An application starts a device session for one of its users (§3.1-3.2: a ``user_code`` to
enter at ``verification_uri``); the broker polls the provider (§3.4-3.5) from a background
loop on every replica, holds the resulting tokens as pending, and stores the connection only
once the application confirms its signed-in user is the initiating one, after showing that
user the provider account (device-code phishing, §5.4). The pieces live in
:mod:`~tokenbroker.lifecycle.device_session` (start, confirm) and
:mod:`~tokenbroker.lifecycle.device_poll` (polling).
"""

from __future__ import annotations

import asyncio
import logging

from tokenbroker.errors import TokenBrokerError
from tokenbroker.lifecycle.device_poll import poll_due
from tokenbroker.lifecycle.device_session import (
    CONNECTED,
    DENIED,
    EXPIRED,
    FAILED,
    PENDING,
    PENDING_CONFIRMATION,
    DeviceFlowUnsupported,
    DeviceSession,
    confirm,
    require,
    start,
)
from tokenbroker.services import Services

__all__ = [
    "CONNECTED",
    "DENIED",
    "EXPIRED",
    "FAILED",
    "PENDING",
    "PENDING_CONFIRMATION",
    "DeviceFlowUnsupported",
    "DeviceSession",
    "confirm",
    "device_poller",
    "poll_due",
    "require",
    "start",
]

log = logging.getLogger("tokenbroker.device")


async def device_poller(svc: Services, owner: str, interval: float = 1.0) -> None:
    """Polls due device sessions every ``interval`` seconds until cancelled.

    ``owner`` names this replica in the claim columns; each process needs its own.
    """
    while True:
        try:
            await poll_due(svc, owner=owner)
        except TokenBrokerError as exc:
            log.warning("device poll sweep failed: %s", exc.message)
        except Exception:
            log.exception("device poll sweep failed")
        await asyncio.sleep(interval)
