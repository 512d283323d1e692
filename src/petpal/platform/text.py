"""Rules for user-written text: usernames, free text, hashtags and mentions.

Usernames are 3 to 30 characters from ``a-z``, ``0-9`` and ``_`` after
Unicode NFKC normalisation, compared case-insensitively. Normalising first
means a full-width or otherwise "compatible" spelling of an existing name
collides with it instead of impersonating it; limiting the result to ASCII
letters, digits and underscore leaves no room for Cyrillic or Greek
look-alikes or for invisible characters (zero-width joiners, bidi marks).

Free text (captions, bios, comments) is kept byte for byte: emoji sequences
and right-to-left scripts survive unchanged. Only what no database can store
is refused: NUL characters and unpaired surrogates.
"""

from __future__ import annotations

import string
import unicodedata
from typing import Final

import email_validator
import regex
from pydantic import AfterValidator

USERNAME_PATTERN = regex.compile(r"^[a-z0-9_]{3,30}$")
RESERVED_USERNAMES = frozenset(
    {
        "me",
        "admin",
        "administrator",
        "root",
        "api",
        "petpal",
        "support",
        "help",
        "settings",
        "login",
        "logout",
        "signup",
        "system",
        "null",
        "undefined",
        # Names people take for the platform's own voice (found by a trial:
        # open to anyone). Any name with "petpal" in it is reserved too.
        "moderator",
        "mod",
        "staff",
        "team",
        "official",
        "security",
        "abuse",
        "privacy",
        "legal",
        "postmaster",
        "hostmaster",
        "webmaster",
        "noreply",
        "no_reply",
    }
)
# What a hashtag or a mention is made of: letters, marks and numbers of any
# script, and connectors (the underscore, the undertie ``‿``).
_WORD = r"\p{L}\p{M}\p{N}\p{Pc}"
# The zero-width joiners are spelling in some scripts, and part of a word
# where Unicode's rules for identifiers (UAX #31, contexts A1, A2 and B) say
# so: a ZWNJ between two Arabic-script letters that would otherwise join
# (Persian ``گربه‌ها``, "cats"), either joiner after a virama (Hindi
# ``क्‍ष``, Malayalam ``കാര്‍``). Anywhere else they are invisible and end the
# word, as other characters do (found by a trial: ``#گربه‌ها`` was the tag
# ``گربه``, "cat").
_JOINER = (
    r"(?:(?<=[\p{jt=D}\p{jt=L}]\p{jt=T}*)\u200c(?=\p{jt=T}*[\p{jt=D}\p{jt=R}])"
    r"|(?<=\p{ccc=9}\p{M}*)[\u200c\u200d])"
)
_TAG = rf"[{_WORD}]+(?:{_JOINER}[{_WORD}]*)*"
# A hashtag: a word as above; it must follow the start of the text or a
# character that cannot be part of a word, so "e-mail#x" is no tag but
# "(#x)" is. It is the whole word: one too long to store is refused with a
# 422 (found by a trial: it was cut to its first 100 characters, a tag the
# author never wrote).
HASHTAG_PATTERN = regex.compile(rf"(?<![{_WORD}&])#({_TAG})")
# A mention is written as its username is typed: in any width or case
# (``@ＬＥＮＡ``, ``＠lena``), found as a word after an at sign and kept if it
# normalises to a username (``lookup_username``).
# Of the connectors, only the underscore and the forms NFKC makes one of
# (full width ``＿`` and its kin) can be part of a username: ``@lena‿`` is
# ``lena``, as before connectors were part of tags (found by a trial).
_NAME_WORD = r"\p{L}\p{M}\p{N}_\uff3f\ufe33\ufe34\ufe4d-\ufe4f"
# A name followed by another at sign is an account elsewhere (the
# fediverse's ``@theo@mastodon.social``), not ours.
MENTION_PATTERN = regex.compile(
    rf"(?<![{_WORD}@＠])[@＠]([{_NAME_WORD}]{{1,60}})(?![{_NAME_WORD}@＠])"
)
# An address in a caption is no tag and mentions nobody, whatever it holds
# (found by two trials: ``https://shelter.example.org/#adopt-now`` was the
# tag ``adopt``, ``mastodon.social/@theo`` mentioned theo). Within each run
# of text between spaces, an address starts at a scheme's letters before
# ``://`` (after a letter too: Japanese puts no space before it), or at a
# host name with a dot, a letter in its last label and perhaps a port,
# before a ``/`` (``en.wikipedia.org/wiki/Beagle#History``; not ``9.5/``,
# nor ``#node.js/``, ``@the_dog.house/``, a tag's and a mention's own
# words), and runs to the end of that run of text. A ``/`` alone makes no
# address: ``w/@maya`` and ``#cats/#dogs`` are a mention and two tags; nor
# does a ``?`` (``St.Louis?#vet``, a sentence without its space, is two
# words and a tag, so ``example.org?ref=@lena`` mentions lena). Each run
# is read once, from its ``/`` characters back: a regular expression that
# looked for addresses took time in the square of a caption's length (a
# trial: 54 ms for 2,200 characters, 7 s for 40,000).
_RUN = regex.compile(r"\S+")
_SCHEME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "+.-")
# What a tag or a mention begins with: the dotted word after one is its own.
_NOT_A_HOST_BEFORE = frozenset("#@＠")


