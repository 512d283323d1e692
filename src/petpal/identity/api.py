from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from petpal.identity import service
from petpal.identity.schemas import (
    AccountDeletion,
    EmailChange,
    LogIn,
    Me,
    PasswordChange,
    Profile,
    ProfileUpdate,
    RefreshRequest,
    SignUp,
    TokenPair,
)
from petpal.platform.deps import (
    LOCATION,
    CurrentAccount,
    OptionalAccount,
    PathCaller,
    ServicesDep,
    limit_log_in,
    limit_password_check,
    limit_sign_up,
    sign_up_admission,
)
from petpal.platform.wire import json_response

router = APIRouter(tags=["identity"])


def _asks_for(password: str) -> dict[int | str, dict[str, Any]]:
    """The 401 of a route that asks for the account's password again."""
    return {
        401: {
            "description": "Missing, invalid or expired access token, or a "
            f"wrong {password}"
        }
    }


@router.post(
    "/accounts",
    status_code=201,
    response_model=Me,
    responses={201: {"headers": LOCATION}},
    dependencies=[Depends(limit_sign_up)],
)
async def sign_up(
    data: SignUp, services: ServicesDep, request: Request, response: Response
) -> Me:
    admit = sign_up_admission(request, services)
    account = await service.do_sign_up(services, data, admit)
    response.headers["Location"] = f"/api/v1/accounts/{account.username}"
    return await service.get_me(services, account.id)


@router.post(
    "/auth/token",
    response_model=TokenPair,
    responses={401: {"description": "The login or the password is wrong"}},
    dependencies=[Depends(limit_log_in)],
)
async def log_in(data: LogIn, services: ServicesDep) -> TokenPair:
    return await service.do_log_in(services, data)


@router.post(
    "/auth/refresh",
    response_model=TokenPair,
    responses={
        401: {
            "description": "The refresh token is invalid, expired, revoked or "
            "was used already (which revokes its sessions)"
        }
    },
)
async def refresh(data: RefreshRequest, services: ServicesDep) -> TokenPair:
    return await service.do_refresh(services, data.refresh_token)


@router.post("/auth/logout", status_code=204)
async def log_out(data: RefreshRequest, services: ServicesDep) -> Response:
    await service.do_log_out(services, data.refresh_token)
    return Response(status_code=204)


@router.get("/accounts/me", response_model=Me)
async def get_me(me: CurrentAccount, services: ServicesDep) -> Me:
    return await service.get_me(services, me.account_id)


@router.patch("/accounts/me", response_model=Me)
async def update_me(
    data: ProfileUpdate, me: CurrentAccount, services: ServicesDep
) -> Me:
    return await service.do_update_me(services, me.account_id, data)


@router.delete(
    "/accounts/me",
    status_code=204,
    responses=_asks_for("password"),
    dependencies=[Depends(limit_password_check)],
)
async def delete_me(
    data: AccountDeletion, me: CurrentAccount, services: ServicesDep
) -> Response:
    """Delete your account, with its posts, comments, likes, follows, pets
    and photos; your password is asked again. It cannot be undone."""
    await service.do_delete_account(services, me.account_id, data.password)
    return Response(status_code=204)


@router.put(
    "/accounts/me/password",
    response_model=TokenPair,
    responses=_asks_for("current password"),
    dependencies=[Depends(limit_password_check)],
)
async def change_password(
    data: PasswordChange, me: CurrentAccount, services: ServicesDep
) -> TokenPair:
    """Change your password; your current one is asked again. Every session
    of the account ends, on every device: go on with the tokens in the
    answer. Access tokens already handed out work until they expire."""
    return await service.do_change_password(services, me.account_id, data)


@router.put(
    "/accounts/me/email",
    response_model=Me,
    responses=_asks_for("password"),
    dependencies=[Depends(limit_password_check)],
)
async def change_email(
    data: EmailChange, me: CurrentAccount, services: ServicesDep, request: Request
) -> Me:
    """Change your e-mail address; your password is asked again. The address
    is judged and compared as at sign-up, and logs in from now on. An
    address that passes counts against the sign-up limit too: the answer
    says whether another account has it."""
    admit = sign_up_admission(request, services)
    return await service.do_change_email(services, me.account_id, data, admit)


@router.get("/accounts/{username}", response_model=Profile)
async def get_profile(
    username: str, viewer: OptionalAccount, services: ServicesDep, caller: PathCaller
) -> Response:
    # /accounts/me itself is the route above (with the e-mail address);
    # ``ME`` or ``ｍｅ`` is the caller's profile, as in the paths below it.
    username = await service.named_account(services, username, caller)
    account_id = await service.resolve_username(services, username)
    return json_response(
        await service.profile_wire(
            services, account_id, viewer.account_id if viewer else None
        )
    )
