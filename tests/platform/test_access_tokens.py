"""Access tokens: checked once, remembered until they expire, never across secrets."""

from __future__ import annotations

import time

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