def _without_addresses(text: str) -> str:
    # Both kinds of address hold a "/" (a scheme's "://" included).
    return _RUN.sub(_blank_address, text) if "/" in text else text


def _blank_address(run: regex.Match[str]) -> str:
    word = run.group()
    start = _address_start(word)
    return word if start is None else word[:start] + " "


def _address_start(word: str) -> int | None:
    """Where an address begins in ``word`` (no spaces), if it holds one."""
    scheme_end = word.find("://")
    if scheme_end > 0:
        start = scheme_end
        while start > 0 and word[start - 1] in _SCHEME_CHARACTERS:
            start -= 1
        while start < scheme_end and not (
            word[start].isascii() and word[start].isalpha()
        ):
            start += 1
        if start < scheme_end:
            return start
    for end, character in enumerate(word):
        if character == "/":
            host = _host_start(word, end)
            if host is not None:
                return host
    return None


def _host_start(word: str, end: int) -> int | None:
    """Where a host name (with a port, perhaps) ending at ``end`` begins."""
    port = end
    while port > 0 and word[port - 1].isdigit():
        port -= 1
    if port < end and port > 0 and word[port - 1] == ":":
        end = port - 1  # the host ends before ":8080"
    start = end
    while start > 0 and (word[start - 1] in ".-" or _is_word(word[start - 1])):
        start -= 1
    if start > 0 and word[start - 1] in _NOT_A_HOST_BEFORE:
        return None
    dots = word.rfind("..", start, end)
    if dots >= 0:
        start = dots + 2  # "Adopt...shelter.example.org/": the host is after
    while start < end and word[start] in ".-":
        start += 1
    host = word[start:end]
    labels = host.split(".")
    if len(labels) < 2 or not all(labels):
        return None
    if not any(character.isalpha() for character in labels[-1]):
        return None
    return start


def _is_word(character: str) -> bool:
    """Letters, digits, marks and connectors: what a host name, a tag or a
    username is made of, so that the scan back from a ``/`` reaches the
    ``#`` or ``@`` of a tag or mention (found by a trial: ``@the_dog.house/``
    stopped at the underscore, and mentioned the account ``the_``)."""
    if character.isalnum():
        return True
    category = unicodedata.category(character)
    return category.startswith("M") or category == "Pc"


# Case-folding spells the capital dotted I of Turkish and Azeri (``İ``) as an
# ``i`` with a combining dot above, which shows as the ``i`` it sits on: so
# ``#İstanbul`` was a tag of its own, not ``#istanbul``, and ``İzmir`` did
# not match a search for ``izmir``. The fold drops that dot.
_DOTTED_I: Final = "i\u0307"


def fold(text: str) -> str:
    """``text`` as names, hashtags and places are compared: NFKC-normalised,
    case-folded, an ``İ`` as an ``i``."""
    return unicodedata.normalize("NFKC", text).casefold().replace(_DOTTED_I, "i")


