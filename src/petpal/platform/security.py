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


# A password's first 24 characters are what zxcvbn judges, in each of its
# readings (the rest can only make it harder to guess). Its l33t matcher's
# time grows faster than the length: 72 symbols that each read as a letter
# (``4@8({[<3…``) took 1.2 s of CPU, per sign-up (found by a trial), and 32
# crafted ones 0.8 s (another); 24 take 0.26 s at worst. Four words fit.
_JUDGED_LENGTH = 24

# Words an attacker of this site tries first, as they try the account's own.
_SITE_WORDS = ("petpal",)

# What is not a letter or a digit: a separator, or a symbol.
_NOT_ALNUM = regex.compile(r"[^\p{L}\p{N}]+")
# A run of letters or of digits: the words of a detail (``zorblax99`` is
# ``zorblax`` and ``99``; ``Zorblax&Kitty``, ``zorblax+kitty@…`` are
# ``zorblax`` and ``kitty``).
_WORDS = regex.compile(r"\p{L}+|\p{N}+")
# Words of the account's details shorter than this are not taken out.
_DETAIL_MIN_LENGTH = 3


def _detail_texts(personal: Sequence[str]) -> list[str]:
    """Each detail as given and in NFKC form (a display name typed in full
    width, found by a trial), and an e-mail address's local part on its own
    (``rex@example.org`` with the password ``rex…``); the site's name."""
    texts: dict[str, None] = {}
    for text in (*personal, *_SITE_WORDS):
        for form in (text, stable_password(text)):
            texts[form] = None
            local, at, _ = form.rpartition("@")
            if at and local:
                texts[local] = None
    return [text for text in texts if text]


def _personal_inputs(texts: Sequence[str]) -> list[str]:
    """What zxcvbn is told a password must not be made of: the details, each
    also with its separators out (``Maya Lopez`` is ``mayalopez``) and word
    by word, so that its l33t matcher finds ``m4y4l0p3z`` too."""
    inputs: dict[str, None] = {}
    for text in texts:
        inputs[text] = None
        inputs[_NOT_ALNUM.sub("", text)] = None
        for word in _WORDS.findall(text):
            inputs[word] = None
    return [text for text in inputs if len(text) >= _DETAIL_MIN_LENGTH]


def _without_details(password: str, inputs: Sequence[str]) -> str | None:
    """``password`` with the words of the account's details (those of
    ``_personal_inputs`` made of letters and digits alone) taken out,
    whatever their case; None if it holds none."""
    words = {word.casefold() for word in inputs if not _NOT_ALNUM.search(word)}
    if not words:
        return None
    pattern = "|".join(regex.escape(word) for word in sorted(words, key=len)[::-1])
    rest = regex.sub(pattern, "", password, flags=regex.IGNORECASE)
    return rest if rest != password else None


# The site's name counts as the account's own (found by a trial: "petpal12"
# was said to be made of the account's details, which it was not).
_MADE_OF_DETAILS = (
    "It is made of the account's username, e-mail address or display name,"
    " or of this site's name."
)


def password_weakness(
    password: str, personal: Sequence[str], minimum: int
) -> str | None:
    """Why ``password`` is too easy to guess, or None if it is not.

    zxcvbn scores it 0 to 4 by the guesses an attacker would need, knowing
    common passwords, words, names, keyboard runs, dates, the account's
    details (``personal``: its username and e-mail address, as typed and as
    stored, and its display name) and the site's name; under ``minimum`` it
    is refused with zxcvbn's own advice. Length and character classes alone
    say little: ``Password1!`` passes such rules, and four common words pass
    none of them yet are strong.

    zxcvbn counts each character it reads as no pattern as a part of its
    own, and three parts cost at least 10^8 guesses in its model: a space
    or a ``#`` made ``alexis 2024`` as strong as four random words, where
    ``alexis2024`` was refused (found by two trials). So it is judged in
    more readings, as an attacker tries it: without the characters that are
    not letters or digits, which counts when zxcvbn finds the whole of what
    is left in its patterns (``dragon#dragon#dragon`` is a repeat; the
    letters of a random ``k#9Lp!2q`` are no pattern, and its symbols are
    what make it strong); and with the account's details taken out, when
    what is left must be strong on its own (``rover smith 2024`` for Rover
    Smith leaves a year; nothing left is weak).
    """
    if minimum <= 0:
        return None
    # Imported on first use: 0.4 s and 12 MB of word lists, which only the
    # processes that set passwords need.
    from zxcvbn import zxcvbn

    inputs = _personal_inputs(_detail_texts(personal))

    def weakness(reading: str, *, whole_patterns: bool) -> dict[str, Any] | None:
        judged: dict[str, Any] = zxcvbn(reading[:_JUDGED_LENGTH], user_inputs=inputs)
        if judged["score"] >= minimum:
            return None
        if whole_patterns and any(
            match["pattern"] == "bruteforce" for match in judged["sequence"]
        ):
            return None  # weak for want of its symbols, which it has
        return judged

    # Judged as it is hashed: full-width ＰＡＳＳＷＯＲＤ is "PASSWORD".
    typed = stable_password(password)
    rest = _without_details(typed, inputs)
    readings = [(typed, False)]
    if rest is not None:
        if not _NOT_ALNUM.sub("", rest):
            return f"this password is too easy to guess. {_MADE_OF_DETAILS}"
        readings.append((rest, True))
    for reading, is_rest in readings:
        judged = weakness(reading, whole_patterns=False)
        joined = _NOT_ALNUM.sub("", reading)
        if judged is None and joined != reading:
            judged = weakness(joined, whole_patterns=True)
        if judged is not None:
            return _advice(judged, own=is_rest)
    return None


def _advice(judged: dict[str, Any], *, own: bool) -> str:
    # zxcvbn says nothing of its own when the account's details are what
    # make it weak; the detail said only "add another word" (a trial).
    own = own or any(
        match.get("dictionary_name") == "user_inputs" for match in judged["sequence"]
    )
    feedback = judged["feedback"]
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
