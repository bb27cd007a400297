"""TokenCache: reuse tokens through any flask-caching backend, minting once per key.

Two levels: a small in-process front cache (no network round trip for a warm
token) over the shared backend (SimpleCache, or Redis shared by every worker and
host). Minting is single-flight twice over: a per-key thread lock in the process,
and a lease lock in the shared backend (``add`` is atomic there: SET NX on Redis)
so that one mint serves every process.

Refresh-ahead. Once a token has used ``refresh_ahead`` of its life, the request
that notices is served the cached token at once and a background thread renews it
(under the same lease lock, so one process per token generation does it). A
background thread was chosen over probabilistic early expiry (XFetch): XFetch
makes the unlucky request wait on Toucan, and we want no page view to wait once
warm; the cost is one idle daemon thread pool per process. If the renewal fails
the still-valid token keeps being served (stale-while-error) and the unreleased
lease doubles as a back-off; only when no token with ``min_ttl`` left exists does
a caller see the error.

A backend that raises (Redis down, ...) is logged at most every few seconds and
skipped for a short cool-down: tokens are then minted directly and kept in the
front cache, and the backend is tried again after the cool-down.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from .errors import ToucanError
from .stores import FrontCache, KeyLocks, TokenSimpleCache
from .tokens import EmbedToken, now

__all__ = ["CacheBackend", "FrontCache", "TokenCache", "TokenSimpleCache"]

logger = logging.getLogger("flask_toucan")

Mint = Callable[[], EmbedToken]


class CacheBackend(Protocol):
    """The part of the flask-caching / cachelib interface we use."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any, timeout: int | None = None) -> Any: ...

    def add(self, key: str, value: Any, timeout: int | None = None) -> Any: ...

    def delete(self, key: str) -> Any: ...


