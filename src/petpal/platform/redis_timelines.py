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

Fan-out is the hot path: one ``ADD`` call per batch of timelines, most of
which do not exist. Per timeline it costs one ``ZCARD`` (existence and size
at once, O(1)); a timeline that exists and gets one new id then takes a
``ZADD`` and a ``ZRANK`` of that id, on the path the ``ZADD`` has just
walked. The facts are read only when the id lands lowest, the one place an
incomplete timeline's floor can refuse it; and the size from ``ZCARD``
tells whether the cap's slack (see ``timelines``) is spent before anything
is counted. Several ids at once (a follow, a build) take the general path:
facts, floor, then the ids.

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
-- Back to the newest cap ids once there are more than cap + slack. most is
-- at least the number of members (ids and facts), so most writes need not
-- count anything.
local function trim(key, cap, slack, most)
  if most <= cap + slack then return end
  local n = redis.call('ZLEXCOUNT', key, '-', '(~')
  if n > cap + slack then
    redis.call('ZREMRANGEBYRANK', key, 0, n - cap - 1)
    redis.call('ZREM', key, '~complete')
  end
end

local function oldest(key)
  return redis.call('ZRANGEBYLEX', key, '-', '(~', 'LIMIT', 0, 1)[1]
end

local function incomplete(key)
  local facts = redis.call('ZMSCORE', key, '~ready', '~complete')
  return facts[1] and not facts[2]
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

# KEYS[1]: the timeline. ARGV: token, cap, slack, ttl in ms, complete (1 or
# 0), number of ids, oldest id ('' if none), the ids, the links.
_FINISH_BUILD = (
    _FUNCTIONS
    + """
local key = KEYS[1]
if not redis.call('ZSCORE', key, ARGV[1]) then return 0 end
redis.call('ZREM', key, ARGV[1])
local n = tonumber(ARGV[6])
if redis.call('ZSCORE', key, '~ready') then
  add_ids(key, 8, 7 + n)
else
  for j = 8, 7 + n do redis.call('ZADD', key, 0, ARGV[j]) end
  redis.call('ZADD', key, 0, '~ready')
  if ARGV[5] == '1' then
    redis.call('ZADD', key, 0, '~complete')
  elseif ARGV[7] ~= '' then
    redis.call('ZREMRANGEBYLEX', key, '-', '(' .. ARGV[7])
  end
end
for j = 8 + n, #ARGV do redis.call('ZADD', key, 0, '~link:' .. ARGV[j]) end
trim(key, tonumber(ARGV[2]), tonumber(ARGV[3]), redis.call('ZCARD', key))
redis.call('PEXPIRE', key, ARGV[4])
return 1
"""
)

# KEYS: timelines. ARGV: cap, slack, number of ids, the ids, the links.
# Returns the (1-based) positions of the keys that existed and were kept.
_ADD = (
    _FUNCTIONS
    + """
-- One id into key: fan-out's new post, nearly always the newest. It is
-- added first; only if it landed lowest are the facts read, since an
-- incomplete timeline vouches for nothing below its oldest id. False if
-- the timeline is incomplete and held no id at all.
local function add_new_id(key, id)
  if redis.call('ZADD', key, 0, id) == 0 or redis.call('ZRANK', key, id) > 0
      or not incomplete(key) then
    return true
  end
  redis.call('ZREM', key, id)
  return oldest(key) ~= nil
end

local cap, slack = tonumber(ARGV[1]), tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local added = {}
for i, key in ipairs(KEYS) do
  local size = redis.call('ZCARD', key)  -- 0: no such timeline
  if size > 0 then
    local kept = true
    if n == 1 then
      kept = add_new_id(key, ARGV[4])
    elseif incomplete(key) and not oldest(key) then
      kept = false
    else
      add_ids(key, 4, 3 + n)
    end
    if kept then
      for j = 4 + n, #ARGV do redis.call('ZADD', key, 0, '~link:' .. ARGV[j]) end
      trim(key, cap, slack, size + #ARGV - 3)
      added[#added + 1] = i
    else
      redis.call('DEL', key)  -- knows nothing any more: rebuilt when read
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


# KEYS[1]: the timeline. ARGV: the link's name, then the ids. A build's
# token is a member from '~build:' up to (not including) '~build;'.
_UNLINK = """
local key = KEYS[1]
if redis.call('ZSCORE', key, '~ready')
    and #redis.call('ZRANGEBYLEX', key, '[~build:', '(~build;', 'LIMIT', 0, 1) == 0 then
  redis.call('ZREM', key, '~link:' .. ARGV[1])
  for j = 2, #ARGV, 500 do
    redis.call('ZREM', key, unpack(ARGV, j, math.min(j + 499, #ARGV)))
  end
  return 1
end
redis.call('DEL', key)
return 0
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisTimelineBackend:
    """A ``TimelineBackend`` over one Redis, every key under ``prefix``."""

    # A fan-out to thousands of followers neither holds Redis in one long
    # script (every other client waits meanwhile; 500 full timelines take it
    # a few milliseconds) nor waits for each answer before encoding the
    # next batch.
    add_batch: int | None = 500

    def __init__(self, client: redis.asyncio.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._read = client.register_script(_READ)
        self._begin = client.register_script(_BEGIN_BUILD)
        self._finish = client.register_script(_FINISH_BUILD)
        self._add = client.register_script(_ADD)
        self._remove = client.register_script(_REMOVE)
        self._unlink = client.register_script(_UNLINK)

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisTimelineBackend:
        return cls(connect(settings), settings.cache_key_prefix)

    def _keys(self, keys: Sequence[str]) -> list[bytes]:
        # Encoded here, in one pass: redis-py's own encoding of each argument
        # costs fan-out twice as much client CPU.
        prefix = self._prefix
        return [(prefix + key).encode() for key in keys]

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
        self,
        key: str,
        token: str,
        content: TimelineContent,
        cap: int,
        slack: int,
        ttl: float,
    ) -> bool:
        oldest = min(content.ids) if content.ids else ""
        args: list[str | int] = [
            token,
            cap,
            slack,
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
        self,
        keys: Sequence[str],
        ids: Sequence[str],
        links: Sequence[str],
        cap: int,
        slack: int,
    ) -> list[str]:
        if not keys:
            return []
        positions = await redis_call(
            self._add(keys=self._keys(keys), args=[cap, slack, len(ids), *ids, *links])
        )
        return [keys[int(p) - 1] for p in positions]

    async def remove(self, keys: Sequence[str], ids: Sequence[str]) -> None:
        if keys and ids:
            await redis_call(self._remove(keys=self._keys(keys), args=list(ids)))

    async def unlink(self, key: str, ids: Sequence[str], link: str) -> bool:
        kept = await redis_call(self._unlink(keys=self._keys([key]), args=[link, *ids]))
        return bool(kept)

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
