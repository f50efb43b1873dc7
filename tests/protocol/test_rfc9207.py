"""Issuer identification on the callback (RFC 9207 §2.4)."""

from __future__ import annotations

import pytest

from tokenbroker.errors import IssuerMismatch
from tokenbroker.protocol.rfc9207 import check_callback_issuer

ISSUER = "https://as.example.com"


def test_matching_iss_accepted() -> None:
    check_callback_issuer(ISSUER, expected_issuer=ISSUER, required=True)
    check_callback_issuer(ISSUER, expected_issuer=ISSUER, required=False)


def test_absent_iss_accepted_when_not_advertised() -> None:
    check_callback_issuer(None, expected_issuer=ISSUER, required=False)
    check_callback_issuer(None, expected_issuer=None, required=False)


@pytest.mark.parametrize(
    "iss",
    [
        "https://other.example.com",
        ISSUER + "/",
        "HTTPS://as.example.com",
        "https://AS.example.com",
        "https://as.example.com:443",
        "",
    ],
)
def test_mismatch_by_simple_string_comparison(iss: str) -> None:
    with pytest.raises(IssuerMismatch):
        check_callback_issuer(iss, expected_issuer=ISSUER, required=False)


def test_absent_but_advertised_refused() -> None:
    with pytest.raises(IssuerMismatch, match="lacks"):
        check_callback_issuer(None, expected_issuer=ISSUER, required=True)


def test_present_without_known_issuer_refused() -> None:
    with pytest.raises(IssuerMismatch, match="no issuer is known"):
        check_callback_issuer(ISSUER, expected_issuer=None, required=False)
