"""Accounts, log-in and token rotation.

Other services use only the public read functions at the bottom
(``get_summaries``, ``resolve_username``, ``ids_for_usernames``); the tables
stay private to this package.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import timedelta

import orjson
import structlog
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from petpal.identity.models import Account, RefreshToken
from petpal.identity.schemas import (
    AccountSummary,
    EmailChange,
    LogIn,
    Me,
    PasswordChange,
    Profile,
    ProfileUpdate,
    SignUp,
    TokenPair,
)
from petpal.platform.db import rowcount, utcnow
from petpal.platform.deps import Admission, is_me, resolves_logins
from petpal.platform.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    ProblemError,
    UnauthorizedError,
    backend_unavailable,
)
from petpal.platform.ids import new_id
from petpal.platform.security import (
    AccessClaims,
    Verdict,
    hash_password,
    hash_refresh_secret,
    issue_access_token,
    new_refresh_secret,
    password_weakness,
    verify_password,
)
from petpal.platform.services import SERVICE_NAMES, Services
from petpal.platform.text import (
    canonical_login,
    canonical_username,
    lookup_username,
    spell_email,
    typed_email,
)
from petpal.platform.wire import Wire, utc_text

log = structlog.get_logger(__name__)

ACCOUNT_TTL = 600.0


def _account_key(account_id: str) -> str:
    # v2: the value carries the avatar's URL. A new shape gets a new key, so
    # that processes of two releases side by side never read each other's.
    return f"account:v2:{account_id}"


def _username_key(canonical: str) -> str:
    return f"username:{canonical}"


def _canonical_email(raw: str) -> str:
    try:
        return spell_email(raw)
    except ValueError as exc:
        raise InvalidInputError(
            "invalid_email", f"the e-mail address is not valid: {exc}"
        ) from exc


async def do_sign_up(services: Services, data: SignUp, admit: Admission) -> Account:
    """Make an account; ``admit`` is called once what was typed has passed
    (the sign-up rate limit), before the name and address are looked up."""
    try:
        canonical = canonical_username(data.username)
    except ValueError as exc:
        raise InvalidInputError("invalid_username", str(exc)) from exc
    email_canonical = _canonical_email(data.email)
    # What the password must not be made of: the name and address as typed
    # and as stored (found by a trial: a name typed in full width,
    # ``ＲＥＸＹＢＯＹ``, was no longer the name in ``rexyboy2024``).
    personal = (
        data.username,
        canonical,
        data.email,
        email_canonical,
        data.display_name,
    )
    await _refuse_weak_password(services, data.password, personal)
    await admit()
    password_hash = await asyncio.to_thread(hash_password, data.password)
    account = Account(
        id=new_id(),
        username=canonical,
        username_canonical=canonical,
        email=typed_email(data.email),
        email_canonical=email_canonical,
        password_hash=password_hash,
        display_name=data.display_name,
        bio="",
        created_at=utcnow(),
    )
    try:
        async with services.db.write_session() as session:
            taken = await session.scalar(
                select(Account.username_canonical).where(
                    or_(
                        Account.username_canonical == canonical,
                        Account.email_canonical == email_canonical,
                    )
                )
            )
            if taken is not None:
                raise _taken(taken == canonical)
            session.add(account)
    except IntegrityError as exc:
        # Lost a race with a concurrent sign-up for the same name or address.
        raise _taken("username" in str(exc.orig)) from exc
    await services.cache.invalidate(_username_key(canonical))
    return account


async def _refuse_weak_password(
    services: Services, password: str, personal: Sequence[str]
) -> None:
    """A 422 ``weak_password`` if ``password`` is too easy to guess or made
    of ``personal``, the account's own details."""
    # Judging and hashing take milliseconds of CPU; keep them off the loop.
    weakness = await asyncio.to_thread(
        password_weakness,
        password,
        personal,
        services.settings.password_min_strength,
    )
    if weakness is not None:
        raise InvalidInputError("weak_password", weakness)


def _taken(username: bool) -> ConflictError:
    if username:
        return ConflictError("username_taken", "this username is already taken")
    return ConflictError("email_taken", "an account with this e-mail already exists")


