"""Rankings in Redis: one sorted set per ranking, each change one script.

A ranking ``name`` is the sorted set ``name`` with its members and scores,
plus the member ``~ready`` at ``-inf``: the lowest rank, which trimming
skips, and what makes an empty ranking exist. A build in progress is the
string ``name:build`` (its cutoff, expiring with the build) and the sorted
set ``name:pending`` (the deltas put aside for it). ``ZREVRANGE`` returns
members by score and, between equal scores, by their bytes, highest first;
the in-process backend sorts the same way.

Scores travel as Python's shortest exact text of a float, which Redis reads
back to the same double, so both backends add the same numbers.

Scripts name several keys; on a Redis Cluster they would need one hash slot.
This backend targets one Redis (or a replicated pair), as the cache does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio

from petpal.platform.rankings import KEY_PREFIX, trim_threshold
from petpal.platform.redis_cache import (
    connect,
    milliseconds,
    redis_call,
    unlink_under,
)
from petpal.platform.settings import Settings

_READY = "~ready"

_TRIM = """
local function trim(key, keep, threshold)
  local n = redis.call('ZCARD', key) - 1
  if n > threshold then redis.call('ZREMRANGEBYRANK', key, 1, n - keep) end
end
"""

# KEYS: ranking, build. ARGV: cutoff, ttl in ms. Returns the cutoff in force.
_BEGIN_BUILD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return ARGV[1] end
local current = redis.call('GET', KEYS[2])
if current then return current end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""

# KEYS: ranking, pending, build. ARGV: cutoff, keep, trim threshold, ttl in
# ms, then member and score pairs.
_FINISH_BUILD = (
    _TRIM
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[1], '-inf', '~ready')
for j = 5, #ARGV, 2 do redis.call('ZADD', KEYS[1], ARGV[j + 1], ARGV[j]) end
redis.call('ZUNIONSTORE', KEYS[1], 2, KEYS[1], KEYS[2])
redis.call('DEL', KEYS[2], KEYS[3])
trim(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""
)

# KEYS: ranking, pending, build. ARGV: the event's time, keep, trim
# threshold, then member and delta pairs.
_ADD = (
    _TRIM
    + """
local target = KEYS[1]
if redis.call('EXISTS', KEYS[1]) == 0 then
  local cutoff = redis.call('GET', KEYS[3])
  if not cutoff or tonumber(ARGV[1]) < tonumber(cutoff) then return 0 end
  target = KEYS[2]
end
for j = 4, #ARGV, 2 do
  if target == KEYS[2] or tonumber(ARGV[j + 1]) >= 0
      or redis.call('ZSCORE', target, ARGV[j]) then
    redis.call('ZINCRBY', target, ARGV[j + 1], ARGV[j])
  end
end
if target == KEYS[2] then
  redis.call('PEXPIRE', KEYS[2], redis.call('PTTL', KEYS[3]))
else
  trim(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
end
return 1
"""
)

# KEYS: ranking, pending. ARGV: members.
_REMOVE = """
for _, key in ipairs(KEYS) do redis.call('ZREM', key, unpack(ARGV)) end
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisRankingBackend:
    """A ``RankingBackend`` over one Redis, every key under ``prefix``."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._begin = client.register_script(_BEGIN_BUILD)
        self._finish = client.register_script(_FINISH_BUILD)
        self._add = client.register_script(_ADD)
        self._remove = client.register_script(_REMOVE)

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisRankingBackend:
        return cls(connect(settings), settings.cache_key_prefix)

    def _parts(self, key: str) -> list[str]:
        """The ranking's keys: the set, the pending deltas, the build."""
        name = self._prefix + key
        return [name, name + ":pending", name + ":build"]

    async def top(self, key: str, count: int) -> list[str] | None:
        # One more than asked: ``~ready`` comes last when the ranking is short.
        found = await redis_call(self._client.zrevrange(self._prefix + key, 0, count))
        if not found:
            return None
        return [m for m in map(_text, found) if m != _READY][:count]

    async def begin_build(self, key: str, cutoff_ms: int, ttl: float) -> int:
        ranking, _, build = self._parts(key)
        cutoff = await redis_call(
            self._begin(keys=[ranking, build], args=[cutoff_ms, milliseconds(ttl)])
        )
        return int(_text(cutoff))

    async def finish_build(
        self,
        key: str,
        cutoff_ms: int,
        scores: Mapping[str, float],
        keep: int,
        ttl: float,
    ) -> bool:
        args: list[str | int] = [
            cutoff_ms,
            keep,
            trim_threshold(keep),
            milliseconds(ttl),
        ]
        for member, score in scores.items():
            args += [member, repr(score)]
        stored = await redis_call(self._finish(keys=self._parts(key), args=args))
        return bool(stored)

    async def add(
        self, key: str, deltas: Mapping[str, float], at_ms: int, keep: int
    ) -> None:
        args: list[str | int] = [at_ms, keep, trim_threshold(keep)]
        for member, delta in deltas.items():
            args += [member, repr(delta)]
        await redis_call(self._add(keys=self._parts(key), args=args))

    async def remove(self, key: str, members: Sequence[str]) -> None:
        if members:
            ranking, pending, _ = self._parts(key)
            await redis_call(self._remove(keys=[ranking, pending], args=list(members)))

    async def delete(self, keys: Sequence[str]) -> None:
        if keys:
            await redis_call(
                self._client.delete(*(part for k in keys for part in self._parts(k)))
            )

    async def clear(self) -> None:
        """Delete every ranking and build under this backend's prefix."""
        await unlink_under(self._client, self._prefix + KEY_PREFIX)

    async def close(self) -> None:
        await self._client.aclose(close_connection_pool=True)
