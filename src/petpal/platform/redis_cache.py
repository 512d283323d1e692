"""The Redis cache backend (redis-py asyncio), used when PETPAL_REDIS_URL is set.

Timeouts are short and a command is retried at most once, and only after a
broken connection (a restarted Redis), never after a timeout: a Redis that
hangs costs a request one socket timeout, after which ``Cache`` answers from
the database and bypasses Redis for a moment.

Look-ups and stores issued in the same turn of the event loop travel
together, as one ``MGET`` and one pipeline: a page that asks the cache for
fifty posts at once makes one round trip on one connection, not fifty, and
the look-ups of several families made side by side (a page's posts, their
counts and the viewer's likes, say) share that round trip too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from petpal.platform.cache import TOMBSTONE_TTL, CacheBackendError
from petpal.platform.settings import Settings

Item = TypeVar("Item")
Result = TypeVar("Result")
# A store: key, value, ttl in ms, then what the key must hold (None: store
# whatever it holds; b"": nothing, else the value it was seen with), and
# what to store instead when it does not (None: nothing).
_Store = tuple[str, bytes, int, bytes | None, bytes | None]

# SCAN page size when clearing a namespace.
_SCAN_COUNT = 1000


class _TurnBatch(Generic[Item, Result]):
    """Runs the calls made during one event-loop turn as one batch.

    The first call schedules the batch as a task; every call made before that
    task first runs (the rest of the turn, e.g. the other members of a
    ``gather``) joins it. Each call waits on a future of its own, so a caller
    that is cancelled cancels only that future: the batch runs on and the
    other callers get their results.
    """

    def __init__(self, run: Callable[[list[Item]], Awaitable[list[Result]]]) -> None:
        self._run = run
        self._items: list[Item] = []
        self._futures: list[asyncio.Future[Result]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        self._items.append(item)
        self._futures.append(future)
        if self._task is None:
            self._task = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        items, futures = self._items, self._futures
        self._items, self._futures, self._task = [], [], None
        try:
            results = await self._run(items)
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        except Exception as exc:
            # Not swallowed: every caller raises it from its own await.
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result in zip(futures, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def wait_idle(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


def _consume(future: asyncio.Future[Result]) -> None:
    # An error nobody awaits any more (its caller was cancelled) is not news.
    if not future.cancelled():
        future.exception()


def connection_pool(
    settings: Settings, **options: object
) -> redis.asyncio.BlockingConnectionPool:
    """A pool of this process's own with the cache's short timeouts.

    Shared by the cache, the timelines and the rate limiter, so that a hung
    Redis holds any request only briefly. ``options`` go to each connection.
    """
    return redis.asyncio.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.cache_max_connections,
        # Waiting for a free connection counts against the same budget.
        timeout=settings.cache_socket_timeout_seconds,
        socket_connect_timeout=settings.cache_connect_timeout_seconds,
        socket_timeout=settings.cache_socket_timeout_seconds,
        **options,
    )


def connect(settings: Settings) -> redis.asyncio.Redis:
    """A client with the cache's timeouts and retry rule, on a pool of its own."""
    pool = connection_pool(
        settings,
        # One retry, at once, and only for a connection that broke (Redis
        # restarted and the pooled socket is dead): the retry gets a new
        # one. A timeout is not retried; it would double the wait.
        retry=Retry(
            NoBackoff(),
            retries=1,
            supported_errors=(redis.exceptions.ConnectionError,),
        ),
    )
    return redis.asyncio.Redis(connection_pool=pool)


