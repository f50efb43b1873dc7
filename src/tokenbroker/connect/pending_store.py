"""Provider grants obtained outside the redirect flow (the RFC 8628 device grant).

The checks are :func:`tokenbroker.connect.exchange.check_tokens` (no nonce: none was sent);
storing is :func:`tokenbroker.connect.held.store_held_grant`.
"""

from __future__ import annotations

from tokenbroker.connect.exchange import ProviderGrant, check_tokens
from tokenbroker.connect.held import HeldGrant, store_held_grant
from tokenbroker.protocol.token_response import TokenResponse
from tokenbroker.providers.model import ProviderSpec
from tokenbroker.services import Services

__all__ = ["HeldGrant", "grant_from_tokens", "store_held_grant"]


async def grant_from_tokens(
    svc: Services,
    spec: ProviderSpec,
    tokens: TokenResponse,
    *,
    requested_scopes: tuple[str, ...],
    has_stored_refresh_token: bool,
) -> ProviderGrant:
    return await check_tokens(
        svc,
        spec,
        tokens,
        nonce=None,
        requested_scopes=requested_scopes,
        has_stored_refresh_token=has_stored_refresh_token,
    )
