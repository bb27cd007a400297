"""Storage of tokens, and nothing else: the backend, the value format, the front map, leases.

* ``TOUCAN_CACHE_CONFIG`` unset: :class:`TokenMemoryCache`, in process, holding
  :class:`~flask_toucan.tokens.EmbedToken` objects.
* ``TOUCAN_CACHE_CONFIG`` set: the flask-caching backend it describes, built through
  flask-caching. On the Redis family (Redis, Sentinel, Cluster) our subclasses keep
  the redis-py client they were given (for leases and key listing) and store JSON
  text through :class:`TextSerializer`: never pickled, never unpickled. On Memcached
  through python-memcached, the client is made with an unpickler that refuses, so a
  planted pickle reads as a miss.
* ``Toucan(app, cache=...)``: the app's own backend, values serialized its way
  (pickle, for most): see SECURITY.md. No cross-process leases there.

Only public APIs of cachelib, flask-caching, redis-py and python-memcached are used:
constructors, ``get``/``set``/``add``/``delete``, the serializer hook, ``Lock``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import re
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from cachelib.memcached import MemcachedCache
from flask import Flask
from flask_caching import Cache
from flask_caching.backends.base import BaseCache
from flask_caching.backends.memcache import MemcachedCache as FlaskMemcachedCache
from flask_caching.backends.rediscache import (
    RedisCache as FlaskRedisCache,
)
from flask_caching.backends.rediscache import (
    RedisClusterCache as FlaskRedisClusterCache,
)
from flask_caching.backends.rediscache import (
    RedisSentinelCache as FlaskRedisSentinelCache,
)

from .checks import redact
from .errors import ToucanConfigError
from .settings import Settings
from .tokens import EmbedToken, now, serving_margin

__all__ = [
    "BackendGuard",
    "FrontCache",
    "Lease",
    "Leases",
    "TextSerializer",
    "TokenMemoryCache",
    "TokenStore",
    "backend_for",
    "decode_token",
    "encode_token",
    "in_process",
]

logger = logging.getLogger("flask_toucan")


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


class TokenMemoryCache(BaseCache):
    """The default in-process backend: a dict of key → (deadline, value), pruned in batches.

    Nothing leaves the process, so tokens are kept as the immutable objects they are:
    no JSON to decode on every warm view (benchmarks: about a tenth of the overhead).
    Once over ``threshold`` entries, the expired ones and then the oldest tenth go at
    once, so the sort happens once per ``threshold / 10`` writes, not on every write.
    """

    holds_objects = True  # read by TokenStore: store EmbedToken objects, not JSON

    def __init__(
        self,
        threshold: int = 10_000,
        default_timeout: int = 300,
        ignore_delete_many_errors: bool = False,
    ) -> None:
        # Only default_timeout: older flask-caching takes nothing else.
        super().__init__(default_timeout)
        self.ignore_delete_many_errors = ignore_delete_many_errors
        self.threshold = threshold
        self._entries: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    @classmethod
    def factory(
        cls, app: Flask, config: dict[str, Any], args: list[Any], kwargs: dict[str, Any]
    ) -> TokenMemoryCache:
        """flask-caching's backend constructor hook."""
        kwargs.setdefault("threshold", config.get("CACHE_THRESHOLD", 10_000))
        kwargs.setdefault("default_timeout", config.get("CACHE_DEFAULT_TIMEOUT", 300))
        return cls(*args, **kwargs)

    def _expiry(self, timeout: int | timedelta | None) -> float:
        if timeout is None:
            timeout = self.default_timeout
        if isinstance(timeout, timedelta):
            timeout = int(timeout.total_seconds())
        return float("inf") if timeout <= 0 else time.time() + timeout

    def get(self, key: str) -> Any:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= time.time():
            return None
        return entry[1]

    def set(self, key: str, value: Any, timeout: int | timedelta | None = None) -> bool:
        with self._lock:
            if len(self._entries) >= self.threshold:
                self._prune()
            self._entries[key] = (self._expiry(timeout), value)
        return True

    def add(self, key: str, value: Any, timeout: int | timedelta | None = None) -> bool:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] > time.time():
                return False
            self._entries[key] = (self._expiry(timeout), value)
        return True

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._entries.pop(key, None) is not None

    def has(self, key: str) -> bool:
        return self.get(key) is not None

    def clear(self) -> bool:
        with self._lock:
            self._entries.clear()
        return True

    def keys(self) -> list[str]:
        """The keys held now (``flask toucan cache``)."""
        current = time.time()
        return [k for k, (ends, _) in list(self._entries.items()) if ends > current]

    def _prune(self) -> None:
        current = time.time()
        for key in [k for k, (ends, _) in self._entries.items() if ends <= current]:
            del self._entries[key]
        target = int(self.threshold * 0.9)
        if len(self._entries) > target:
            ordered = sorted(self._entries.items(), key=lambda item: item[1][0])
            for key, _ in ordered[: len(self._entries) - target]:
                del self._entries[key]


