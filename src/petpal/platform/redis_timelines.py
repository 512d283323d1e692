"""Timelines in Redis: one sorted set per timeline, each change one script.

Every member has the score 0, so the set is ordered by the members' bytes:
ids are ULIDs (``0-9A-Z``), which sort by age, and range reads are
``ZREVRANGEBYLEX``. The facts of a timeline (see ``timelines``) are members
too, starting with ``~``, which sorts above every id: ``~ready``,
``~complete``, ``~link:<name>`` and ``~build:<token>``. So a single script
call reads a page of ids and the facts together, and the cap (a rank range
from the bottom) can never remove a fact.

The scripts compare ids only through Redis's own lexicographic commands,
never with Lua's ``<``, whose order follows the server's locale.

A script that names several keys needs them in one hash slot on a Redis
Cluster; this backend targets one Redis (or a replicated pair), as the cache
does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio

from petpal.platform.redis_cache import (
    connect,
    milliseconds,
    redis_call,
    unlink_under,
)
from petpal.platform.settings import Settings
from petpal.platform.timelines import KEY_PREFIX, TimelineContent, TimelineSlice

# Below ``~``: the range that holds ids and no facts.
_IDS_TOP = "(~"
_LINK = "~link:"

_FUNCTIONS = """
local function trim(key, cap)
  local n = redis.call('ZLEXCOUNT', key, '-', '(~')
  if n > cap then
    redis.call('ZREMRANGEBYRANK', key, 0, n - cap - 1)
    redis.call('ZREM', key, '~complete')
  end
end

local function oldest(key)
  return redis.call('ZRANGEBYLEX', key, '-', '(~', 'LIMIT', 0, 1)[1]
end

local function incomplete(key)
  return redis.call('ZSCORE', key, '~ready')
    and not redis.call('ZSCORE', key, '~complete')
end

-- ARGV[first..last] into key; an incomplete timeline keeps its floor.
local function add_ids(key, first, last)
  local floor = nil
  if incomplete(key) then floor = oldest(key) end
  for j = first, last do redis.call('ZADD', key, 0, ARGV[j]) end
  if floor then redis.call('ZREMRANGEBYLEX', key, '-', '(' .. floor) end
end
"""

# KEYS: timelines. ARGV: upper bound ("(<id>" or "(~"), count, ttl in ms.
_READ = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('ZSCORE', key, '~ready') then
    redis.call('PEXPIRE', key, ARGV[3])
    out[i] = {
      redis.call('ZREVRANGEBYLEX', key, ARGV[1], '-', 'LIMIT', 0, tonumber(ARGV[2])),
      redis.call('ZRANGEBYLEX', key, '[~', '+'),
    }
  else
    out[i] = 0
  end
end
return out
"""

# KEYS[1]: the timeline. ARGV: build token, ttl in ms.
_BEGIN_BUILD = """
redis.call('ZADD', KEYS[1], 0, ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
"""

# KEYS[1]: the timeline. ARGV: token, cap, ttl in ms, complete (1 or 0),
# number of ids, oldest id ('' if none), the ids, the links.
_FINISH_BUILD = (
    _FUNCTIONS
    + """
local key = KEYS[1]
if not redis.call('ZSCORE', key, ARGV[1]) then return 0 end
redis.call('ZREM', key, ARGV[1])
local n = tonumber(ARGV[5])
if redis.call('ZSCORE', key, '~ready') then
  add_ids(key, 7, 6 + n)
else
  for j = 7, 6 + n do redis.call('ZADD', key, 0, ARGV[j]) end
  redis.call('ZADD', key, 0, '~ready')
  if ARGV[4] == '1' then
    redis.call('ZADD', key, 0, '~complete')
  elseif ARGV[6] ~= '' then
    redis.call('ZREMRANGEBYLEX', key, '-', '(' .. ARGV[6])
  end
end
for j = 7 + n, #ARGV do redis.call('ZADD', key, 0, '~link:' .. ARGV[j]) end
trim(key, tonumber(ARGV[2]))
redis.call('PEXPIRE', key, ARGV[3])
return 1
"""
)

