from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BeforeValidator, StringConstraints

from petpal.identity.service import named_account
from petpal.pets import service
from petpal.pets.schemas import PetCreate, PetOfTheDayView, PetUpdate, PetView, Species
from petpal.platform.deps import (
    DEFAULT_PAGE_SIZE,
    LOCATION,
    CurrentAccount,
    CursorParam,
    LimitParam,
    PathCaller,
    ServicesDep,
    limit_per_account,
)
from petpal.platform.ids import GivenId
from petpal.platform.pagination import Page
from petpal.platform.text import STORABLE
from petpal.platform.wire import page_response

router = APIRouter(tags=["pets"])


def _species_as_chosen(value: object) -> object:
    # A search form's "any" sends the parameter empty, and a person may
    # type "Cat" (found by a trial: both were a 422).
    if isinstance(value, str):
        return value.strip().lower() or None
    return value


SpeciesFilter = Annotated[
    Species | None,
    BeforeValidator(_species_as_chosen),
    Query(description="One species, in any letter case; empty for any"),
]

# The length before the check (see petpal.platform.text).
LocationFilter = Annotated[
    Annotated[str, StringConstraints(max_length=120), STORABLE] | None,
    Query(description="Part of the location, in any letter case (e.g. 'lyon')"),
]


@router.post(
    "/pets",
    status_code=201,
    response_model=PetView,
    responses={201: {"headers": LOCATION}},
    dependencies=[Depends(limit_per_account("pet"))],
)
async def create_pet(
    data: PetCreate, me: CurrentAccount, services: ServicesDep, response: Response
) -> PetView:
    pet = await service.do_create_pet(services, me.account_id, data)
    response.headers["Location"] = f"/api/v1/pets/{pet.id}"
    return pet


# A path named whole is its route's alone (platform/routing.py): declared
# before /pets/{pet_id} all the same, for the router behind the index.
@router.get(
    "/pets/of-the-day",
    response_model=PetOfTheDayView,
    summary="Today's Pet of the Day (UTC), the same for everyone all day",
)
async def get_pet_of_the_day(services: ServicesDep) -> PetOfTheDayView:
    return await service.get_pet_of_the_day(services)


@router.get("/pets/{pet_id}", response_model=PetView)
async def get_pet(pet_id: GivenId, services: ServicesDep) -> PetView:
    return await service.get_pet(services, pet_id)


@router.patch(
    "/pets/{pet_id}",
    response_model=PetView,
    dependencies=[Depends(limit_per_account("pet"))],
)
async def update_pet(
    pet_id: GivenId, data: PetUpdate, me: CurrentAccount, services: ServicesDep
) -> PetView:
    return await service.do_update_pet(services, pet_id, me.account_id, data)


@router.delete("/pets/{pet_id}", status_code=204)
async def delete_pet(
    pet_id: GivenId, me: CurrentAccount, services: ServicesDep
) -> Response:
    await service.do_delete_pet(services, pet_id, me.account_id)
    return Response(status_code=204)


@router.get("/accounts/{username}/pets", response_model=Page[PetView])
async def list_account_pets(
    username: str,
    services: ServicesDep,
    caller: PathCaller,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_PAGE_SIZE,
) -> Response:
    username = await named_account(services, username, caller)
    return page_response(
        await service.list_account_pets(services, username, cursor, limit)
    )


@router.get(
    "/adoptions",
    response_model=Page[PetView],
    summary="Pets listed for adoption, newest listing first",
)
async def list_adoptions(
    services: ServicesDep,
    species: SpeciesFilter = None,
    location: LocationFilter = None,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_PAGE_SIZE,
) -> Page[PetView]:
    return await service.list_adoptions(services, species, location, cursor, limit)
