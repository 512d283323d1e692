from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from petpal.identity.schemas import AccountSummary
from petpal.identity.service import named_account
from petpal.platform.deps import (
    DEFAULT_PAGE_SIZE,
    LOCATION,
    CurrentAccount,
    CursorParam,
    LimitParam,
    OptionalAccount,
    PathCaller,
    ServicesDep,
    limit_per_account,
)
from petpal.platform.ids import GivenId
from petpal.platform.pagination import Page
from petpal.platform.wire import json_response, page_response
from petpal.social import service, trending
from petpal.social.schemas import (
    CommentCreate,
    CommentView,
    LikeState,
    PostCreate,
    PostEdit,
    PostView,
)

router = APIRouter(tags=["social"])


def _viewer_id(viewer: OptionalAccount) -> str | None:
    return viewer.account_id if viewer else None


# --- follows --------------------------------------------------------------------


@router.post(
    "/accounts/{username}/follow",
    status_code=204,
    dependencies=[Depends(limit_per_account("follow"))],
)
async def follow(
    username: str, me: CurrentAccount, services: ServicesDep, caller: PathCaller
) -> Response:
    # Following "me" is following oneself: a 422, as by name.
    username = await named_account(services, username, caller)
    await service.do_follow(services, me.account_id, username)
    return Response(status_code=204)


@router.delete("/accounts/{username}/follow", status_code=204)
async def unfollow(
    username: str, me: CurrentAccount, services: ServicesDep, caller: PathCaller
) -> Response:
    username = await named_account(services, username, caller)
    await service.do_unfollow(services, me.account_id, username)
    return Response(status_code=204)


@router.get("/accounts/{username}/followers", response_model=Page[AccountSummary])
async def followers(
    username: str,
    services: ServicesDep,
    caller: PathCaller,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_PAGE_SIZE,
) -> Page[AccountSummary]:
    username = await named_account(services, username, caller)
    return await service.list_followers(services, username, cursor, limit)


@router.get("/accounts/{username}/following", response_model=Page[AccountSummary])
async def following(
    username: str,
    services: ServicesDep,
    caller: PathCaller,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_PAGE_SIZE,
) -> Page[AccountSummary]:
    username = await named_account(services, username, caller)
    return await service.list_following(services, username, cursor, limit)


@router.get("/accounts/{username}/posts", response_model=Page[PostView])
async def account_posts(
    username: str,
    viewer: OptionalAccount,
    services: ServicesDep,
    caller: PathCaller,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_PAGE_SIZE,
) -> Response:
    username = await named_account(services, username, caller)
    return page_response(
        await service.account_posts(
            services, username, _viewer_id(viewer), cursor, limit
        )
    )


# --- posts, likes, comments -----------------------------------------------------


@router.post(
    "/posts",
    status_code=201,
    response_model=PostView,
    responses={201: {"headers": LOCATION}},
    dependencies=[Depends(limit_per_account("post"))],
)
async def create_post(
    data: PostCreate, me: CurrentAccount, services: ServicesDep
) -> Response:
    post_id = await service.do_create_post(services, me.account_id, data)
    response = json_response(
        await service.get_post(services, post_id, me.account_id), status_code=201
    )
    response.headers["Location"] = f"/api/v1/posts/{post_id}"
    return response


@router.get("/posts/{post_id}", response_model=PostView)
async def get_post(
    post_id: GivenId, viewer: OptionalAccount, services: ServicesDep
) -> Response:
    return json_response(await service.get_post(services, post_id, _viewer_id(viewer)))


@router.patch(
    "/posts/{post_id}",
    response_model=PostView,
    # Counted as posting: each edit may move the post between hashtag pages.
    dependencies=[Depends(limit_per_account("post"))],
)
async def edit_post(
    post_id: GivenId, data: PostEdit, me: CurrentAccount, services: ServicesDep
) -> Response:
    """Replace the caption; hashtags and mentions follow it. Author only."""
    await service.do_edit_post(services, post_id, me.account_id, data)
    return json_response(await service.get_post(services, post_id, me.account_id))


@router.delete("/posts/{post_id}", status_code=204)
async def delete_post(
    post_id: GivenId, me: CurrentAccount, services: ServicesDep
) -> Response:
    await service.do_delete_post(services, post_id, me.account_id)
    return Response(status_code=204)


@router.post(
    "/posts/{post_id}/like",
    response_model=LikeState,
    dependencies=[Depends(limit_per_account("like"))],
)
async def like(
    post_id: GivenId, me: CurrentAccount, services: ServicesDep
) -> LikeState:
    return await service.do_like(services, post_id, me.account_id)


@router.delete("/posts/{post_id}/like", response_model=LikeState)
async def unlike(
    post_id: GivenId, me: CurrentAccount, services: ServicesDep
) -> LikeState:
    return await service.do_unlike(services, post_id, me.account_id)


@router.get("/posts/{post_id}/comments", response_model=Page[CommentView])
async def comments(
    post_id: GivenId,
    services: ServicesDep,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_PAGE_SIZE,
) -> Response:
    return page_response(await service.list_comments(services, post_id, cursor, limit))


@router.post(
    "/posts/{post_id}/comments",
    status_code=201,
    response_model=CommentView,
    dependencies=[Depends(limit_per_account("comment"))],
)
async def comment(
    post_id: GivenId, data: CommentCreate, me: CurrentAccount, services: ServicesDep
) -> CommentView:
    return await service.do_comment(services, post_id, me.account_id, data.body)


@router.delete("/comments/{comment_id}", status_code=204)
async def delete_comment(
    comment_id: GivenId, me: CurrentAccount, services: ServicesDep
) -> Response:
    await service.do_delete_comment(services, comment_id, me.account_id)
    return Response(status_code=204)


# --- feeds ----------------------------------------------------------------------


@router.get("/feed/home", response_model=Page[PostView])
async def home_feed(
    me: CurrentAccount,
    services: ServicesDep,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_PAGE_SIZE,
) -> Response:
    return page_response(
        await service.home_feed(services, me.account_id, cursor, limit)
    )


@router.get("/feed/public", response_model=Page[PostView])
async def public_feed(
    viewer: OptionalAccount,
    services: ServicesDep,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_PAGE_SIZE,
) -> Response:
    return page_response(
        await service.public_feed(services, _viewer_id(viewer), cursor, limit)
    )


@router.get("/feed/trending", response_model=Page[PostView])
async def trending_feed(
    viewer: OptionalAccount,
    services: ServicesDep,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_PAGE_SIZE,
) -> Response:
    return page_response(
        await trending.trending_feed(services, _viewer_id(viewer), cursor, limit)
    )


@router.get("/tags/{tag}", response_model=Page[PostView])
async def tag_feed(
    tag: str,
    viewer: OptionalAccount,
    services: ServicesDep,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_PAGE_SIZE,
) -> Response:
    return page_response(
        await service.tag_feed(services, tag, _viewer_id(viewer), cursor, limit)
    )
