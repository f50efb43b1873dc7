"""PKCE (RFC 7636): Appendix B vector, verifier quality, S256-only policy."""

from __future__ import annotations

import re

import pytest

from tokenbroker.errors import PKCEUnsupported, ProtocolError
from tokenbroker.protocol.rfc7636 import new_code_verifier, require_s256, s256_challenge

UNRESERVED = re.compile(r"[A-Za-z0-9\-._~]+")


def test_appendix_b_vector() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_10k_verifiers_unique_in_charset_and_length() -> None:
    verifiers = [new_code_verifier() for _ in range(10_000)]
    assert len(set(verifiers)) == len(verifiers)
    for v in verifiers:
        assert 43 <= len(v) <= 128
        assert UNRESERVED.fullmatch(v)


def test_verifier_has_256_bits() -> None:
    # 43 base64url characters carry 258 bits; the generator draws 32 random octets.
    assert len(new_code_verifier()) >= 43


def test_challenge_is_unpadded_base64url() -> None:
    challenge = s256_challenge(new_code_verifier())
    assert len(challenge) == 43
    assert "=" not in challenge
    assert re.fullmatch(r"[A-Za-z0-9_-]+", challenge)


@pytest.mark.parametrize("bad", ["", "short", "a" * 42, "a" * 129, "a" * 42 + " ", "é" * 43])
def test_malformed_verifier_refused(bad: str) -> None:
    with pytest.raises(ProtocolError):
        s256_challenge(bad)


def test_no_metadata_is_fine() -> None:
    require_s256(None, "github")


def test_s256_listed_is_fine() -> None:
    require_s256(["plain", "S256"], "acme")


@pytest.mark.parametrize("methods", [[], ["plain"], ["s256"]])
def test_without_s256_refused_naming_provider(methods: list[str]) -> None:
    with pytest.raises(PKCEUnsupported, match="acme") as info:
        require_s256(methods, "acme")
    assert info.value.code == "pkce_unsupported"