# Places are searched as people type them, often without their accents:
# ``malmo`` finds Malmö, ``ha noi`` Hà Nội. What is dropped is what everyday
# writing leaves out: the marks of Latin and Greek letters (the Combining
# Diacritical Marks block); on Cyrillic letters only the stress marks on
# vowels and the diaeresis of ё, often written е (й, ї, ў and Macedonian's
# ѓ and ќ, a consonant and an acute, are letters of their own: found by
# trials); Hebrew's points and Arabic's vowel marks, hamza and elongation;
# the Devanagari nukta. Other scripts' marks are vowels or parts of their
# letters and stay (Devanagari's vowel signs, Japanese's voicing marks). A
# few letters carry their stroke in the letter itself, with no mark to
# drop, and are written plain in the same way (Tromsø as Tromso, Łódź as
# Lodz, Kırıkkale as Kirikkale). Characters that show nothing (a soft
# hyphen or a zero-width space pasted from a web page) are dropped, every
# dash is a hyphen-minus, and Catalan's l·l is ll.
_LATIN_AND_GREEK_ACCENTS = range(0x0300, 0x0370)
_CYRILLIC = range(0x0400, 0x0530)
_CYRILLIC_VOWELS = frozenset("аеёиоуыэюяіїєѐѝ")
_CYRILLIC_STRESS = frozenset("\u0300\u0301")
_UNWRITTEN = frozenset(
    chr(code)
    for first, last in (
        (0x0591, 0x05BD),  # Hebrew cantillation and points
        (0x05BF, 0x05BF),
        (0x05C1, 0x05C2),
        (0x05C4, 0x05C5),
        (0x05C7, 0x05C7),
        (0x0610, 0x061A),  # Arabic honorifics and small letters
        (0x064B, 0x065F),  # Arabic vowel marks and hamza
        (0x0670, 0x0670),
        (0x06D6, 0x06DC),  # Quranic annotation
        (0x06DF, 0x06E4),
        (0x06E7, 0x06E8),
        (0x06EA, 0x06ED),
        (0x093C, 0x093C),  # Devanagari nukta
    )
    for code in range(first, last + 1)
)
# Passed over in a place, besides format characters (Cf): what shows
# nothing, the variation selectors, the combining grapheme joiner and the
# Hangul fillers (found by a trial: a search of only U+FE0F listed the pet
# whose place held one); and Arabic's elongation (tatweel), which only
# stretches a word.
_PASSED_OVER_IN_PLACES = (
    frozenset(map(chr, range(0xFE00, 0xFE10)))
    | frozenset(map(chr, range(0xE0100, 0xE01F0)))
    | frozenset("\u034f\u115f\u1160\u3164\u0640")
)
# Every dash (Pd) is a hyphen-minus, and so is the minus sign (Sm); the
# wave dashes of Japanese ranges are the tilde a full-width one folds to.
_DASHES = {"\u2212": "-", "\u301c": "~", "\u3030": "~"}
_PLAIN_LETTERS = str.maketrans(
    {
        "æ": "ae",
        "đ": "d",
        "ð": "d",
        "ħ": "h",
        "ı": "i",
        "ł": "l",
        "ø": "o",
        "œ": "oe",
        "ŧ": "t",
        "þ": "th",
    }
)


def _unwritten(mark: str, letter: str) -> bool:
    """Whether ``mark``, after ``letter``, is one people write without."""
    if ord(mark) in _LATIN_AND_GREEK_ACCENTS:
        if letter and ord(letter) in _CYRILLIC:
            if mark in _CYRILLIC_STRESS:
                return letter in _CYRILLIC_VOWELS
            return mark == "\u0308" and letter == "е"
        return True
    return mark in _UNWRITTEN


def fold_location(text: str) -> str:
    """The form locations are matched in: compatibility-normalised,
    case-folded (``İ`` as ``i``), without the marks everyday writing leaves
    out and the characters that show nothing, normalised again.

    Migrations 0009 and 0010 folded the places stored before them by this
    rule; a change here needs a migration that folds them again.
    """
    kept: list[str] = []
    letter = ""
    for ch in unicodedata.normalize("NFD", fold(text)):
        category = unicodedata.category(ch)
        if category == "Cf" or ch in _PASSED_OVER_IN_PLACES:
            continue
        ch = _DASHES.get(ch, "-" if category == "Pd" else ch)
        if unicodedata.combining(ch) == 0:
            letter = ch
        elif _unwritten(ch, letter):
            continue
        kept.append(ch)
    plain = "".join(kept).translate(_PLAIN_LETTERS).replace("l·l", "ll")
    return unicodedata.normalize("NFKC", plain)


def canonical_username(raw: str) -> str:
    """The form a username is stored and compared in; raise ValueError if invalid."""
    normalized = fold(raw)
    if not USERNAME_PATTERN.match(normalized):
        raise ValueError(
            "a username is 3 to 30 characters: letters a-z, digits and underscore"
        )
    if normalized in RESERVED_USERNAMES or "petpal" in normalized:
        raise ValueError("this username is reserved")
    return normalized