class _KeepsRedisClient(FlaskRedisCache):
    """flask-caching's RedisCache that keeps the redis-py client it stores through.

    The leases (redis-py ``Lock``) and ``flask toucan cache`` need that client; cachelib
    keeps it in a private attribute, so it is made here, the way cachelib would make
    it, and kept as ``client``. Sentinel and Cluster hand their client in as ``host``.
    """

    client: Any

    def __init__(self, host: Any = "localhost", port: int = 6379, password: str | None = None,
                 db: int = 0, **kwargs: Any) -> None:  # fmt: skip
        options = {k: kwargs.pop(k) for k in list(kwargs) if k not in _CACHELIB_REDIS_ARGS}
        if isinstance(host, str):
            import redis

            host = redis.Redis(host=host, port=port, password=password, db=db, **options)
        self.client = host
        FlaskRedisCache.__init__(self, host=host, **kwargs)
        self.serializer = TextSerializer()  # type: ignore[assignment]

    def keys_under(self, prefix: str) -> Iterator[str]:
        """Our keys that start with ``prefix``, glob characters in it taken literally."""
        outer = _key_prefix(self)
        found = self.client.scan_iter(match=_glob_escape(outer + prefix) + "*", count=500)
        for k in found:
            text = k.decode() if isinstance(k, bytes) else str(k)
            yield text[len(outer) :]


_CACHELIB_REDIS_ARGS = {"default_timeout", "key_prefix", "ignore_delete_many_errors"}


class TokenRedisCache(_KeepsRedisClient):
    """``CACHE_TYPE = "RedisCache"``, as flask_toucan builds it."""


# flask-caching's Sentinel and Cluster backends keep their client only in cachelib's
# private attribute (and before 2.5 never hand it to the base constructor at all), so
# these two make the client themselves, with redis-py's public API, from the same
# arguments flask-caching's factories pass; the factories are inherited.


class TokenRedisSentinelCache(FlaskRedisSentinelCache, _KeepsRedisClient):
    """``CACHE_TYPE = "RedisSentinelCache"``: reads, writes and leases go to the master."""

    def __init__(self, sentinels: Any = None, master: str | None = None,
                 password: str | None = None, db: int = 0, **kwargs: Any) -> None:  # fmt: skip
        sentinels_module: Any = importlib.import_module("redis.sentinel")  # partly untyped
        own = {k: kwargs.pop(k) for k in list(kwargs) if k in _CACHELIB_REDIS_ARGS}
        sentinel_options = {k[9:]: v for k, v in kwargs.items() if k.startswith("sentinel_")}
        options = {k: v for k, v in kwargs.items() if not k.startswith("sentinel_")}
        sentinel = sentinels_module.Sentinel(
            sentinels or [("127.0.0.1", 26379)],
            password=password,
            db=db,
            sentinel_kwargs=sentinel_options,
            **options,
        )
        _KeepsRedisClient.__init__(self, host=sentinel.master_for(master or "mymaster"), **own)


