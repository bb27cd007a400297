"""Single-flight: one mint per token at a time, in a process and across processes.

In a process, a lock per key (:class:`KeyLocks`). Across processes, a *lease* in
the shared cache backend, taken before minting and released after the token is
stored, so that other processes wait for that token instead of minting their own:

* Redis, Redis Sentinel and Redis Cluster: redis-py's :class:`redis.lock.Lock`
  (``SET NX PX`` with a random token; release and expiry by compare-and-delete in
  Lua). A lease always has an expiry, even when its holder is killed mid-mint, and
  a holder can only release its own lease.
* Backends whose ``add`` is atomic (Memcached): ``add`` with a random owner token
  and an expiry in one command; released by get-compare-delete, which is not atomic,
  so a lease that expired during a mint may, rarely, be deleted for its next holder
  (the cost is one extra mint, never a wrong token).
* Anything else (FileSystemCache, ...): no cross-process lease. Each process still
  mints at most once per key at a time.

Every lease has a fresh random owner token per acquisition, so processes forked
from one parent (gunicorn ``--preload``) never share an owner.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

__all__ = ["KeyLocks", "Lease", "Leases", "key_prefix", "leases_for"]


class KeyLocks:
    """One lock per key, created on demand and dropped when nobody holds or waits.

    Its size is bounded by the number of threads using it at once.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str, timeout: float = -1) -> Iterator[None]:
        """Hold ``key``'s lock; TimeoutError if it cannot be had within ``timeout`` s."""
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            if not lock.acquire(timeout=max(0.0, timeout) if timeout >= 0 else -1):
                raise TimeoutError(key)
            try:
                yield
            finally:
                lock.release()
        finally:
            with self._guard:
                _, users = self._locks[key]
                if users <= 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class Lease(Protocol):
    def release(self) -> None:
        """Give the lease back if it is still ours (a no-op once it expired)."""


class Leases(Protocol):
    """Cross-process leases on names in a shared backend. Backend errors propagate."""

    def acquire(self, name: str) -> Lease | None:
        """The lease on ``name``, or None while another process holds it."""

    def held(self, name: str) -> bool:
        """Whether anyone holds the lease on ``name`` now."""


class _RedisLease:
    def __init__(self, lock: Any) -> None:
        self._lock = lock

    def release(self) -> None:
        from redis.exceptions import LockError

        # Expired (and maybe someone else's now): nothing of ours to release.
        with contextlib.suppress(LockError):
            self._lock.release()


class RedisLeases:
    """Leases as redis-py locks; works on a plain, Sentinel master or Cluster client."""

    def __init__(self, client: Any, ttl: float, prefix: str = "") -> None:
        self.client = client
        self.ttl = ttl
        self.prefix = prefix

    def acquire(self, name: str) -> Lease | None:
        lock = self.client.lock(
            self.prefix + name, timeout=self.ttl, blocking=False, thread_local=False
        )
        return _RedisLease(lock) if lock.acquire(blocking=False) else None

    def held(self, name: str) -> bool:
        return bool(self.client.exists(self.prefix + name))


class _AddLease:
    def __init__(self, backend: Any, name: str, owner: str) -> None:
        self._backend, self._name, self._owner = backend, name, owner

    def release(self) -> None:
        if self._backend.get(self._name) == self._owner:
            self._backend.delete(self._name)


class AddLeases:
    """Leases through a backend whose ``add`` sets a value and its expiry atomically."""

    def __init__(self, backend: Any, ttl: float) -> None:
        self.backend = backend
        self.ttl = ttl

    def acquire(self, name: str) -> Lease | None:
        owner = secrets.token_hex(16)
        if self.backend.add(name, owner, timeout=max(1, round(self.ttl))):
            return _AddLease(self.backend, name, owner)
        return None

    def held(self, name: str) -> bool:
        return self.backend.get(name) is not None


def key_prefix(backend: Any) -> str:
    """The prefix a cachelib Redis backend puts before every key (a string or a callable)."""
    prefix = getattr(backend, "key_prefix", "") or ""
    return str(prefix() if callable(prefix) else prefix)


def leases_for(backend: Any, ttl: float) -> Leases | None:
    """The cross-process leases a flask-caching backend supports, or None (per-process only)."""
    from cachelib.memcached import MemcachedCache
    from cachelib.redis import RedisCache

    if isinstance(backend, RedisCache):
        # Also flask-caching's RedisSentinelCache (the master) and RedisClusterCache.
        return RedisLeases(backend._write_client, ttl, key_prefix(backend))
    if isinstance(backend, MemcachedCache):
        return AddLeases(backend, ttl)
    return None
