"""Passwords, access tokens and refresh-token secrets.

Access tokens are short-lived signed JWTs that any service checks without a
database round trip. Refresh tokens are opaque random strings; only their
SHA-256 is stored, so a leaked table cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any

import jwt
import regex
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from petpal.platform.db import utcnow
from petpal.platform.ids import is_valid_id

# Argon2id at OWASP's first recommended setting (19 MiB, 2 passes, one lane):
# about a tenth of argon2-cffi's default cost (64 MiB, 3 passes, 4 lanes), so
# a log-in costs tens of milliseconds of CPU instead of a fifth of a second,
# while each guess still needs 19 MiB of memory. Hashes made with other
# settings still verify (their settings are stored in them).
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified against when the account does not exist, so that a log-in for an
# unknown name costs the same time as one with a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
ALGORITHM = "HS256"
AUDIENCE = "petpal"


def stable_password(password: str) -> str:
    """``password`` in NFKC form: what is hashed, judged and compared.

    One password can reach the server as several strings: ``é`` composed or
    as ``e`` and a combining accent (one keyboard or the other, a password
    manager), full-width letters from an East Asian input method, a
    ligature. NIST SP 800-63B (5.1.1.2) asks a verifier to normalise with
    NFKC or NFKD before hashing, so that each spelling is the same password.
    """
    return unicodedata.normalize("NFKC", password)


def hash_password(password: str) -> str:
    return _hasher.hash(stable_password(password))


# A password's first 32 characters are what zxcvbn judges (the rest can
# only make it harder to guess). Its l33t matcher's time grows faster than
# the length: 72 symbols that each read as a letter (``4@8({[<3…``) took
# 1.2 s of CPU here and 4 s on a loaded machine, per sign-up (found by a
# trial); 32 take 0.3 s at worst. Four or five words still fit.
_JUDGED_LENGTH = 32


def _personal_inputs(personal: Sequence[str]) -> list[str]:
    """What a password must not be made of: each text as given and in NFKC
    form (a display name typed in full width, found by a trial), and an
    e-mail address's local part on its own (``rex@example.org`` with the
    password ``rex…``)."""
    inputs: dict[str, None] = {}
    for text in personal:
        for form in (text, stable_password(text)):
            inputs[form] = None
            local, at, _ = form.rpartition("@")
            if at and local:
                inputs[local] = None
    return [text for text in inputs if text]


_MADE_OF_DETAILS = (
    "It is made of the account's username, e-mail address or display name."
)

# Words an attacker of this site tries first, as they try the account's own.
_SITE_WORDS = ("petpal",)

# What joins the words of a password: spaces, hyphens, underscores, dots,
# commas and slashes. zxcvbn counts each run as a part of its own, and
# three parts cost an attacker at least 10^8 guesses in its model, so
# ``alexis 2024`` scored as strong as four random words, where
# ``alexis2024`` was refused (found by a trial). Other symbols stay: in a
# random password they are what makes it hard to guess.
_JOINERS = regex.compile(r"[\s\-_.,/]+")
# Account details shorter than this are not taken out of a password.
_DETAIL_MIN_LENGTH = 3


def _details(personal: Sequence[str]) -> list[str]:
    """The words of the account's details (of an address, its local part)
    and the site's name, longest first, case-folded."""
    words: set[str] = set(_SITE_WORDS)
    for text in personal:
        text = stable_password(text).casefold()
        local, at, _ = text.rpartition("@")
        for part in (local if at else text, *_JOINERS.split(local if at else text)):
            joined = _JOINERS.sub("", part)
            if len(joined) >= _DETAIL_MIN_LENGTH:
                words.add(joined)
    return sorted(words, key=len, reverse=True)


def _readings(password: str, details: Sequence[str]) -> list[tuple[str, bool]]:
    """``password`` as an attacker tries it: as typed; with its joiners
    taken out; and with the account's details taken out too, (the reading,
    whether it is what is left once the details are out). Nothing left of
    the last is no reading: the password is all details."""
    readings = [(password, False)]
    joined = _JOINERS.sub("", password)
    if joined and joined != password:
        readings.append((joined, False))
    rest = joined.casefold()
    for word in details:
        rest = rest.replace(word, "")
    if rest != joined.casefold():
        readings.append((rest, True))
    return readings