class TokenRedisClusterCache(FlaskRedisClusterCache, _KeepsRedisClient):
    """``CACHE_TYPE = "RedisClusterCache"``."""

    def __init__(self, cluster: str = "", password: str = "", **kwargs: Any) -> None:
        cluster_module: Any = importlib.import_module("redis.cluster")  # partly untyped
        own = {k: kwargs.pop(k) for k in list(kwargs) if k in _CACHELIB_REDIS_ARGS}
        url = kwargs.pop("redis_url", None)
        if url:
            client = cluster_module.RedisCluster.from_url(url, **kwargs)
        else:
            try:
                nodes = [cluster_module.ClusterNode(h.strip(), int(p)) for h, p in
                         (node.rsplit(":", 1) for node in cluster.split(","))]  # fmt: skip
            except ValueError:
                raise ValueError(
                    "CACHE_REDIS_CLUSTER must be host1:port1,host2:port2,..."
                ) from None
            kwargs.setdefault("skip_full_coverage_check", True)
            client = cluster_module.RedisCluster(
                startup_nodes=nodes, password=password or None, **kwargs
            )
        _KeepsRedisClient.__init__(self, host=client, **own)


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class _NoUnpickler:
    """python-memcached's unpickler, refusing: a value flagged as a pickle reads as a miss."""

    def __init__(self, file: Any) -> None:
        self.persistent_load: Any = None

    def load(self) -> None:
        return None


#: The most a value read from memcached may decompress to: a token entry is a few KB.
MAX_DECOMPRESSED = 64 * 1024


def bounded_decompress(data: bytes) -> bytes:
    """python-memcached's decompressor, bounded: a value flagged as compressed that
    would inflate past :data:`MAX_DECOMPRESSED` (a planted zip bomb) reads as empty,
    which is a miss, instead of taking the worker's memory."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_DECOMPRESSED)
    except zlib.error:
        return b""
    return b"" if inflater.unconsumed_tail else out


class TokenMemcachedCache(FlaskMemcachedCache):
    """``CACHE_TYPE = "MemcachedCache"`` through python-memcached, made with an unpickler
    that refuses and a bounded decompressor (its constructor's ``unpickler`` and
    ``decompressor`` arguments), kept as ``client``."""

    client: Any
    #: Whether values flagged as pickles are refused (python-memcached made here).
    refuses_pickles = False

    def __init__(self, servers: Any = None, *args: Any, **kwargs: Any) -> None:
        if servers is None or isinstance(servers, (list, tuple)):
            try:
                # Untyped, and absent wherever python-memcached is not installed.
                memcache: Any = importlib.import_module("memcache")
            except ImportError:
                pass  # pylibmc or libmc: see SECURITY.md
            else:
                servers = memcache.Client(
                    list(servers or ["127.0.0.1:11211"]),
                    unpickler=_NoUnpickler,
                    decompressor=bounded_decompress,
                )
                self.refuses_pickles = True
        self.client = servers
        super().__init__(servers, *args, **kwargs)


_FAST_FAIL = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
#: flask-caching's names of a backend → ours, and the socket options that keep a hanging
#: server from hanging page views.
_OURS: dict[str, tuple[type, dict[str, float]]] = {
    "RedisCache": (TokenRedisCache, _FAST_FAIL),
    "redis": (TokenRedisCache, _FAST_FAIL),
    "RedisClusterCache": (TokenRedisClusterCache, _FAST_FAIL),
    "rediscluster": (TokenRedisClusterCache, _FAST_FAIL),
    "RedisSentinelCache": (TokenRedisSentinelCache, {**_FAST_FAIL, "sentinel_socket_timeout": 1.0}),
    "redissentinel": (TokenRedisSentinelCache, {**_FAST_FAIL, "sentinel_socket_timeout": 1.0}),
    "MemcachedCache": (TokenMemcachedCache, {}),
    "memcached": (TokenMemcachedCache, {}),
}


def backend_for(app: Flask, settings: Settings, cache: Cache | None) -> Callable[[], Any]:
    """How to reach the app's token backend once the app runs."""
    if cache is not None:
        # The app's Cache may be initialised after us: look its backend up on first use.
        app_cache = cache
        return lambda: app.extensions["cache"][app_cache]
    config: dict[str, Any] = {
        "CACHE_TYPE": "flask_toucan.cache.TokenMemoryCache",
        "CACHE_THRESHOLD": 10_000,
        "CACHE_KEY_PREFIX": "",  # TOUCAN_CACHE_KEY_PREFIX already namespaces our keys
    }
    config.update(settings.cache_config or {})
    kind = str(config["CACHE_TYPE"]).rsplit(".", 1)[-1]
    if kind in _OURS:
        ours, options = _OURS[kind]
        config["CACHE_TYPE"] = f"{__name__}.{ours.__name__}"
        if options:
            config.setdefault("CACHE_OPTIONS", dict(options))
    own = Cache(config=config)
    try:
        own.init_app(app)
    except ModuleNotFoundError as exc:
        missing = exc.name or str(exc)
        extra = ' pip install "flask-toucan[redis]"' if "redis" in missing.lower() else ""
        raise ToucanConfigError(
            f"TOUCAN_CACHE_CONFIG needs a package that is not installed ({missing}):"
            f"{extra or ' install the client library of that backend'}"
        ) from None
    except Exception as exc:
        if "redis" in str(exc).lower() and "module" in str(exc).lower():
            raise ToucanConfigError(
                "TOUCAN_CACHE_CONFIG names Redis, but redis-py is not installed: "
                'pip install "flask-toucan[redis]"'
            ) from None
        raise ToucanConfigError(
            f"TOUCAN_CACHE_CONFIG could not be used: {type(exc).__name__}: {redact(str(exc))}"
        ) from None
    backend = app.extensions["cache"][own]
    if not _reads_no_pickle(backend):
        raise ToucanConfigError(
            f"TOUCAN_CACHE_CONFIG: {type(backend).__name__} would unpickle what it reads, so "
            "whoever can write to it could run code in your app. Use RedisCache, "
            "RedisSentinelCache, RedisClusterCache, MemcachedCache (with python-memcached) "
            "or leave TOUCAN_CACHE_CONFIG unset (in-process)"
        )
    return lambda: backend