class RedisBackend:
    """A ``CacheBackend`` over one Redis, every key under ``prefix``."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        # Each item is a list of keys: single gets and whole pages share one MGET.
        self._gets: _TurnBatch[list[str], list[bytes | None]] = _TurnBatch(
            self._mget_lists
        )
        self._sets: _TurnBatch[_Store, object] = _TurnBatch(self._pipelined_set)
        self._set_if_unchanged = client.register_script(_SET_IF_UNCHANGED)
        self._set_if_marked = client.register_script(_SET_IF_MARKED)

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisBackend:
        return cls(connect(settings), settings.cache_key_prefix)

    def _key(self, key: str) -> str:
        return self._prefix + key

    async def get(self, key: str) -> bytes | None:
        return (await self._gets.submit([key]))[0]

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        values = await self._gets.submit(list(keys))
        return {
            key: value
            for key, value in zip(keys, values, strict=True)
            if value is not None
        }

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        await self._sets.submit((key, value, milliseconds(ttl_seconds), None, None))

    async def set_if_unchanged(
        self, key: str, value: bytes, ttl_seconds: float, seen: bytes | None
    ) -> None:
        # b"" stands for "no value": a stored value is never empty here
        # (the cache stores serialized values and its own markers).
        await self._sets.submit(
            (key, value, milliseconds(ttl_seconds), seen or b"", None)
        )

    async def set_if_marked(
        self, key: str, value: bytes, ttl_seconds: float, mark: bytes, other: bytes
    ) -> None:
        await self._sets.submit((key, value, milliseconds(ttl_seconds), mark, other))

    async def delete(self, *keys: str) -> None:
        if keys:
            await redis_call(self._client.delete(*(self._key(k) for k in keys)))

    async def clear(self) -> None:
        """Delete the keys under this backend's prefix."""
        await unlink_under(self._client, self._prefix)

    async def close(self) -> None:
        await self._gets.wait_idle()
        await self._sets.wait_idle()
        await self._client.aclose(close_connection_pool=True)

    async def ping(self) -> None:
        await redis_call(self._client.ping())

    async def _mget_lists(self, lists: list[list[str]]) -> list[list[bytes | None]]:
        """One MGET for every list of keys; each list gets its own values back."""
        prefix = self._prefix
        # Bytes, never str: the client is built without decode_responses.
        values = await redis_call(
            self._client.mget([prefix + key for keys in lists for key in keys])
        )
        found: list[list[bytes | None]] = []
        start = 0
        for keys in lists:
            end = start + len(keys)
            found.append(
                [v if isinstance(v, bytes) else None for v in values[start:end]]
            )
            start = end
        return found

    async def _pipelined_set(self, entries: list[_Store]) -> list[object]:
        async def run() -> list[object]:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value, ttl_ms, seen, other in entries:
                    if seen is None:
                        pipe.set(self._key(key), value, px=ttl_ms)
                    elif other is not None:
                        await self._set_if_marked(
                            keys=[self._key(key)],
                            args=[value, ttl_ms, seen, other, _TOMBSTONE_MS],
                            client=pipe,
                        )
                    else:
                        await self._set_if_unchanged(
                            keys=[self._key(key)],
                            args=[value, ttl_ms, seen],
                            client=pipe,
                        )
                results: list[object] = await pipe.execute()
                return results

        return await redis_call(run())


async def redis_call(operation: Awaitable[Result]) -> Result:
    """What ``operation`` returns; a Redis or socket error raises
    ``CacheBackendError``, the only error the stores on Redis raise."""
    try:
        return await operation
    except (redis.exceptions.RedisError, OSError) as exc:
        raise CacheBackendError(f"redis: {type(exc).__name__}: {exc}") from exc


def milliseconds(seconds: float) -> int:
    """A time to live in whole milliseconds, at least one."""
    return max(1, round(seconds * 1000))


async def unlink_under(client: redis.asyncio.Redis, prefix: str) -> int:
    """Delete every key that starts with ``prefix``, a page at a time; how
    many there were."""
    pattern = _glob_escape(prefix) + "*"
    cursor, deleted = 0, 0
    while True:
        cursor, keys = await redis_call(
            client.scan(cursor, match=pattern, count=_SCAN_COUNT)
        )
        if keys:
            deleted += await redis_call(client.unlink(*keys))
        if cursor == 0:
            return deleted


def clear_prefix(settings: Settings) -> int:
    """Delete every key under ``settings.cache_key_prefix`` (the cache,
    timelines, trending and rate limits), from outside an event loop; how
    many there were."""

    async def clear() -> int:
        client = connect(settings)
        try:
            return await unlink_under(client, settings.cache_key_prefix)
        finally:
            await client.aclose(close_connection_pool=True)

    return asyncio.run(clear())


# KEYS[1]; ARGV: value, ttl in ms, what the caller's miss saw (empty: nothing).
_SET_IF_UNCHANGED = """
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[3] then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
"""


# KEYS[1]; ARGV: value, ttl in ms, the writer's mark, a tombstone and its
# ttl in ms, stored instead when the key no longer holds the mark.
_SET_IF_MARKED = """
if redis.call('GET', KEYS[1]) == ARGV[3] then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
return 0
"""
_TOMBSTONE_MS = milliseconds(TOMBSTONE_TTL)


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