def password_weakness(
    password: str, personal: Sequence[str], minimum: int
) -> str | None:
    """Why ``password`` is too easy to guess, or None if it is not.

    zxcvbn scores it 0 to 4 by the guesses an attacker would need, knowing
    common passwords, words, names, keyboard runs, dates and ``personal``
    (the account's username and e-mail address, as typed and as stored, and
    its display name: see ``_personal_inputs``), and the site's name; under
    ``minimum`` it is refused with zxcvbn's own advice. It is judged as
    typed, without its spaces and punctuation, and without the account's
    details: what is left of ``rover smith 2024`` once ``Rover Smith`` is
    taken out is a year. Length and character classes alone say little:
    ``Password1!`` passes such rules, and four common words pass none of
    them yet are strong.
    """
    if minimum <= 0:
        return None
    # Imported on first use: 0.4 s and 12 MB of word lists, which only the
    # processes that set passwords need.
    from zxcvbn import zxcvbn

    # Judged as it is hashed: full-width ＰＡＳＳＷＯＲＤ is "PASSWORD".
    judged_text = stable_password(password)[:_JUDGED_LENGTH]
    inputs = _personal_inputs([*personal, *_SITE_WORDS])
    for reading, is_rest in _readings(judged_text, _details(personal)):
        if not reading:
            return f"this password is too easy to guess. {_MADE_OF_DETAILS}"
        judged = zxcvbn(reading, user_inputs=inputs)
        if judged["score"] >= minimum:
            continue
        feedback = judged["feedback"]
        # zxcvbn says nothing of its own when the account's details are
        # what make it weak; the detail said only "add another word" (a
        # trial).
        own = is_rest or any(
            match.get("dictionary_name") == "user_inputs"
            for match in judged["sequence"]
        )
        advice = " ".join(
            text
            for text in (
                _MADE_OF_DETAILS if own else "",
                feedback["warning"],
                *feedback["suggestions"],
            )
            if text
        )
        return f"this password is too easy to guess. {advice}".strip()
    return None


class Verdict(Enum):
    WRONG = "wrong"
    RIGHT = "right"
    # Right, as hashed before passwords were normalised (or with settings
    # since changed): hash it again, now that the password is known.
    RIGHT_REHASH = "right_rehash"

    def __bool__(self) -> bool:
        return self is not Verdict.WRONG


def _matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def verify_password(password_hash: str | None, password: str) -> Verdict:
    """Whether ``password`` is the one ``password_hash`` was made from.

    The stable (NFKC) form is compared; a hash made before passwords were
    normalised was made from the string as typed, so that string is tried
    too when it differs, and a match asks for the hash to be made again.
    """
    # An unknown account is checked against a dummy hash, the same number
    # of times as a known one with a wrong password: one, or two when the
    # password changes under NFKC (else the count would tell them apart).
    target = password_hash or _DUMMY_HASH
    stable = stable_password(password)
    if _matches(target, stable) and password_hash:
        if _hasher.check_needs_rehash(password_hash):
            return Verdict.RIGHT_REHASH
        return Verdict.RIGHT
    if stable != password and _matches(target, password) and password_hash:
        return Verdict.RIGHT_REHASH
    return Verdict.WRONG


@dataclass(frozen=True)
class AccessClaims:
    account_id: str
    username: str


def issue_access_token(secret: str, claims: AccessClaims, ttl_seconds: int) -> str:
    now = utcnow()
    payload = {
        "sub": claims.account_id,
        "usr": claims.username,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + timedelta(seconds=ttl_seconds),
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


# Checking a token's signature was a tenth of a warm feed page's CPU; a token
# that passed is remembered, with its expiry, so each is checked once. The
# key holds the secret too: a token is never trusted under another secret.
_VERIFIED_MAX = 50_000
_verified: dict[tuple[str, str], tuple[AccessClaims, float]] = {}


def read_access_token(secret: str, token: str) -> AccessClaims | None:
    """The claims of a valid, unexpired access token signed with ``secret``."""
    remembered = _verified.get((secret, token))
    if remembered is not None:
        known, known_until = remembered
        if time.time() < known_until:  # as PyJWT: expired from ``exp`` on
            return known
        del _verified[(secret, token)]
        return None
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            options={"require": ["sub", "exp", "aud"]},
        )
    except jwt.PyJWTError:
        return None
    claims = _claims_of(payload)
    expires_at = _expiry_of(payload)
    if claims is None or expires_at is None:
        return None
    if len(_verified) >= _VERIFIED_MAX:
        del _verified[next(iter(_verified))]  # the oldest
    _verified[(secret, token)] = (claims, expires_at)
    return claims


# Far past any expiry issue_access_token writes (ours are minutes away),
# and every whole number below it is exact as a float. PyJWT takes an
# ``exp`` of any size, or a string of digits; a 400-digit one overflowed
# float() into a 500 on every route (found by a trial).
_LATEST_EXPIRY = 2**53


def _expiry_of(payload: dict[str, Any]) -> float | None:
    expiry = payload.get("exp")
    if isinstance(expiry, bool) or not isinstance(expiry, int | float):
        return None
    if not 0 < expiry < _LATEST_EXPIRY:
        return None
    return float(expiry)


def _claims_of(payload: dict[str, Any]) -> AccessClaims | None:
    """The claims if they are as ``issue_access_token`` writes them: an
    account id, and a username that is text. A token signed with our key
    but made elsewhere (a key that leaked to a tool, a test) held a lone
    surrogate for an account id, and every request with it was a 500
    (found by a trial)."""
    subject, username = payload.get("sub"), payload.get("usr")
    if not isinstance(subject, str) or not is_valid_id(subject):
        return None
    if not isinstance(username, str) or len(username) > 64:
        return None
    try:
        username.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return None
    return AccessClaims(account_id=subject, username=username)


def new_refresh_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def sign(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()[:16]


def signature_matches(secret: str, message: bytes, signature: bytes) -> bool:
    return hmac.compare_digest(sign(secret, message), signature)