def in_process(backend: Any) -> bool:
    """Whether ``backend`` lives in this process's memory (nothing else reads or writes it)."""
    from cachelib.simple import SimpleCache

    return isinstance(backend, (TokenMemoryCache, SimpleCache))


def _reads_no_pickle(backend: Any) -> bool:
    """Whether nothing read from ``backend`` can be unpickled: our JSON-text backends,
    or an in-process one (only this process writes to it)."""
    from flask_caching.backends.nullcache import NullCache

    if in_process(backend) or isinstance(backend, (NullCache, _KeepsRedisClient)):
        return True
    return isinstance(backend, TokenMemcachedCache) and backend.refuses_pickles


def _key_prefix(backend: Any) -> str:
    """The prefix a cachelib Redis backend puts before every key (a string or a callable)."""
    prefix = getattr(backend, "key_prefix", "") or ""
    return str(prefix() if callable(prefix) else prefix)


def leases_for(backend: Any, ttl: float) -> Leases | None:
    """The cross-process leases a backend supports, or None (per-process locks only)."""
    if isinstance(backend, _KeepsRedisClient):
        return RedisLeases(backend.client, ttl, _key_prefix(backend))
    if isinstance(backend, MemcachedCache):
        return AddLeases(backend, ttl)
    return None


#: What follows the prefix in a key flask_toucan wrote: a token's key is a SHA-256 hex
#: digest (:func:`~flask_toucan.identity.cache_key`), a lease is that plus ``:lock``.
_OUR_KEY = re.compile(r"[0-9a-f]{64}(?::lock)?")


def list_keys(backend: Any, prefix: str) -> Iterator[str] | None:
    """Every key flask_toucan wrote under ``prefix``, when the backend can list them (else
    None). Another application's key that happens to start with the prefix is not ours:
    only keys of our layout are listed (``flask toucan cache clear`` deletes these)."""
    if isinstance(backend, _KeepsRedisClient):
        found: Iterator[str] = backend.keys_under(prefix)
    elif isinstance(backend, TokenMemoryCache):
        found = iter([k for k in backend.keys() if k.startswith(prefix)])  # noqa: SIM118
    else:
        return None
    return (k for k in found if _OUR_KEY.fullmatch(k[len(prefix) :]))


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
        return bool(self.client.lock(self.prefix + name, thread_local=False).locked())


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


