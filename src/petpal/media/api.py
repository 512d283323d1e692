from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from petpal.media import service
from petpal.media.schemas import MediaView
from petpal.platform.deps import (
    LOCATION,
    CurrentAccount,
    OptionalAccount,
    ServicesDep,
    limit_per_account,
)
from petpal.platform.ids import GivenId

router = APIRouter(tags=["media"])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


@router.post(
    "/media",
    status_code=202,
    response_model=MediaView,
    responses={202: {"headers": LOCATION}},
    openapi_extra=_UPLOAD_BODY,
    summary="Upload one photo; it is processed in the background",
    dependencies=[Depends(limit_per_account("upload"))],
)
async def upload(
    request: Request, response: Response, me: CurrentAccount, services: ServicesDep
) -> MediaView:
    media = await service.do_upload(services, me.account_id, request)
    response.headers["Location"] = f"/api/v1/media/{media.id}"
    return service.to_view(services, media)


@router.get("/media/{media_id}", response_model=MediaView)
async def get_media(
    media_id: GivenId, viewer: OptionalAccount, services: ServicesDep
) -> MediaView:
    return await service.get_media(
        services, media_id, viewer.account_id if viewer else None
    )