def _invalid_credentials() -> ProblemError:
    # The same answer whether the account exists or not.
    return ProblemError(
        401, "invalid_credentials", "the login or the password is wrong"
    )


def _named_by(login: str) -> ColumnElement[bool]:
    """The condition on accounts that ``login`` (a username in any spelling,
    or an e-mail address) names."""
    canonical = canonical_login(login)
    if "@" in canonical:
        return Account.email_canonical == canonical
    return Account.username_canonical == canonical


@resolves_logins
async def login_owner(services: Services, login: str) -> str | None:
    """The id of the account ``login`` names, if one does (the rate limits
    charge its bucket, whichever way the login names it)."""
    async with services.db.read_session() as session:
        return await session.scalar(select(Account.id).where(_named_by(login)))


async def do_log_in(services: Services, data: LogIn) -> TokenPair:
    async with services.db.read_session() as session:
        account = await session.scalar(select(Account).where(_named_by(data.login)))
    stored_hash = account.password_hash if account else None
    verdict = await asyncio.to_thread(verify_password, stored_hash, data.password)
    if account is None or not verdict:
        raise _invalid_credentials()
    new_hash = None
    if verdict is Verdict.RIGHT_REHASH:
        new_hash = await asyncio.to_thread(hash_password, data.password)
    async with services.db.write_session() as session:
        # The password verified must still be the account's: one changed
        # since (which ends every session) must not let this one in.
        if await _password_hash_held(services, session, account.id) != stored_hash:
            raise _invalid_credentials()
        if new_hash is not None:
            # Only over the hash just verified: a password changed meanwhile
            # stays changed.
            await session.execute(
                update(Account)
                .where(Account.id == account.id)
                .where(Account.password_hash == stored_hash)
                .values(password_hash=new_hash)
            )
        return _issue_pair(services, session, account, family_id=new_id())


async def _password_hash_held(
    services: Services,
    session: AsyncSession,
    account_id: str,
    *,
    exclusive: bool = False,
) -> str | None:
    """The account's password hash (None if it is gone), its row held until
    the transaction ends: against a password change, or, ``exclusive``,
    against every write that names the account (on PostgreSQL; SQLite
    writes one at a time).

    A session is made only under it: a log-in or a refresh that began before
    a change either ends before it (and the change revokes its session) or
    sees the change (and makes none).
    """
    query = select(Account.password_hash).where(Account.id == account_id)
    if not services.db.is_sqlite:
        query = query.with_for_update(read=not exclusive)
    return await session.scalar(query)


def _issue_pair(
    services: Services, session: AsyncSession, account: Account, family_id: str
) -> TokenPair:
    secret = new_refresh_secret()
    now = utcnow()
    session.add(
        RefreshToken(
            id=new_id(),
            account_id=account.id,
            family_id=family_id,
            token_hash=hash_refresh_secret(secret),
            created_at=now,
            expires_at=now
            + timedelta(seconds=services.settings.refresh_token_ttl_seconds),
        )
    )
    ttl = services.settings.access_token_ttl_seconds
    access = issue_access_token(
        services.secret, AccessClaims(account.id, account.username), ttl
    )
    return TokenPair(access_token=access, refresh_token=secret, expires_in=ttl)


def _invalid_refresh() -> ProblemError:
    return ProblemError(
        401, "invalid_refresh_token", "the refresh token is invalid or has expired"
    )


