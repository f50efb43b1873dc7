"""ID Token validation for the authorization code flow (OpenID Connect Core 1.0 §2, §3.1.3.7).

Signature verification, key selection and the registered-claim checks are joserfc's
(RFC 7515, RFC 7517, RFC 7519 §4.1); this module chooses the rules: asymmetric algorithms only
(``none`` and ``HS*`` are refused: HMAC would need the client secret as key, and a JWKS must
never supply one), ``iss`` exact, ``aud`` containing the client, ``azp`` equal to the client
when present or when there are several audiences, ``exp``/``iat`` against the caller's ``now``
(epoch seconds) with ``leeway``, and ``nonce`` equal when one was sent. Errors say which check
failed, never the token.
"""

from __future__ import annotations

import hmac
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from joserfc import jws, jwt
from joserfc.errors import ClaimError, JoseError, SecurityWarning
from joserfc.jwk import KeySet

from tokenbroker.errors import InvalidIdToken

DEFAULT_ALGS: Final = ("RS256", "ES256", "PS256", "EdDSA")
MAX_ID_TOKEN_CHARS: Final = 64 * 1024


@dataclass(frozen=True)
class IdTokenClaims:
    """The validated claims the broker uses, plus all claims in ``raw``."""

    sub: str
    email: str | None
    email_verified: bool | None
    name: str | None
    raw: Mapping[str, Any]


def _header(id_token: str) -> Mapping[str, Any]:
    if not isinstance(id_token, str) or len(id_token) > MAX_ID_TOKEN_CHARS:
        raise InvalidIdToken("ID token is not a string of acceptable size")
    try:
        return jws.extract_compact(id_token.encode("ascii")).headers()
    except (JoseError, ValueError, UnicodeError):
        raise InvalidIdToken("ID token is not a well-formed JWS") from None


def _is_refused_alg(alg: str) -> bool:
    return alg.lower() == "none" or alg.upper().startswith("HS")


def _key_set(jwks: Mapping[str, Any]) -> KeySet:
    keys = jwks.get("keys")
    if not isinstance(keys, list):
        raise InvalidIdToken("JWKS has no 'keys' list")
    public = [k for k in keys if isinstance(k, dict) and k.get("kty") != "oct"]
    try:
        return KeySet.import_key_set({"keys": public})
    except (JoseError, ValueError, TypeError):
        raise InvalidIdToken("JWKS holds no usable public key") from None


def header_kid(id_token: str) -> str | None:
    """The ``kid`` of the token's protected header, if any (read before verification)."""
    kid = _header(id_token).get("kid")
    return kid if isinstance(kid, str) else None


def unknown_kid(id_token: str, jwks: Mapping[str, Any]) -> bool:
    """True when the token names a ``kid`` absent from ``jwks`` (the caller may re-fetch it)."""
    kid = _header(id_token).get("kid")
    if not isinstance(kid, str):
        return False
    keys = jwks.get("keys")
    known = {k.get("kid") for k in keys if isinstance(k, dict)} if isinstance(keys, list) else set()
    return kid not in known


def _verify(id_token: str, keys: KeySet, algs: Sequence[str], alg: str) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():
            if alg == "EdDSA":  # joserfc flags it as deprecated by RFC 9864; still secure
                warnings.simplefilter("ignore", SecurityWarning)
            token = jwt.decode(id_token, keys, algorithms=list(algs))
    except JoseError as err:
        raise InvalidIdToken(f"ID token signature check failed ({err.error})") from None
    except (ValueError, TypeError):
        raise InvalidIdToken("ID token signature check failed") from None
    return dict(token.claims)


def _check_claims(
    claims: dict[str, Any], *, issuer: str, client_id: str, now: int, leeway: int
) -> None:
    registry = jwt.JWTClaimsRegistry(
        now=now,
        leeway=leeway,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": client_id},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
    )
    try:
        registry.validate(claims)
    except ClaimError as err:
        raise InvalidIdToken(f"ID token claim {err.claim!r} failed: {err.description}") from None
    except JoseError as err:
        raise InvalidIdToken(f"ID token claim check failed ({err.error})") from None
    aud = claims["aud"]
    azp = claims.get("azp")
    if isinstance(aud, list) and len(aud) > 1 and azp is None:
        raise InvalidIdToken("ID token has several audiences but no 'azp'")
    if azp is not None and azp != client_id:
        raise InvalidIdToken("ID token 'azp' is not this client")


def validate_id_token(
    id_token: str,
    *,
    jwks: Mapping[str, Any],
    issuer: str,
    client_id: str,
    nonce: str | None,
    now: int,
    leeway: int = 60,
    allowed_algs: Sequence[str] = DEFAULT_ALGS,
) -> IdTokenClaims:
    """Verify ``id_token`` against ``jwks`` (a JWKS dict) and the OIDC Core §3.1.3.7 rules.

    ``now`` is the current time in epoch seconds. Raises InvalidIdToken with the reason.
    """
    alg = _header(id_token).get("alg")
    algs = [a for a in allowed_algs if not _is_refused_alg(a)]
    if not isinstance(alg, str) or alg not in algs:
        raise InvalidIdToken("ID token 'alg' is not allowed")
    claims = _verify(id_token, _key_set(jwks), algs, alg)
    _check_claims(claims, issuer=issuer, client_id=client_id, now=now, leeway=leeway)
    if nonce is not None:
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
            raise InvalidIdToken("ID token 'nonce' does not match the request")
    email = claims.get("email")
    verified = claims.get("email_verified")
    if isinstance(verified, str) and verified in ("true", "false"):
        verified = verified == "true"  # some providers send the boolean as a string
    name = claims.get("name")
    return IdTokenClaims(
        sub=claims["sub"],
        email=email if isinstance(email, str) else None,
        email_verified=verified if isinstance(verified, bool) else None,
        name=name if isinstance(name, str) else None,
        raw=MappingProxyType(claims),
    )
