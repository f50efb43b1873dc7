"""The error tree. Every error carries a stable ``code``; HTTP status and JSON live at the edge.

Messages never contain a token, secret, code or verifier: callers build them from names and ids.
"""

from __future__ import annotations


class TokenBrokerError(Exception):
    """Root of every error tokenbroker raises on purpose."""

    code: str = "internal_error"
    status: int = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(TokenBrokerError):
    """The configuration is missing, malformed or unsafe; the broker refuses to start."""

    code = "config_error"


class KeyError_(TokenBrokerError):
    """A key file or key-encryption key is missing, wrong or unusable."""

    code = "key_error"


class BadRequest(TokenBrokerError):
    code = "invalid_request"
    status = 400


class NotFound(TokenBrokerError):
    code = "not_found"
    status = 404


class Unauthorized(TokenBrokerError):
    code = "unauthorized"
    status = 401


class Conflict(TokenBrokerError):
    code = "conflict"
    status = 409


class UnknownProvider(NotFound):
    code = "unknown_provider"


class InvalidState(BadRequest):
    """Forged, reused, expired or unbound ``state`` on the OAuth callback."""

    code = "invalid_state"


class UnsafeRedirect(BadRequest):
    code = "invalid_return_to"


class ProtocolError(TokenBrokerError):
    """An authorization server answered something the protocol forbids (mix-up, bad ID token...)."""

    code = "protocol_error"
    status = 400


class PKCEUnsupported(ProtocolError):
    code = "pkce_unsupported"


class IssuerMismatch(ProtocolError):
    code = "issuer_mismatch"


class InvalidIdToken(ProtocolError):
    code = "invalid_id_token"


class ProviderError(TokenBrokerError):
    """The provider returned an OAuth error (RFC 6749 §5.2 / §4.1.2.1).

    ``oauth_error`` is the provider's code; ``description`` its text, which is never a secret.
    """

    code = "provider_error"
    status = 502

    def __init__(self, message: str, *, oauth_error: str, description: str | None = None) -> None:
        super().__init__(message)
        self.oauth_error = oauth_error
        self.description = description


class ProviderUnavailable(TokenBrokerError):
    """Network error, timeout or 5xx talking to a provider."""

    code = "provider_unavailable"
    status = 503


class ProviderTimeout(ProviderUnavailable):
    """The request was sent and no answer came in time: its outcome at the provider is unknown."""


class DiscoveryError(TokenBrokerError):
    code = "discovery_failed"
    status = 503


class NoRefreshToken(TokenBrokerError):
    code = "no_refresh_token"
    status = 400


class AccountMismatch(TokenBrokerError):
    code = "account_mismatch"
    status = 409


class CredentialCorrupt(TokenBrokerError):
    """A sealed record failed to open (tampered, moved to another row, or unknown key)."""

    code = "credential_corrupt"
    status = 500


class StoreUnavailable(TokenBrokerError):
    code = "store_unavailable"
    status = 503


class NeedsReauth(TokenBrokerError):
    """The connection needs its user again (refresh token revoked, expired or rotated away)."""

    code = "needs_reauth"
    status = 409


class ProviderMisconfigured(TokenBrokerError):
    """The token endpoint rejected the client itself (invalid_client): the operator must act."""

    code = "provider_misconfigured"
    status = 503


class RefreshUnavailable(ProviderUnavailable):
    """A refresh could not complete in time (provider down, slow, or rate limiting)."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimitUnavailable(TokenBrokerError):
    """The shared rate-limit store (Redis) does not answer and the limiter fails closed."""

    code = "store_unavailable"
    status = 503


class InvalidPath(BadRequest):
    """A gateway path or query that could leave the provider's base path (SECURITY.md D4, D6)."""

    code = "invalid_path"


class InvalidHeader(BadRequest):
    """An agent-supplied header with CR, LF or NUL, or a malformed name (RFC 9110 §5.5; D6)."""

    code = "invalid_header"


class DestinationNotAllowed(TokenBrokerError):
    """An upstream address the SSRF guard refuses (OWASP SSRF; RFC 9728 §7.7; D1, D2)."""

    code = "destination_not_allowed"
    status = 403


class AuthorizationRequired(TokenBrokerError):
    """No usable connection: the agent hands ``authorization_url`` to its user."""

    code = "authorization_required"
    status = 403

    def __init__(self, message: str, *, authorization_url: str | None, reason: str) -> None:
        super().__init__(message)
        self.authorization_url = authorization_url
        self.reason = reason


class InsufficientGrant(TokenBrokerError):
    """The user's grant does not cover this request; ``missing`` says what would."""

    code = "insufficient_grant"
    status = 403

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        operation: str | None,
        scopes: tuple[str, ...],
        consent_url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.operation = operation
        self.scopes = scopes
        self.consent_url = consent_url


class BodyTooLarge(TokenBrokerError):
    code = "body_too_large"
    status = 413


class RateLimited(TokenBrokerError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamError(TokenBrokerError):
    code = "upstream_error"
    status = 502


class UpstreamTimeout(TokenBrokerError):
    code = "upstream_timeout"
    status = 504