async def do_refresh(services: Services, secret: str) -> TokenPair:
    token_hash = hash_refresh_secret(secret)
    grace = timedelta(seconds=services.settings.refresh_reuse_grace_seconds)
    async with services.db.write_session() as session:
        found = (
            await session.execute(
                select(RefreshToken.family_id, RefreshToken.account_id).where(
                    RefreshToken.token_hash == token_hash
                )
            )
        ).first()
        if found is None:
            raise _invalid_refresh()
        family_id, owner_id = found
        # The account first, then the family: a password change revoking
        # every session waits for this refresh, or this refresh finds its
        # token revoked.
        if await _password_hash_held(services, session, owner_id) is None:
            raise _invalid_refresh()  # the account is gone
        await _lock_family(services, session, family_id)
        # Read once the family is this request's: as the last change to it
        # left the token (a concurrent refresh may have used it, a log-out
        # revoked it).
        token = await session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == token_hash)
        )
        now = utcnow()
        if token is None or token.revoked_at is not None or token.expires_at <= now:
            raise _invalid_refresh()
        # Used again within the grace period: its own client retrying (its
        # answer lost to a timeout on a phone's network, two tabs at once),
        # which gets a pair of its own (found by a trial: ten refreshes at
        # once left one winner, and the others' "reuse" revoked even the
        # winner's new token).
        retried = (
            token.used_at is not None
            and grace.total_seconds() > 0
            and now - token.used_at <= grace
        )
        if token.used_at is None or retried:
            if token.used_at is None:
                token.used_at = now
            account = await session.get(Account, token.account_id)
            if account is None:
                raise _invalid_refresh()
            return _issue_pair(services, session, account, family_id)
    # A used token came back: it was stolen or replayed. Revoke the family, in
    # a transaction of its own so the revocation stays when we answer 401.
    await _revoke_family(services, family_id)
    raise ProblemError(
        401,
        "refresh_token_reused",
        "this refresh token was already used; every session from it is now revoked",
    )


# The first key of the advisory locks taken on refresh token families (the
# second is the family id's hash): an arbitrary number of ours.
_FAMILY_LOCKS = 0x50E7


async def _lock_family(
    services: Services, session: AsyncSession, family_id: str
) -> None:
    """Hold the refresh token family ``family_id`` for the rest of the
    transaction: its refreshes and its revocation happen one at a time.

    Found by a trial, on PostgreSQL: a log-out at the same moment as a
    refresh answered 204, and the token the refresh issued lived on (the
    revocation's update had not seen it, inserted meanwhile). SQLite runs
    one write transaction at a time anyway.
    """
    if not services.db.is_sqlite:
        await session.execute(
            select(func.pg_advisory_xact_lock(_FAMILY_LOCKS, func.hashtext(family_id)))
        )


async def _revoke_family(services: Services, family_id: str) -> None:
    async with services.db.write_session() as session:
        await _lock_family(services, session, family_id)
        await session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None)
            )
            .values(revoked_at=utcnow())
        )


async def do_log_out(services: Services, secret: str) -> None:
    async with services.db.read_session() as session:
        family_id = await session.scalar(
            select(RefreshToken.family_id).where(
                RefreshToken.token_hash == hash_refresh_secret(secret)
            )
        )
    if family_id is not None:
        await _revoke_family(services, family_id)


# --- the account's password and address ------------------------------------------


async def _account_whose_password_is(
    services: Services, account_id: str, password: str
) -> Account:
    """The caller's account, if ``password`` is its password (401 if not): a
    token alone (a phone left unlocked) does not change or delete it."""
    async with services.db.read_session() as session:
        account = await session.get(Account, account_id)
    if account is None:
        raise AccountGoneError
    valid = await asyncio.to_thread(verify_password, account.password_hash, password)
    if not valid:
        raise _wrong_password()
    return account


def _wrong_password() -> ProblemError:
    return ProblemError(401, "invalid_credentials", "the password is wrong")


async def _update_if_password_still(
    session: AsyncSession, account: Account, **values: object
) -> None:
    """Update the account's row with ``values`` only if its password is
    still the one just verified (``account.password_hash``): a change made
    meanwhile, which ends every session, must not let through a request
    that checked the old one (found by a trial: address changes sent with
    the old password during a password change all went through)."""
    changed = await session.execute(
        update(Account)
        .where(Account.id == account.id)
        .where(Account.password_hash == account.password_hash)
        .values(**values)
    )
    if rowcount(changed) != 1:
        if await session.get(Account, account.id) is None:
            raise AccountGoneError
        raise _wrong_password()


