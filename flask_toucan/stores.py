"""In-process building blocks of the token cache: locks, a front map, the default backend."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from flask_caching.backends.simplecache import SimpleCache

from .tokens import EmbedToken

__all__ = ["FrontCache", "KeyLocks", "TokenSimpleCache"]


class TokenSimpleCache(SimpleCache):
    """flask-caching's SimpleCache (the default backend), pruned in batches.

    Once over its threshold, SimpleCache scans and sorts every entry on every
    ``set`` to drop a single one: with 10,000 users that is milliseconds of CPU per
    mint. This drops the oldest tenth at once, so the sort happens once per
    ``threshold / 10`` writes.
    """

    def _remove_older(self) -> None:
        target = int(self._threshold * 0.9)
        ordered = sorted(self._cache.items(), key=lambda item: item[1][0])
        for key, _ in ordered[: max(0, len(self._cache) - target)]:
            self._cache.pop(key, None)


class KeyLocks:
    """One lock per key, created on demand and dropped when nobody holds or waits."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                _, users = self._locks[key]
                if users <= 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class FrontCache:
    """A small bounded in-process map of key → (deadline, EmbedToken).

    Not cachelib's SimpleCache: that one pickles every value, which costs more
    than the rest of a warm page view's token handling together. Entries are
    EmbedToken objects (immutable), evicted oldest-first when full.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: dict[str, tuple[float, EmbedToken]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> EmbedToken | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            with self._lock:
                self._entries.pop(key, None)
            return None
        return entry[1]

    def set(self, key: str, token: EmbedToken, ttl: float) -> None:
        with self._lock:
            self._entries.pop(key, None)
            while len(self._entries) >= self.size:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = (time.monotonic() + ttl, token)

    def delete(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