def lookup_username(raw: str) -> str | None:
    """The canonical form to look ``raw`` up by, or None if it can't exist."""
    normalized = fold(raw)
    return normalized if USERNAME_PATTERN.match(normalized) else None


# The longest address SMTP carries, and the column that stores its form.
EMAIL_MAX_LENGTH: Final = 254
# A log-in names an account by its username or its e-mail address, and a
# username is much shorter: the longest login is the longest address.
LOGIN_MAX_LENGTH: Final = EMAIL_MAX_LENGTH


def canonical_email(raw: str) -> str | None:
    """The form an e-mail address is stored and compared in, or None if it
    is no valid address (:func:`spell_email` says why)."""
    try:
        return spell_email(raw)
    except ValueError:
        return None


# What is trimmed from either end of an address as typed: spaces, tabs and
# line breaks, as pasting leaves them, and the no-break and ideographic
# spaces. Anything else a client sends there (a control character, a line
# or paragraph separator) is refused as the address's own.
_TRIMMED: Final = " \t\r\n\u00a0\u3000"


def typed_email(raw: str) -> str:
    """An e-mail address as typed, without the spaces around it."""
    return raw.strip(_TRIMMED)


def spell_email(raw: str) -> str:
    """The form an e-mail address is stored and compared in; a ValueError
    saying why if it is no valid address.

    Whether it is one is ``email-validator``'s judgement (RFC 5321 and 5322
    syntax, internationalised per RFC 6531, without quoted local parts,
    bracketed IP addresses or special-use domains such as ``.invalid``,
    ``.test`` and ``localhost``, which no mail reaches); it found what our
    own rules let through: ``x@@example.org``, ``x@-example.org``,
    ``x@e_xample.org``, ``x..y@example.org``, a label past 63 characters.
    No DNS is asked: an address is judged by how it is written.

    The address is NFC-normalised (``été`` composed or decomposed is one
    text) and its local part case-folded; the domain is spelt as DNS knows
    it, in its IDNA form after UTS #46 mapping, so ``éxample.org``,
    ``ÉXAMPLE.org``, ``ｅxample.org`` in full width and
    ``xn--xample-9ua.org`` are one domain (found by a trial: each was an
    account of its own). A domain with an empty label, ``example.org.``,
    is refused: it names the mailbox ``example.org`` does, and was a second
    account's address.
    """
    email = unicodedata.normalize("NFC", typed_email(raw))
    try:
        valid = email_validator.validate_email(
            email,
            allow_smtputf8=True,
            check_deliverability=False,
            strict=True,  # the local part within RFC 5321's 64 characters
        )
    except email_validator.EmailNotValidError as exc:
        why = str(exc).rstrip(".")
        raise ValueError(why[:1].lower() + why[1:]) from exc
    canonical = f"{valid.local_part.casefold()}@{valid.ascii_domain.lower()}"
    if len(canonical) > EMAIL_MAX_LENGTH:
        raise ValueError(
            f"it is {len(canonical)} characters long as compared (a letter "
            f"such as ΐ is spelt as three), past the {EMAIL_MAX_LENGTH} an "
            "address can have"
        )
    return canonical


def canonical_login(raw: str) -> str:
    """What a log-in name is matched by: an e-mail address (it has an ``@``)
    in its canonical form, as sign-up stores it; otherwise a username's
    canonical form (NFKC, case-folded), which matches no account unless it
    is a valid one.

    The log-in's look-up and its per-name rate limit both key on it, so any
    spelling that reaches an account counts against that account's bucket
    (found by a trial: ``ｍａｙａ`` logged in as ``maya`` with a bucket of its
    own, and each mix of full-width and plain letters had another).
    """
    login = raw.strip()
    if "@" in login:
        return canonical_email(login) or login.casefold()
    return fold(login)


def check_storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text may not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text contains an unpaired surrogate") from exc
    return value


# Characters that show nothing, though Unicode files them as letters or
# symbols: the Hangul fillers and the braille blank (found by a trial: a
# name of U+3164 or U+2800 looked blank). With spaces, format and control
# characters (Cf, Cc) and marks (Mn, Me: the combining grapheme joiner, the
# variation selectors, a mark with nothing before it to sit on), they cover
# what Unicode calls Default_Ignorable_Code_Point, and what shows as blank.
_BLANK = frozenset("\u115f\u1160\u2800\u3164\uffa0")