async def do_change_password(
    services: Services, account_id: str, data: PasswordChange
) -> TokenPair:
    """Give the account a new password and end every session of it.

    The new password is judged as at sign-up. Every refresh token of the
    account is revoked in the same transaction, and a new pair is the
    answer, so the device that changed it stays signed in. Access tokens
    already handed out are not looked up on each request; they work until
    they expire (``access_token_ttl_seconds``).
    """
    account = await _account_whose_password_is(
        services, account_id, data.current_password
    )
    personal = (
        account.username,
        account.email,
        account.email_canonical,
        account.display_name,
    )
    await _refuse_weak_password(services, data.new_password, personal)
    new_hash = await asyncio.to_thread(hash_password, data.new_password)
    async with services.db.write_session() as session:
        # Of two changes at once, the second finds the password it was
        # given no longer the account's.
        await _update_if_password_still(session, account, password_hash=new_hash)
        await session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.account_id == account_id,
                RefreshToken.revoked_at.is_(None),
            )
            .values(revoked_at=utcnow())
        )
        pair = _issue_pair(services, session, account, family_id=new_id())
    log.info("account.password_changed", account_id=account_id)
    return pair


async def do_change_email(
    services: Services, account_id: str, data: EmailChange, admit: Admission
) -> Me:
    """Give the account a new e-mail address, judged and compared as at
    sign-up (another account's address is a 409 ``email_taken``);
    ``admit`` is called once the address has passed, as at sign-up, unless
    it is the account's own address retyped (another case, say): that tells
    nothing of other accounts, and is not charged (found by a trial)."""
    account = await _account_whose_password_is(services, account_id, data.password)
    email_canonical = _canonical_email(data.email)
    if email_canonical != account.email_canonical:
        await admit()
    try:
        async with services.db.write_session() as session:
            taken = await session.scalar(
                select(Account.id).where(
                    Account.email_canonical == email_canonical,
                    Account.id != account_id,
                )
            )
            if taken is not None:
                raise _taken(username=False)
            await _update_if_password_still(
                session,
                account,
                email=typed_email(data.email),
                email_canonical=email_canonical,
            )
    except IntegrityError as exc:
        # Lost a race with a sign-up or a change to the same address.
        raise _taken(username=False) from exc
    log.info("account.email_changed", account_id=account_id)
    return await get_me(services, account_id)


# --- deleting an account -------------------------------------------------------

# What another service does when an account goes, inside the transaction that
# deletes it: reads what the cascade is about to remove, deletes what must go
# first, queues the jobs that clean up after it, and returns the cache keys to
# forget once it has committed. Each service registers its own
# (``on_account_deletion``), so identity needs to know none of their tables.
AccountDeletionHook = Callable[[AsyncSession, str], Awaitable[list[str]]]
_deletion_hooks: list[AccountDeletionHook] = []


def on_account_deletion(hook: AccountDeletionHook) -> AccountDeletionHook:
    """Register ``hook`` to run when an account is deleted (see above)."""
    if hook not in _deletion_hooks:
        _deletion_hooks.append(hook)
    return hook


# A deletion that lost a deadlock is run again this many times in all.
DELETION_ATTEMPTS = 3


async def do_delete_account(services: Services, account_id: str, password: str) -> None:
    """Delete the caller's account and everything of theirs, after checking
    their password: a token alone (a phone left unlocked) is not enough.

    Their posts, comments, likes, follows, pets, photos and sessions go in
    one transaction; the counts they were part of are recounted, and their
    photos' files deleted, by jobs committed with it. Their tokens stop
    working at once, and the username is free again.
    """
    account = await _account_whose_password_is(services, account_id, password)
    # Every service's hook, whichever of them this process serves: they share
    # the database the cascade runs in.
    for name in SERVICE_NAMES:
        importlib.import_module(f"petpal.{name}.service")
    for attempt in range(1, DELETION_ATTEMPTS + 1):
        try:
            forget = await _delete_account_rows(services, account)
            break
        except DBAPIError as exc:
            # PostgreSQL ends one of two transactions that wait for each
            # other (found by a trial: a follow of the account, made at the
            # same moment, takes the counters' rows and the account's in the
            # other order). Run again, the deletion goes through.
            if (
                attempt == DELETION_ATTEMPTS
                or backend_unavailable(exc) != "database_busy"
            ):
                raise
            log.info("account.deletion_retried", account_id=account_id, attempt=attempt)
            await asyncio.sleep(0.05 * attempt)
    log.info("account.deleted", account_id=account_id)
    await services.cache.invalidate(*forget)


