"""Authorization server issuer identification on the callback (RFC 9207 §2.3, §2.4).

Defends against mix-up attacks (RFC 9700 §4.4): the ``iss`` in the authorization response must
equal the issuer of the authorization server the request was sent to, by simple string
comparison (RFC 3986 §6.2.1), before the code goes anywhere.
"""

from __future__ import annotations

from tokenbroker.errors import IssuerMismatch


def check_callback_issuer(iss: str | None, *, expected_issuer: str | None, required: bool) -> None:
    """Raise IssuerMismatch unless the callback's ``iss`` is acceptable.

    ``required`` is true when the provider advertises
    ``authorization_response_iss_parameter_supported`` (RFC 9207 §3).
    """
    if iss is None:
        if required:
            raise IssuerMismatch(
                "authorization response lacks 'iss' although the provider advertises it"
            )
        return
    if expected_issuer is None:
        raise IssuerMismatch("authorization response has 'iss' but no issuer is known")
    if iss != expected_issuer:
        raise IssuerMismatch("authorization response 'iss' does not match the expected issuer")
