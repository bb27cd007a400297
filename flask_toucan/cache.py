"""TokenCache: reuse tokens through any flask-caching backend, minting once per key."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from .tokens import EmbedToken, now

__all__ = ["CacheBackend", "TokenCache"]

logger = logging.getLogger("flask_toucan")


class CacheBackend(Protocol):
    """The part of the flask-caching / cachelib interface we use."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any, timeout: int | None = None) -> Any: ...

    def delete(self, key: str) -> Any: ...


class _KeyLocks:
    """One lock per key, created on demand and dropped when nobody holds or waits."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (None, 0))
            if lock is None:
                lock = threading.Lock()
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


class TokenCache:
    """Hands out cached tokens with at least ``min_ttl`` seconds left, minting otherwise.

    A backend that raises (Redis down, ...) is logged and bypassed: the caller
    still gets a token, minted directly. A failed mint stores nothing.
    """

    def __init__(
        self,
        backend: CacheBackend | Callable[[], CacheBackend],
        *,
        min_ttl: int = 300,
        error_log_interval: float = 30.0,
    ) -> None:
        self._backend = backend
        self.min_ttl = min_ttl
        self._locks = _KeyLocks()
        self._error_log_interval = error_log_interval
        self._last_error_log = -float("inf")

    @property
    def backend(self) -> CacheBackend:
        backend = self._backend
        if callable(backend) and not hasattr(backend, "get"):
            return backend()
        return backend  # type: ignore[return-value]

    def usable(self, token: EmbedToken | None) -> bool:
        return token is not None and token.expires_at_epoch - now() >= self.min_ttl

    def get(self, key: str) -> EmbedToken | None:
        """The cached token for ``key`` if it still has ``min_ttl`` seconds left."""
        try:
            data = self.backend.get(key)
        except Exception as exc:
            self._backend_failed("read", exc)
            return None
        token = EmbedToken.from_cache(data)
        return token if self.usable(token) else None

    def put(self, key: str, token: EmbedToken) -> None:
        # The entry dies when the token stops being servable, so no backend ever
        # returns one we would refuse.
        timeout = int(token.expires_at_epoch - now()) - self.min_ttl
        if timeout <= 0:
            logger.warning(
                "Toucan issued a token with only %d seconds of life, less than "
                "TOUCAN_MIN_TOKEN_TTL (%d); it is used once and not cached",
                token.expires_in,
                self.min_ttl,
            )
            return
        try:
            self.backend.set(key, token.to_cache(), timeout=timeout)
        except Exception as exc:
            self._backend_failed("write", exc)

    def delete(self, key: str) -> None:
        try:
            self.backend.delete(key)
        except Exception as exc:
            self._backend_failed("delete", exc)

    def get_or_mint(
        self, key: str, mint: Callable[[], EmbedToken], *, force: bool = False
    ) -> EmbedToken:
        """A usable token for ``key``: from the cache, or from one call to ``mint``.

        Concurrent callers in this process for the same key wait for a single
        mint. With ``force`` the cached token is skipped, but a token minted by
        another caller after this call began is accepted as fresh enough.
        """
        started = now()
        if not force:
            token = self.get(key)
            if token is not None:
                return token
        with self._locks.hold(key):
            token = self.get(key)
            if token is not None and (
                not force or (token.issued_at is not None and token.issued_at.timestamp() > started)
            ):
                return token
            token = mint()
            self.put(key, token)
            return token

    def _backend_failed(self, action: str, exc: Exception) -> None:
        # A dead Redis would otherwise log once per page view.
        current = time.monotonic()
        if current - self._last_error_log >= self._error_log_interval:
            self._last_error_log = current
            logger.warning(
                "token cache %s failed (%s: %s); minting without the cache",
                action,
                type(exc).__name__,
                exc,
            )