def _shows_nothing(ch: str) -> bool:
    return (
        ch.isspace()
        or ch in _BLANK
        or unicodedata.category(ch) in ("Cf", "Cc", "Mn", "Me")
    )


def visible_length(value: str) -> int:
    """How many of ``value``'s characters show something."""
    return sum(1 for ch in value if not _shows_nothing(ch))


def searchable_place(folded: str) -> bool:
    """Whether a place as ``fold_location`` leaves it has something to find
    by: a place or search of elongations and a space between them folds to
    the space alone (found by a trial: it was taken, and such a search
    listed every place with a space)."""
    return visible_length(folded) > 0


def check_visible(value: str) -> str:
    """Refuse text made only of spaces and characters that show nothing."""
    if all(_shows_nothing(ch) for ch in value):
        raise ValueError("text must contain at least one visible character")
    return value


def check_visible_or_empty(value: str) -> str:
    """As :func:`check_visible`, but an optional field may be left empty."""
    return check_visible(value) if value else value


def check_place(value: str) -> str:
    """Refuse a place no search can find: one that shows nothing, or only
    what places are searched without (an Arabic elongation, marks) and
    spaces between them."""
    if value and not searchable_place(fold_location(value)):
        raise ValueError(
            "a place must contain a letter, digit or sign it can be searched by"
        )
    return value


# Embedding and override controls, and the marks that steer them, can make
# a name display as something else ("\u202egnp.exe" shows as "exe.png");
# right-to-left letters stay welcome.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# The format characters a name may need: the joiners of emoji sequences and
# of Persian and Indic spellings, and the tags of subdivision flags (🏴 and
# U+E0020 to U+E007F). Any other (a zero-width space, a byte order mark, a
# word joiner) only hides something in a name that looks like another
# (found by a trial: "Rex\u200b" passed for a second "Rex").
_NAME_FORMAT_CHARACTERS = frozenset("\u200c\u200d") | frozenset(
    map(chr, range(0xE0020, 0xE0080))
)


def check_name(value: str) -> str:
    for ch in value:
        if ch in _BIDI_CONTROLS:
            raise ValueError("names may not contain bidirectional control characters")
        category = unicodedata.category(ch)
        if category == "Cc" or (category == "Cf" and ch not in _NAME_FORMAT_CHARACTERS):
            raise ValueError(
                "names may not contain control or invisible formatting "
                f"characters (U+{ord(ch):04X})"
            )
    return value


# The checks as field metadata. A text field is declared as
# ``Annotated[str, StringConstraints(...), STORABLE, ...]``: the length on the
# plain str first, then the checks. Placed the other way round (a length
# around a type that already carries a check), pydantic applies the length
# as a generic one: it says "Value should have at most 50 items", and it
# counts before ``strip_whitespace``, so "   " would pass as a name.
STORABLE = AfterValidator(check_storable)
# For names and comments: a value of only blanks or zero-width characters
# would render as nothing at all.
VISIBLE = AfterValidator(check_visible)
# For a pet's breed, which may be left empty.
VISIBLE_OR_EMPTY = AfterValidator(check_visible_or_empty)
# For a pet's place, which may be left empty too (found by trials: a place
# of one combining accent looked blank and matched every search; one of an
# Arabic elongation alone was found by none).
PLACE = AfterValidator(check_place)
NAME = AfterValidator(check_name)


def canonical_tag(tag: str) -> str:
    return fold(tag)


_TAG_WORD = regex.compile(_TAG)


def extract_hashtags(text: str) -> list[str]:
    """Distinct canonical hashtags in order of first appearance.

    A tag whose canonical form is no longer one word is none: NFKC spells
    ``ﷺ`` as four words and ``¼`` with a fraction slash, and a post would
    list a tag whose page cannot be asked for (found by a trial).
    """
    seen: dict[str, None] = {}
    normalized = unicodedata.normalize("NFC", text)
    for match in HASHTAG_PATTERN.finditer(_without_addresses(normalized)):
        tag = canonical_tag(match.group(1))
        if (
            _TAG_WORD.fullmatch(tag)
            and any(ch.isalpha() or ch.isdigit() for ch in tag)
            and not tag.isdigit()
        ):
            seen.setdefault(tag, None)
    return list(seen)


def extract_mentions(text: str) -> list[str]:
    seen: dict[str, None] = {}
    for match in MENTION_PATTERN.finditer(_without_addresses(text)):
        name = lookup_username(match.group(1))
        if name is not None:
            seen.setdefault(name, None)
    return list(seen)
