"""Where tokens are stored: the flask-caching backend of one app, the format, the front map.

* ``TOUCAN_CACHE_CONFIG`` unset: :class:`TokenSimpleCache`, in process.
* ``TOUCAN_CACHE_CONFIG`` set: the flask-caching backend it describes. On the Redis
  family (Redis, Sentinel, Cluster) values are JSON text through
  :class:`TextSerializer`: never pickled, never unpickled. On Memcached through
  python-memcached, values are JSON text and a value flagged as a pickle is not loaded.
* ``Toucan(app, cache=...)``: the app's own backend, values serialized its way
  (pickle, for most): see SECURITY.md.

Also here: the format of a cached token (JSON) and :class:`FrontCache`, the small
in-process map a :class:`~flask_toucan.cache.TokenCache` keeps over a shared backend.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cachelib.memcached import MemcachedCache
from cachelib.redis import RedisCache
from flask import Flask
from flask_caching import Cache
from flask_caching.backends.simplecache import SimpleCache

from .checks import redact
from .errors import ToucanConfigError
from .settings import Settings
from .tokens import EmbedToken

logger = logging.getLogger("flask_toucan")

__all__ = [
    "BackendGuard",
    "FrontCache",
    "TextSerializer",
    "TokenSimpleCache",
    "backend_for",
    "decode_token",
    "encode_token",
]


class TextSerializer:
    """A cachelib serializer for our JSON text: stored as UTF-8, never pickled or unpickled.

    Installed on the backends flask_toucan builds itself, so that write access to
    Redis cannot become code execution in the app (pickle would allow it).
    """

    def dumps(self, value: Any, *args: Any, **kwargs: Any) -> bytes:
        if not isinstance(value, str):
            raise TypeError("flask_toucan's cache stores JSON text only")
        return value.encode()

    def loads(self, value: Any, *args: Any, **kwargs: Any) -> str | None:
        if not isinstance(value, bytes):
            return None
        try:
            return value.decode()
        except UnicodeDecodeError:
            return None


class _AsIs:
    """A cachelib serializer that keeps values as they are (for an in-process dict)."""

    def dumps(self, value: Any, *args: Any, **kwargs: Any) -> Any:
        return value

    def loads(self, value: Any, *args: Any, **kwargs: Any) -> Any:
        return value


class TokenSimpleCache(SimpleCache):
    """The default in-process backend: SimpleCache holding EmbedToken objects, pruned in batches.

    Nothing leaves the process, so tokens are kept as the immutable objects they are:
    no JSON to decode on every warm view (benchmarks: about a tenth of the overhead).
    Once over its threshold, SimpleCache sorts every entry on every ``set`` to drop
    one; with 10,000 users that is milliseconds per mint. This drops the oldest
    tenth at once, so the sort happens once per ``threshold / 10`` writes.
    """

    serializer = _AsIs()  # type: ignore[assignment]
    holds_objects = True  # read by TokenCache: store EmbedToken objects, not JSON

    def _remove_older(self) -> None:
        target = int(self._threshold * 0.9)
        ordered = sorted(self._cache.items(), key=lambda item: item[1][0])
        for key, _ in ordered[: max(0, len(self._cache) - target)]:
            self._cache.pop(key, None)


class FrontCache:
    """A bounded in-process map of key → (deadline, EmbedToken), oldest evicted first.

    Not cachelib's SimpleCache: that one serializes every value, which costs more
    than the rest of a warm view's token handling together.
    """

    def __init__(self, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        self._entries: dict[str, tuple[float, EmbedToken]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> EmbedToken | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            self.delete(key)
            return None
        return entry[1]

    def set(self, key: str, token: EmbedToken, ttl: float) -> None:
        with self._lock:
            self._entries.pop(key, None)
            while len(self._entries) >= self.size:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = (time.monotonic() + min(ttl, self.ttl), token)

    def delete(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


def encode_token(token: EmbedToken) -> str:
    """The cache format: JSON with absolute epoch times every host agrees on."""
    return json.dumps(
        {
            "v": 2,
            "token": token.value,
            "expires_at": token.expires_at_epoch,
            "issued_at": token.issued_at.timestamp() if token.issued_at else None,
        },
        separators=(",", ":"),
    )


def decode_token(text: object) -> EmbedToken | None:
    """The token in a cache value, or None for anything that is not our format."""
    if isinstance(text, EmbedToken):  # from the in-process default backend
        return text
    if not isinstance(text, str):
        return None
    try:
        data = json.loads(text)
        value, expires_at, issued_at = data["token"], data["expires_at"], data["issued_at"]
        if data.get("v") != 2 or not isinstance(value, str):
            return None
        return EmbedToken(
            value=value,
            expires_at=datetime.fromtimestamp(float(expires_at), UTC),
            issued_at=None if issued_at is None else datetime.fromtimestamp(issued_at, UTC),
        )
    except (ValueError, TypeError, KeyError, OverflowError, OSError, AttributeError):
        return None


_FAST_FAIL = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
_REDIS_TIMEOUTS: dict[str, dict[str, float]] = {
    "RedisCache": _FAST_FAIL,
    "redis": _FAST_FAIL,
    "RedisClusterCache": _FAST_FAIL,
    "rediscluster": _FAST_FAIL,
    "RedisSentinelCache": {**_FAST_FAIL, "sentinel_socket_timeout": 1.0},
    "redissentinel": {**_FAST_FAIL, "sentinel_socket_timeout": 1.0},
}


def backend_for(app: Flask, settings: Settings, cache: Cache | None) -> Callable[[], Any]:
    """How to reach the app's token backend once the app runs."""
    if cache is not None:
        # The app's Cache may be initialised after us: look its backend up on first use.
        app_cache = cache
        return lambda: app.extensions["cache"][app_cache]
    config: dict[str, Any] = {
        "CACHE_TYPE": "flask_toucan.backends.TokenSimpleCache",
        "CACHE_THRESHOLD": 10_000,
        "CACHE_KEY_PREFIX": "",  # TOUCAN_CACHE_KEY_PREFIX already namespaces our keys
    }
    config.update(settings.cache_config or {})
    kind = str(config["CACHE_TYPE"]).rsplit(".", 1)[-1]
    if kind in _REDIS_TIMEOUTS:
        # A Redis that hangs must not hang page views: fail fast, mint directly.
        config.setdefault("CACHE_OPTIONS", dict(_REDIS_TIMEOUTS[kind]))
    own = Cache(config=config)
    try:
        own.init_app(app)
    except Exception as exc:
        raise ToucanConfigError(
            f"TOUCAN_CACHE_CONFIG could not be used: {type(exc).__name__}: {redact(str(exc))}"
        ) from None
    backend = app.extensions["cache"][own]
    if isinstance(backend, RedisCache):
        backend.serializer = TextSerializer()  # type: ignore[assignment]
    if isinstance(backend, MemcachedCache) and hasattr(backend._client, "unpickler"):
        # python-memcached unpickles any value flagged as a pickle: refuse instead.
        backend._client.unpickler = _NoUnpickler
    return lambda: backend