async def _delete_account_rows(services: Services, account: Account) -> list[str]:
    """Delete ``account``, with the hooks; the cache keys to forget."""
    forget = [_account_key(account.id), _username_key(account.username_canonical)]
    async with services.db.write_session() as session:
        # Locked first: a post or a like of the account's committed while the
        # hooks read would escape them, and then fail the cascade. Its
        # foreign key now waits for this transaction, and then fails (401).
        locked = await _password_hash_held(
            services, session, account.id, exclusive=True
        )
        if locked is None:
            raise AccountGoneError  # deleted meanwhile by another request
        if locked != account.password_hash:
            raise _wrong_password()  # changed since it was checked
        for hook in _deletion_hooks:
            forget += await hook(session, account.id)
        await session.execute(delete(Account).where(Account.id == account.id))
    return forget


# --- profiles -----------------------------------------------------------------


def _account_blob(account: Account, avatar_url: str | None) -> bytes:
    return orjson.dumps(
        {
            "id": account.id,
            "username": account.username,
            "display_name": account.display_name,
            "bio": account.bio,
            "avatar_media_id": account.avatar_media_id,
            "avatar_url": avatar_url,
            "created_at": account.created_at,
        }
    )


async def _cached_accounts(
    services: Services, account_ids: list[str]
) -> dict[str, dict[str, object]]:
    """The stored fields of the existing accounts among ``account_ids``, with
    the avatar's display URL.

    One cache round trip for all of them, and one query for those it misses.
    The URL is stored with the account: an avatar is always a ready media
    item, which never changes, so the value changes only when the account
    does, and the write that changes it invalidates it.
    """
    from petpal.media.service import display_urls

    keys = {_account_key(account_id): account_id for account_id in account_ids}

    async def load(missing: list[str]) -> dict[str, bytes | None]:
        async with services.db.read_session() as session:
            accounts = list(
                await session.scalars(
                    select(Account).where(Account.id.in_([keys[k] for k in missing]))
                )
            )
        avatars = await display_urls(
            services, [a.avatar_media_id for a in accounts if a.avatar_media_id]
        )
        return {
            _account_key(a.id): _account_blob(
                a, avatars.get(a.avatar_media_id) if a.avatar_media_id else None
            )
            for a in accounts
        }

    found = await services.cache.get_or_load_many(list(keys), load, ttl=ACCOUNT_TTL)
    return {
        keys[key]: orjson.loads(blob) for key, blob in found.items() if blob is not None
    }


async def _cached_account(
    services: Services, account_id: str
) -> dict[str, object] | None:
    return (await _cached_accounts(services, [account_id])).get(account_id)


class AccountGoneError(UnauthorizedError):
    """A valid access token whose account is not there (any more)."""

    def __init__(self) -> None:
        super().__init__("the account this access token was issued for does not exist")


async def ensure_account_exists(services: Services, account_id: str) -> None:
    """Raise :class:`AccountGoneError` if the caller's own account is missing.

    Tokens are checked by their signature alone, so one outlives its account
    (a database restored from before the account was made, with the same
    key). Writes that fail a foreign key ask this before saying which row
    was missing: found by a trial, such a token's writes were 500s, or 404s
    about the post being liked.
    """
    async with services.db.read_session() as session:
        found = await session.scalar(select(Account.id).where(Account.id == account_id))
    if found is None:
        raise AccountGoneError


async def forget_usernames(services: Services, usernames: Iterable[str]) -> None:
    """Forget the cached look-ups of ``usernames``, as a sign-up does its own:
    a cache kept from an earlier database may map them to accounts that are
    gone."""
    await services.cache.invalidate(
        *(_username_key(canonical_username(name)) for name in usernames)
    )


async def resolve_username(services: Services, username: str) -> str:
    """The id of the account called ``username``; 404 if there is none."""
    canonical = lookup_username(username)
    if canonical is None:
        raise NotFoundError("the account")

    async def load() -> bytes | None:
        async with services.db.read_session() as session:
            found = await session.scalar(
                select(Account.id).where(Account.username_canonical == canonical)
            )
        return found.encode() if found else None

    blob = await services.cache.get_or_load(
        _username_key(canonical), load, ttl=ACCOUNT_TTL
    )
    if blob is None:
        raise NotFoundError("the account")
    return blob.decode()