class TokenCache:
    """Hands out cached tokens with at least ``min_ttl`` seconds left, minting otherwise."""

    def __init__(
        self,
        backend: CacheBackend,
        *,
        min_ttl: int = 300,
        refresh_ahead: float = 0.5,
        lock_timeout: int = 10,
        lock_wait: float = 5.0,
        front_size: int = 1000,
        front_ttl: float = 30.0,
        backend_cooldown: float = 2.0,
        error_log_interval: float = 30.0,
    ) -> None:
        self.backend = backend
        self.min_ttl = min_ttl
        self.refresh_ahead = refresh_ahead
        self.lock_timeout = lock_timeout
        self.lock_wait = lock_wait
        self.front_ttl = front_ttl
        self.front: FrontCache | None = (
            FrontCache(front_size) if front_ttl > 0 and front_size > 0 else None
        )
        self._backend_cooldown = backend_cooldown
        self._backend_down_until = 0.0
        self._error_log_interval = error_log_interval
        self._last_error_log = -float("inf")
        self._locks = KeyLocks()
        self._renewing: set[str] = set()
        self._guard = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._executor_pid = 0
        self._owner = uuid.uuid4().hex
        self._warned_short = False

    # -- reading ------------------------------------------------------------

    def usable(self, token: EmbedToken | None) -> bool:
        return token is not None and token.expires_at_epoch - now() >= self.min_ttl

    def get(self, key: str) -> EmbedToken | None:
        """The cached token for ``key`` if it has ``min_ttl`` seconds left (front, then shared)."""
        token = self._front_get(key)
        if token is not None:
            return token
        token = self._shared_get(key)
        if token is not None:
            self._front_put(key, token)
        return token

    def _front_get(self, key: str) -> EmbedToken | None:
        if self.front is None:
            return None
        token = self.front.get(key)
        return token if token is not None and self.usable(token) else None

    def _shared_get(self, key: str) -> EmbedToken | None:
        data = self._call("read", lambda: self.backend.get(key))
        token = EmbedToken.from_cache(data)
        return token if self.usable(token) else None

    # -- writing ------------------------------------------------------------

    def put(self, key: str, token: EmbedToken) -> None:
        # The entry dies when the token stops being servable, so no level ever
        # returns one we would refuse.
        timeout = int(token.expires_at_epoch - now()) - self.min_ttl
        if timeout <= 0:
            # A configuration mismatch, not an event: say it once per process
            # at WARNING, then at DEBUG, instead of on every page view.
            level = logging.DEBUG if self._warned_short else logging.WARNING
            self._warned_short = True
            logger.log(
                level,
                "Toucan issued a token with only %d seconds of life, less than "
                "TOUCAN_MIN_TOKEN_TTL (%d); such tokens are used once and not cached",
                token.expires_in,
                self.min_ttl,
            )
            return
        self._call("write", lambda: self.backend.set(key, token.to_cache(), timeout=timeout))
        self._front_put(key, token)

    def _front_put(self, key: str, token: EmbedToken) -> None:
        if self.front is None:
            return
        ttl = min(self.front_ttl, token.expires_at_epoch - now() - self.min_ttl)
        if ttl > 0:
            self.front.set(key, token, ttl)

    def delete(self, key: str) -> None:
        """Forget ``key`` here and in the shared backend (other processes' front
        caches forget it within ``front_ttl`` seconds)."""
        if self.front is not None:
            self.front.delete(key)
        self._call("delete", lambda: self.backend.delete(key))

    # -- minting ------------------------------------------------------------

    def get_or_mint(self, key: str, mint: Mint, *, force: bool = False) -> EmbedToken:
        """A usable token for ``key``: cached, or from one call to ``mint`` across processes.

        With ``force`` the cached token is skipped, but a token minted by another
        caller after this call began is accepted as fresh enough.
        """
        started = now()
        if not force:
            token = self.get(key)
            if token is not None:
                self._maybe_renew_ahead(key, token, mint)
                return token
        with self._locks.hold(key):
            token = self.get(key)
            if token is not None and (not force or _issued_after(token, started)):
                return token
            return self._mint_single_flight(key, mint, started if force else None)

    def _mint_single_flight(self, key: str, mint: Mint, fresh_after: float | None) -> EmbedToken:
        lock_key = key + ":lock"
        deadline = time.monotonic() + self.lock_wait
        acquired = self._acquire(lock_key)
        while acquired is False:
            token = self._wait_for(key, lock_key, fresh_after, deadline)
            if token is not None:
                return token
            if time.monotonic() >= deadline:
                logger.warning(
                    "waited %.1fs for another process to mint a token; minting", self.lock_wait
                )
                break
            # The holder let go without leaving a token (it failed or died): take over.
            acquired = self._acquire(lock_key)
        try:
            token = mint()
            self.put(key, token)  # stored before the lock goes, so waiters find it
            return token
        finally:
            if acquired:
                self._release(lock_key)

    def _acquire(self, lock_key: str) -> bool | None:
        """True: we hold the lease. False: someone else does. None: backend unusable."""
        result = self._call(
            "lock", lambda: self.backend.add(lock_key, self._owner, timeout=self.lock_timeout)
        )
        if result is None and self._backend_down():
            return None
        return bool(result)

    def _release(self, lock_key: str) -> None:
        # Only our own lease: after it expired someone else may hold the key.
        if self._call("unlock", lambda: self.backend.get(lock_key)) == self._owner:
            self._call("unlock", lambda: self.backend.delete(lock_key))

    def _wait_for(
        self, key: str, lock_key: str, fresh_after: float | None, deadline: float
    ) -> EmbedToken | None:
        """The token another process is minting; None when its lock is gone or time is up."""
        delay = 0.02
        while time.monotonic() < deadline:
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)
            token = self._fresh_shared(key, fresh_after)
            if token is not None:
                return token
            if self._backend_down():
                return None
            if self._call("lock", lambda: self.backend.get(lock_key)) is None:
                # The holder stores the token before it lets go of the lock, so
                # look once more: it may have landed between the two reads.
                return self._fresh_shared(key, fresh_after)
        return None

    def _fresh_shared(self, key: str, fresh_after: float | None) -> EmbedToken | None:
        token = self._shared_get(key)
        if token is None or (fresh_after is not None and not _issued_after(token, fresh_after)):
            return None
        self._front_put(key, token)
        return token

    # -- refresh-ahead ------------------------------------------------------

    def _maybe_renew_ahead(self, key: str, token: EmbedToken, mint: Mint) -> None:
        if self.refresh_ahead <= 0 or token.issued_at is None:
            return
        issued = token.issued_at.timestamp()
        if now() - issued < (token.expires_at_epoch - issued) * self.refresh_ahead:
            return
        with self._guard:
            if key in self._renewing:
                return
            self._renewing.add(key)
        try:
            self._pool().submit(self._renew, key, token, mint)
        except RuntimeError:  # interpreter shutting down
            self._renewing.discard(key)

    def _pool(self) -> ThreadPoolExecutor:
        # Threads do not survive a fork: each gunicorn worker makes its own pool.
        pid = os.getpid()
        with self._guard:
            if self._executor is None or self._executor_pid != pid:
                self._executor = ThreadPoolExecutor(2, thread_name_prefix="toucan-renew")
                self._executor_pid = pid
            return self._executor

    def _renew(self, key: str, seen: EmbedToken, mint: Mint) -> None:
        try:
            latest = self._shared_get(key)
            if latest is not None and latest.expires_at_epoch > seen.expires_at_epoch:
                self._front_put(key, latest)  # another process already renewed it
                return
            lock_key = key + ":lock"
            acquired = self._acquire(lock_key)
            if acquired is False:
                return  # renewing elsewhere, or backing off after a failure
            try:
                token = mint()
            except ToucanError as exc:
                # Stale-while-error: the lease is left to expire as a back-off.
                logger.warning(
                    "renewing a token ahead of expiry failed (%s); still serving the "
                    "cached one, %d seconds left",
                    type(exc).__name__,
                    seen.expires_in,
                )
                return
            self.put(key, token)
            if acquired:
                self._release(lock_key)
        except Exception:
            logger.exception("unexpected error while renewing a token ahead of expiry")
        finally:
            with self._guard:
                self._renewing.discard(key)

    # -- backend failures ---------------------------------------------------

    def _backend_down(self) -> bool:
        return time.monotonic() < self._backend_down_until

    def _call(self, action: str, operation: Callable[[], Any]) -> Any:
        if self._backend_down():
            return None
        try:
            return operation()
        except Exception as exc:
            self._backend_down_until = time.monotonic() + self._backend_cooldown
            current = time.monotonic()
            # A dead Redis would otherwise log once per page view.
            if current - self._last_error_log >= self._error_log_interval:
                self._last_error_log = current
                logger.warning(
                    "token cache %s failed (%s: %s); minting without the shared cache",
                    action,
                    type(exc).__name__,
                    exc,
                )
            return None


def _issued_after(token: EmbedToken, moment: float) -> bool:
    return token.issued_at is not None and token.issued_at.timestamp() > moment