class _NoUnpickler:
    """python-memcached's unpickler, refusing: a value flagged as a pickle reads as a miss."""

    def __init__(self, file: Any) -> None:
        self.persistent_load: Any = None

    def load(self) -> None:
        return None


class BackendGuard:
    """Calls into a shared backend that may fail (Redis down, ...) without failing the page.

    ``guard(action, operation)`` is ``operation()``, or None when it raised or the
    backend is cooling down: after a failure the backend is skipped for ``cooldown``
    seconds, and failures are logged at most every ``log_interval`` seconds (a dead
    Redis would otherwise log once per page view).
    """

    def __init__(
        self, what: str, fallback: str, *, cooldown: float = 2.0, log_interval: float = 30.0
    ) -> None:
        self.what = what
        self.fallback = fallback
        self.cooldown = cooldown
        self.log_interval = log_interval
        self._down_until = 0.0
        self._last_log = -float("inf")

    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def __call__(self, action: str, operation: Callable[[], Any]) -> Any:
        if self.down():
            return None
        try:
            return operation()
        except Exception as exc:
            current = time.monotonic()
            self._down_until = current + self.cooldown
            if current - self._last_log >= self.log_interval:
                self._last_log = current
                logger.warning(
                    "%s %s failed (%s: %s); %s",
                    self.what,
                    action,
                    type(exc).__name__,
                    exc,
                    self.fallback,
                )
            return None
