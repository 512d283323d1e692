"""Access tokens: checked once, remembered until they expire, never across secrets."""

from __future__ import annotations

import time

import jwt
import pytest

from petpal.platform import security
from petpal.platform.security import (
    AccessClaims,
    issue_access_token,
    read_access_token,
)

SECRET = "a-secret-that-is-long-enough-for-hs256-signing"
OTHER = "another-secret-that-is-long-enough-for-hs256-too"
CLAIMS = AccessClaims(account_id="01HQ99Z96R2XXPF07BXDRCP60Y", username="rex")


def test_a_remembered_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    token = issue_access_token(SECRET, CLAIMS, ttl_seconds=60)
    assert read_access_token(SECRET, token) == CLAIMS
    assert read_access_token(SECRET, token) == CLAIMS  # remembered
    later = time.time() + 61
    monkeypatch.setattr(security.time, "time", lambda: later)
    assert read_access_token(SECRET, token) is None


def test_a_token_is_never_trusted_under_another_secret() -> None:
    token = issue_access_token(SECRET, CLAIMS, ttl_seconds=60)
    assert read_access_token(SECRET, token) == CLAIMS
    assert read_access_token(OTHER, token) is None
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    assert read_access_token(SECRET, tampered) is None


def test_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(security, "_VERIFIED_MAX", 3)
    monkeypatch.setattr(security, "_verified", {})
    tokens = [issue_access_token(SECRET, CLAIMS, ttl_seconds=60) for _ in range(5)]
    for token in tokens:
        assert read_access_token(SECRET, token) == CLAIMS
    assert len(security._verified) == 3
    assert read_access_token(SECRET, tokens[0]) == CLAIMS  # checked again


@pytest.mark.parametrize(
    ("subject", "username"),
    [
        ("\ud800", "rex"),
        ("not-an-id", "rex"),
        (12345, "rex"),
        ("01HQ99Z96R2XXPF07BXDRCP60Y", "\udfffrex"),
        ("01HQ99Z96R2XXPF07BXDRCP60Y", None),
        ("01HQ99Z96R2XXPF07BXDRCP60Y", "r" * 65),
    ],
    ids=["surrogate", "not-an-id", "number", "surrogate-name", "no-name", "long"],
)
def test_a_token_signed_with_our_key_but_malformed_is_refused(
    subject: object, username: object
) -> None:
    """Found by a trial: a token made with the server's key elsewhere, its
    account id a lone surrogate, made every request a 500."""
    now = int(time.time())
    token = jwt.encode(
        {
            "sub": subject,
            "usr": username,
            "aud": security.AUDIENCE,
            "iat": now,
            "exp": now + 60,
        },
        SECRET,
        algorithm=security.ALGORITHM,
    )
    assert read_access_token(SECRET, token) is None


@pytest.mark.parametrize(
    "expiry",
    [10**400, 2**53, "9999999999", -1, 1e300],
    ids=["400-digits", "2-to-53", "digit-string", "negative", "huge-float"],
)
def test_a_token_with_an_expiry_we_never_write_is_refused(expiry: object) -> None:
    """Found by a trial: a 400-digit ``exp``, which PyJWT takes, overflowed
    the float the token's memory keeps, and every route answered 500."""
    token = jwt.encode(
        {
            "sub": CLAIMS.account_id,
            "usr": CLAIMS.username,
            "aud": security.AUDIENCE,
            "exp": expiry,
        },
        SECRET,
        algorithm=security.ALGORITHM,
    )
    assert read_access_token(SECRET, token) is None