# KEYS: timelines. ARGV: cap, number of ids, the ids, the links.
# Returns the (1-based) positions of the keys that existed.
_ADD = (
    _FUNCTIONS
    + """
local cap = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local added = {}
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    if incomplete(key) and not oldest(key) then
      redis.call('DEL', key)  -- knows nothing any more: rebuilt when read
    else
      add_ids(key, 3, 2 + n)
      for j = 3 + n, #ARGV do redis.call('ZADD', key, 0, '~link:' .. ARGV[j]) end
      trim(key, cap)
      added[#added + 1] = i
    end
  end
end
return added
"""
)

# KEYS: timelines. ARGV: ids.
_REMOVE = """
for _, key in ipairs(KEYS) do redis.call('ZREM', key, unpack(ARGV)) end
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisTimelineBackend:
    """A ``TimelineBackend`` over one Redis, every key under ``prefix``."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._read = client.register_script(_READ)
        self._begin = client.register_script(_BEGIN_BUILD)
        self._finish = client.register_script(_FINISH_BUILD)
        self._add = client.register_script(_ADD)
        self._remove = client.register_script(_REMOVE)

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisTimelineBackend:
        return cls(connect(settings), settings.cache_key_prefix)

    def _keys(self, keys: Sequence[str]) -> list[str]:
        return [self._prefix + key for key in keys]

    async def read(
        self, keys: Sequence[str], before: str | None, count: int, ttl: float
    ) -> list[TimelineSlice | None]:
        if not keys:
            return []
        bound = _IDS_TOP if before is None else "(" + before
        replies = await redis_call(
            self._read(keys=self._keys(keys), args=[bound, count, milliseconds(ttl)])
        )
        slices: list[TimelineSlice | None] = []
        for reply in replies:
            if not isinstance(reply, list):
                slices.append(None)
                continue
            ids, facts = reply
            names = [_text(f) for f in facts]
            slices.append(
                TimelineSlice(
                    [_text(i) for i in ids],
                    "~complete" in names,
                    [n.removeprefix(_LINK) for n in names if n.startswith(_LINK)],
                )
            )
        return slices

    async def begin_build(self, key: str, token: str, ttl: float) -> None:
        await redis_call(
            self._begin(keys=self._keys([key]), args=[token, milliseconds(ttl)])
        )

    async def finish_build(
        self, key: str, token: str, content: TimelineContent, cap: int, ttl: float
    ) -> bool:
        oldest = min(content.ids) if content.ids else ""
        args: list[str | int] = [
            token,
            cap,
            milliseconds(ttl),
            1 if content.complete else 0,
            len(content.ids),
            oldest,
            *content.ids,
            *content.links,
        ]
        stored = await redis_call(self._finish(keys=self._keys([key]), args=args))
        return bool(stored)

    async def add(
        self, keys: Sequence[str], ids: Sequence[str], links: Sequence[str], cap: int
    ) -> list[str]:
        if not keys:
            return []
        positions = await redis_call(
            self._add(keys=self._keys(keys), args=[cap, len(ids), *ids, *links])
        )
        return [keys[int(p) - 1] for p in positions]

    async def remove(self, keys: Sequence[str], ids: Sequence[str]) -> None:
        if keys and ids:
            await redis_call(self._remove(keys=self._keys(keys), args=list(ids)))

    async def delete(self, keys: Sequence[str]) -> None:
        if keys:
            await redis_call(self._client.delete(*self._keys(keys)))

    async def has_mark(self, key: str) -> bool:
        return bool(await redis_call(self._client.exists(self._prefix + key)))

    async def set_mark(self, key: str, ttl: float) -> None:
        await redis_call(
            self._client.set(self._prefix + key, b"1", px=milliseconds(ttl))
        )

    async def clear(self) -> None:
        """Delete every timeline and mark under this backend's prefix."""
        await unlink_under(self._client, self._prefix + KEY_PREFIX)

    async def close(self) -> None:
        await self._client.aclose(close_connection_pool=True)
