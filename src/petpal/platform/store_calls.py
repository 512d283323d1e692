"""Calls to the stores that live beside the cache, on the cache's server.

Timelines (``timelines``) and rankings (``rankings``) keep state derived from
the database in the same Redis as the cache (or in process). They fail the
way the cache fails and share its bypass: after any of them meets an error,
all of them skip the server for ``cache_bypass_after_error_seconds``, so a
request waits for at most one timeout.

A write that fails may or may not have landed (the server hung, or this
process lost it for a moment), and what it touched may stay in the store,
served without the change. So the keys a failed write named are owed a
deletion, delivered before this process uses the store again, or in the
background if it does not: they are rebuilt from the database when next
read. Other processes rely on the retry of the job (or on the rebuild) to
see the change; the cache's own owed invalidations are also handed to them
(``Cache.hand_over``), since nothing else would deliver those.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol, TypeVar

import structlog

from petpal.platform.cache import Cache, CacheBackendError

T = TypeVar("T")
log = structlog.get_logger(__name__)

# Keys owed a deletion, at most; past this the whole store is cleared once the
# backend answers again.
_MAX_OWED_DELETIONS = 100_000


class DeletingBackend(Protocol):
    """What a store's backend offers to settle owed deletions."""

    async def delete(self, keys: Sequence[str]) -> None: ...
    async def clear(self) -> None: ...


class StoreCalls:
    """Calls to one store's backend under the cache's bypass, and its debts."""

    def __init__(self, backend: DeletingBackend, cache: Cache, *, store: str) -> None:
        self._backend = backend
        self._cache = cache
        self._store = store  # named in log events
        self._owed: set[str] = set()
        self._owe_everything = False
        self._settling = asyncio.Lock()
        self._settle_task: asyncio.Task[None] | None = None

    async def call(
        self,
        operation: str,
        call: Callable[[], Awaitable[T]],
        *,
        owe: Sequence[str] = (),
    ) -> T:
        """Run ``call`` unless the server is bypassed; on failure ``owe`` its keys.

        Raises ``CacheBackendError`` when bypassed or when the call fails.
        """
        if self._cache.bypassed or not await self._settle():
            self.owe(owe)
            raise CacheBackendError("bypassed after an error")
        try:
            return await call()
        except CacheBackendError as exc:
            self._cache.backend_failed(operation, exc)
            self.owe(owe)
            raise

    def owe(self, keys: Iterable[str]) -> None:
        """Delete ``keys`` (full backend keys) once the backend answers again."""
        self._owed.update(keys)
        if len(self._owed) > _MAX_OWED_DELETIONS:
            self._owed.clear()
            self._owe_everything = True
        if (self._owed or self._owe_everything) and (
            self._settle_task is None or self._settle_task.done()
        ):
            self._settle_task = asyncio.get_running_loop().create_task(
                self._settle_later(), name=f"petpal-{self._store}-settle"
            )

    def forgive(self) -> None:
        """Forget every owed deletion (the store was just cleared)."""
        self._owed.clear()
        self._owe_everything = False

    async def close(self) -> None:
        if not self._cache.bypassed:
            # A last delivery: a worker's child process runs its event loop
            # only while it runs a job, so the background settling may never
            # have had its turn since the backend came back (found by a
            # trial: a worker stopped after Redis was back said four
            # timelines' deletions were undelivered).
            await self._settle()
        if self._owed or self._owe_everything:
            log.warning(
                "store.deletions_undelivered", store=self._store, keys=len(self._owed)
            )
        if self._settle_task is not None:
            self._settle_task.cancel()
            await asyncio.gather(self._settle_task, return_exceptions=True)

    async def _settle_later(self) -> None:
        """Deliver owed deletions even if this process uses the store no more."""
        while self._owed or self._owe_everything:
            await asyncio.sleep(0.1)
            if not self._cache.bypassed:
                await self._settle()

    async def _settle(self) -> bool:
        """Deliver the owed deletions first; False if the backend failed."""
        if not (self._owed or self._owe_everything):
            return True
        async with self._settling:
            if self._cache.bypassed:
                return False  # the delivery we waited for failed
            owed, everything = list(self._owed), self._owe_everything
            try:
                if everything:
                    await self._backend.clear()
                elif owed:
                    await self._backend.delete(owed)
            except CacheBackendError as exc:
                self._cache.backend_failed(f"{self._store}_delete", exc)
                return False
            self._owed.difference_update(owed)
            self._owe_everything = self._owe_everything and not everything
            if owed or everything:
                log.info("store.deletions_delivered", store=self._store, keys=len(owed))
        return True