class CacheBackend(Protocol):
    """The part of the flask-caching / cachelib interface we use."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any, timeout: int | None = None) -> Any: ...

    def delete(self, key: str) -> Any: ...


class TokenStore:
    """Reads and writes tokens: the front map (over a shared backend), then the backend.

    An entry lives exactly as long as its token may be served
    (:func:`~flask_toucan.tokens.serving_margin`), so no level returns a token the
    service would refuse. Backend failures go through a :class:`BackendGuard`: the
    caller sees a miss (or a failed write) and goes on.
    """

    def __init__(
        self,
        backend: CacheBackend,
        *,
        min_ttl: int,
        leases: Leases | None = None,
        front: FrontCache | None = None,
    ) -> None:
        self.backend = backend
        self.min_ttl = min_ttl
        self.leases = leases
        self.front = front
        self._holds_objects = getattr(backend, "holds_objects", False) is True
        self.guard = BackendGuard("token cache", "minting without the shared cache")
        self._warned_short = False

    def left(self, token: EmbedToken) -> float:
        """Seconds ``token`` may still be served."""
        return token.expires_at_epoch - now() - serving_margin(token, self.min_ttl)

    def usable(self, token: EmbedToken | None) -> bool:
        return token is not None and self.left(token) >= 0

    def lookup(self, key: str) -> tuple[EmbedToken | None, str]:
        """The servable token for ``key`` and where it was found: ``front`` or ``shared``."""
        if self.front is not None:
            token = self.front.get(key)
            if token is not None and self.usable(token):
                return token, "front"
        token = self.read(key)
        if token is not None:
            self.front_put(key, token)
        return token, "shared"

    def get(self, key: str) -> EmbedToken | None:
        return self.lookup(key)[0]

    def read(self, key: str) -> EmbedToken | None:
        """The servable token in the backend itself (not the front map)."""
        token = decode_token(self.guard("read", lambda: self.backend.get(key)))
        return token if self.usable(token) else None

    def put(self, key: str, token: EmbedToken) -> None:
        timeout = int(self.left(token))
        if timeout <= 0:
            # A configuration mismatch, not an event: say it once per process
            # at WARNING, then at DEBUG, instead of on every page view.
            level = logging.DEBUG if self._warned_short else logging.WARNING
            self._warned_short = True
            logger.log(
                level,
                "Toucan issued a token with only %d seconds of life left, too little to "
                "cache with a serving margin of %d s; such tokens are used once",
                token.expires_in,
                serving_margin(token, self.min_ttl),
            )
            return
        value = token if self._holds_objects else encode_token(token)
        self.guard("write", lambda: self.backend.set(key, value, timeout=timeout))
        self.front_put(key, token)

    def front_put(self, key: str, token: EmbedToken) -> None:
        if self.front is not None:
            ttl = self.left(token)
            if ttl > 0:
                self.front.set(key, token, ttl)

    def delete(self, key: str) -> None:
        """Forget ``key`` here and in the backend (other processes' front maps forget
        it within their TTL)."""
        if self.front is not None:
            self.front.delete(key)
        self.guard("delete", lambda: self.backend.delete(key))

    def acquire(self, key: str) -> Lease | None:
        """Our lease on ``key``'s mint, or None while another process holds it.

        Without cross-process leases, or with the backend failing, a do-nothing lease:
        the caller's per-process lock is all there is.
        """
        if self.leases is None:
            return NO_LEASE
        leases = self.leases
        result = self.guard("lock", lambda: leases.acquire(key + ":lock") or False)
        if result is None:  # the backend failed
            return NO_LEASE
        return result or None

    def held(self, key: str) -> bool:
        """Whether another process holds ``key``'s lease now (False when unknown)."""
        if self.leases is None:
            return False
        leases = self.leases
        return bool(self.guard("lock", lambda: leases.held(key + ":lock")))

    def release(self, lease: Lease) -> None:
        self.guard("unlock", lease.release)


class _NoLease:
    def release(self) -> None:
        pass


NO_LEASE = _NoLease()