async def named_account(
    services: Services, username: str, caller: AccessClaims | None
) -> str:
    """The username a path names; ``me`` (with its ``caller``, see
    ``deps.caller_if_me``) is the caller's own, read by its id: a deleted
    account's name may be someone else's now. Found by a trial:
    ``/accounts/me`` answered, ``/accounts/me/pets`` was a 404 "the account
    was not found"."""
    if caller is None or not is_me(username):
        return username
    found = await summary_wires(services, [caller.account_id])
    if caller.account_id not in found:
        raise AccountGoneError
    return str(found[caller.account_id]["username"])


async def summary_wires(services: Services, account_ids: list[str]) -> dict[str, Wire]:
    """``AccountSummary``'s JSON shape of the existing accounts among the ids,
    in one cache round trip."""
    blobs = await _cached_accounts(services, account_ids)
    return {
        account_id: {
            "id": account_id,
            "username": blob["username"],
            "display_name": blob["display_name"],
            "avatar_url": blob["avatar_url"],
        }
        for account_id, blob in blobs.items()
    }


async def get_summaries(
    services: Services, account_ids: list[str]
) -> dict[str, AccountSummary]:
    """Public summaries of the given accounts, from the cache where possible."""
    wires = await summary_wires(services, account_ids)
    return {
        account_id: AccountSummary.model_validate(wire)
        for account_id, wire in wires.items()
    }


async def ids_for_usernames(services: Services, usernames: list[str]) -> dict[str, str]:
    """Canonical username to id, for the names that exist."""
    if not usernames:
        return {}
    async with services.db.read_session() as session:
        rows = await session.execute(
            select(Account.username_canonical, Account.id).where(
                Account.username_canonical.in_(usernames)
            )
        )
        return {row[0]: row[1] for row in rows}


async def profile_wire(
    services: Services, account_id: str, viewer_id: str | None
) -> Wire:
    """``Profile``'s JSON shape: the cached account, its counts and whether
    the viewer follows it, side by side, so their look-ups share one cache
    round trip."""
    from petpal.social.service import account_counts, is_following

    async def followed_by_viewer() -> bool | None:
        if viewer_id is None or viewer_id == account_id:
            return None
        return await is_following(services, viewer_id, account_id)

    blob, (followers, following, posts), followed = await asyncio.gather(
        _cached_account(services, account_id),
        account_counts(services, account_id),
        followed_by_viewer(),
    )
    if blob is None:
        raise NotFoundError("the account")
    return {
        "id": account_id,
        "username": blob["username"],
        "display_name": blob["display_name"],
        "avatar_url": blob["avatar_url"],
        "bio": blob["bio"],
        "avatar_media_id": blob["avatar_media_id"],
        "created_at": utc_text(str(blob["created_at"])),
        "follower_count": followers,
        "following_count": following,
        "post_count": posts,
        "followed_by_me": followed,
    }


async def get_profile(
    services: Services, account_id: str, viewer_id: str | None
) -> Profile:
    return Profile.model_validate(await profile_wire(services, account_id, viewer_id))


async def get_me(services: Services, account_id: str) -> Me:
    try:
        profile = await get_profile(services, account_id, None)
    except NotFoundError as exc:
        raise AccountGoneError from exc  # "me" is the token's own account
    async with services.db.read_session() as session:
        email = await session.scalar(
            select(Account.email).where(Account.id == account_id)
        )
    if email is None:
        raise AccountGoneError
    return Me(**profile.model_dump(), email=email)


async def do_update_me(services: Services, account_id: str, data: ProfileUpdate) -> Me:
    from petpal.media.service import queue_release, require_ready_media

    changes = data.model_dump(exclude_unset=True)
    if "bio" in changes and changes["bio"] is None:
        changes["bio"] = ""
    async with services.db.write_session() as session:
        account = await session.get(Account, account_id)
        if account is None:
            raise AccountGoneError
        if changes.get("avatar_media_id") is not None:
            await require_ready_media(session, [changes["avatar_media_id"]], account_id)
        if changes.get("avatar_media_id", account.avatar_media_id) != (
            account.avatar_media_id
        ):
            queue_release(session, [account.avatar_media_id])  # the one it had
        for field, value in changes.items():
            setattr(account, field, value)
    await services.cache.invalidate(_account_key(account_id))
    return await get_me(services, account_id)
