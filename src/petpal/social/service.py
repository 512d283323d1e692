"""Placeholder until the social service lands."""

from __future__ import annotations

from petpal.platform.services import Services


async def account_counts(services: Services, account_id: str) -> tuple[int, int, int]:
    return 0, 0, 0


async def is_following(services: Services, follower_id: str, followee_id: str) -> bool:
    return False
