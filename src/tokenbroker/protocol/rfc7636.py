"""Proof Key for Code Exchange, S256 only (RFC 7636 §4.1, §4.2, §7.2; RFC 9700 §2.1.1).

The verifier is 32 random octets from :mod:`secrets`, base64url-encoded without padding: 43
characters from the unreserved set, 256 bits of entropy (§4.1, §7.1). The ``plain`` method is
never produced (§7.2): a provider whose metadata omits S256 is refused.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Sequence
from typing import Final

from tokenbroker.errors import PKCEUnsupported, ProtocolError

VERIFIER_BYTES: Final = 32
_VERIFIER_RE: Final = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


def new_code_verifier() -> str:
    """A fresh high-entropy ``code_verifier`` (RFC 7636 §4.1): 43 unreserved characters."""
    return secrets.token_urlsafe(VERIFIER_BYTES)


def s256_challenge(verifier: str) -> str:
    """``BASE64URL(SHA256(ASCII(code_verifier)))`` without padding (RFC 7636 §4.2)."""
    if _VERIFIER_RE.fullmatch(verifier) is None:
        raise ProtocolError("code_verifier must be 43-128 unreserved characters (RFC 7636 §4.1)")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def require_s256(methods_supported: Sequence[str] | None, provider: str) -> None:
    """Refuse a provider whose metadata lists PKCE methods but not ``S256``.

    ``None`` means the provider publishes no metadata (e.g. GitHub): S256 is sent anyway.
    """
    if methods_supported is None:
        return
    if "S256" not in methods_supported:
        raise PKCEUnsupported(
            f"provider {provider!r} does not advertise PKCE S256 "
            "in code_challenge_methods_supported; refusing (plain is never used)"
        )
