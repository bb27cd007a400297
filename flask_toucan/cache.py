"""Storage of tokens, and nothing else: the stores, the value format, the front map, leases.

flask_toucan owns its storage. It never touches the host app's Flask-Caching setup and
never reads the app's ``CACHE_*`` keys: ``TOUCAN_CACHE_CONFIG`` (same keys, read here)
describes our store alone.

* unset, ``SimpleCache``: :class:`MemoryStore`, in process, holding
  :class:`~flask_toucan.tokens.EmbedToken` objects; ``NullCache``: :class:`NullStore`.
* ``RedisCache``, ``RedisSentinelCache``, ``RedisClusterCache``: :class:`RedisStore`
  over a client made with redis-py's public constructors (``Redis.from_url`` or
  ``Redis(...)``, ``Sentinel(...).master_for``, ``RedisCluster.from_url`` or
  ``RedisCluster(startup_nodes=...)``). It stores JSON text: nothing is ever unpickled.
  Leases are redis-py locks on the same client.
* ``MemcachedCache``: :class:`MemcachedStore` over a python-memcached client made with
  an unpickler that refuses and a bounded decompressor, so a planted pickle or zip
  bomb reads as a miss. Leases through memcached's atomic ``add``.
* ``Toucan(app, cache=...)``: :class:`AppCacheStore`, a thin adapter over the app's
  own ``flask_caching.Cache`` through its public ``get``/``set``/``delete``/``add``;
  values serialized its way (pickle, for most): see SECURITY.md.
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
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from .checks import redact
from .errors import ToucanConfigError
from .tokens import EmbedToken, now, serving_margin

if TYPE_CHECKING:
    from flask_caching import Cache

__all__ = [
    "AddLeases",
    "AppCacheStore",
    "BackendGuard",
    "FrontCache",
    "Lease",
    "Leases",
    "MemcachedStore",
    "MemoryStore",
    "NullStore",
    "RedisLeases",
    "RedisStore",
    "Store",
    "TokenStore",
    "decode_token",
    "encode_token",
    "make_store",
]

logger = logging.getLogger("flask_toucan")


class Store(Protocol):
    """What flask_toucan needs of a place to keep tokens (values are JSON text, or
    :class:`EmbedToken` objects where :attr:`holds_objects`)."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any, timeout: int) -> Any: ...

    def delete(self, key: str) -> Any: ...


class BaseStore:
    """Defaults of the optional parts of a store: no leases, no key listing, shared."""

    #: Values are kept as objects (nothing leaves the process): no JSON round trip.
    holds_objects = False
    #: Only this process reads and writes it (no front map in front; the CLI cannot reach it).
    in_process = False

    def leases(self, ttl: float) -> Leases | None:
        """Cross-process leases on this store, or None (per-process locks only)."""
        return None

    def keys_under(self, prefix: str) -> Iterator[str] | None:
        """Every key starting with ``prefix``, or None when the store cannot list them."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class MemoryStore(BaseStore):
    """The default store: a dict of key → (deadline, value), pruned in batches.

    Nothing leaves the process, so tokens are kept as the immutable objects they are:
    no JSON to decode on every warm view (benchmarks: about a tenth of the overhead).
    Once over ``threshold`` entries, the expired ones and then the oldest tenth go at
    once, so the sort happens once per ``threshold / 10`` writes, not on every write.
    """

    holds_objects = True
    in_process = True

    def __init__(self, threshold: int = 10_000) -> None:
        self.threshold = threshold
        self._entries: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _expiry(timeout: int) -> float:
        return float("inf") if timeout <= 0 else time.time() + timeout

    def get(self, key: str) -> Any:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= time.time():
            return None
        return entry[1]

    def set(self, key: str, value: Any, timeout: int) -> bool:
        with self._lock:
            if len(self._entries) >= self.threshold:
                self._prune()
            self._entries[key] = (self._expiry(timeout), value)
        return True

    def add(self, key: str, value: Any, timeout: int) -> bool:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] > time.time():
                return False
            self._entries[key] = (self._expiry(timeout), value)
        return True

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._entries.pop(key, None) is not None

    def keys_under(self, prefix: str) -> Iterator[str]:
        current = time.time()
        held = list(self._entries.items())
        return iter([k for k, (ends, _) in held if ends > current and k.startswith(prefix)])

    def __len__(self) -> int:
        return len(self._entries)

    def _prune(self) -> None:
        current = time.time()
        for key in [k for k, (ends, _) in self._entries.items() if ends <= current]:
            del self._entries[key]
        target = int(self.threshold * 0.9)
        if len(self._entries) > target:
            ordered = sorted(self._entries.items(), key=lambda item: item[1][0])
            for key, _ in ordered[: len(self._entries) - target]:
                del self._entries[key]


class NullStore(BaseStore):
    """``CACHE_TYPE = "NullCache"``: keeps nothing (every page mints; for tests)."""

    in_process = True

    def get(self, key: str) -> None:
        return None

    def set(self, key: str, value: Any, timeout: int) -> bool:
        return True

    def delete(self, key: str) -> bool:
        return False


class RedisStore(BaseStore):
    """JSON text in Redis (plain, a Sentinel master or a Cluster), under ``prefix``.

    Values go in as UTF-8 and come out as text or None: nothing read is unpickled,
    so write access to Redis cannot become code execution in the app.
    """

    def __init__(self, client: Any, prefix: str = "") -> None:
        self.client = client
        self.prefix = prefix

    def get(self, key: str) -> str | None:
        return _text(self.client.get(self.prefix + key))

    def set(self, key: str, value: Any, timeout: int) -> bool:
        if not isinstance(value, str):
            raise TypeError("flask_toucan's Redis store keeps JSON text only")
        return bool(self.client.set(self.prefix + key, value.encode(), ex=max(1, timeout)))

    def delete(self, key: str) -> bool:
        return bool(self.client.delete(self.prefix + key))

    def leases(self, ttl: float) -> Leases:
        return RedisLeases(self.client, ttl, self.prefix)

    def keys_under(self, prefix: str) -> Iterator[str]:
        """Our keys that start with ``prefix``, glob characters in it taken literally."""
        outer = self.prefix
        found = self.client.scan_iter(match=_glob_escape(outer + prefix) + "*", count=500)
        for k in found:
            text = k.decode() if isinstance(k, bytes) else str(k)
            yield text[len(outer) :]

    def __repr__(self) -> str:
        return "<RedisStore>"  # the client's repr may carry a password


def _text(value: object) -> str | None:
    """A value read from a shared store as our JSON text, or None for anything else
    (bytes that are not UTF-8, a number, what a refused unpickler left)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, bytes):
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None


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


class MemcachedStore(BaseStore):
    """JSON text in memcached through python-memcached, made with an unpickler that
    refuses and a bounded decompressor (its constructor's ``unpickler`` and
    ``decompressor`` arguments)."""

    def __init__(self, client: Any, prefix: str = "") -> None:
        self.client = client
        self.prefix = prefix

    def get(self, key: str) -> str | None:
        return _text(self.client.get(self.prefix + key))

    def set(self, key: str, value: Any, timeout: int) -> bool:
        return bool(self.client.set(self.prefix + key, value, time=max(1, timeout)))

    def add(self, key: str, value: Any, timeout: int) -> bool:
        return bool(self.client.add(self.prefix + key, value, time=max(1, timeout)))

    def delete(self, key: str) -> bool:
        return bool(self.client.delete(self.prefix + key))

    def leases(self, ttl: float) -> Leases:
        return AddLeases(self, ttl)


class AppCacheStore(BaseStore):
    """The app's own ``flask_caching.Cache`` (``Toucan(app, cache=...)``), through its
    public methods only. It may be initialised after us: nothing is read until used."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    @property
    def in_process(self) -> bool:  # type: ignore[override]
        from cachelib.simple import SimpleCache

        return isinstance(self.cache.cache, SimpleCache)

    def get(self, key: str) -> Any:
        return self.cache.get(key)

    def set(self, key: str, value: Any, timeout: int) -> Any:
        return self.cache.set(key, value, timeout=timeout)

    def add(self, key: str, value: Any, timeout: int) -> Any:
        return self.cache.add(key, value, timeout=timeout)

    def delete(self, key: str) -> Any:
        return self.cache.delete(key)

    def leases(self, ttl: float) -> Leases | None:
        # Flask-Caching's add is atomic on its shared backends (SET NX on Redis, add on
        # memcached); on an in-process one the per-process lock is all there is.
        return None if self.in_process else AddLeases(self, ttl)


# -- building a store from TOUCAN_CACHE_CONFIG ---------------------------------------

#: What keeps a hanging Redis from hanging page views (CACHE_OPTIONS may override).
_FAST_FAIL = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}

#: Flask-Caching backend names whose stores unpickle what they read: refused.
_UNPICKLING = {"FileSystemCache", "filesystem", "UWSGICache", "uwsgi", "SASLMemcachedCache",
               "saslmemcached", "SpreadSASLMemcachedCache", "spreadsaslmemcached"}  # fmt: skip


def make_store(config: Mapping[str, Any] | None) -> Store:
    """The store ``TOUCAN_CACHE_CONFIG`` describes (flask-caching's key names, read here)."""
    config = dict(config or {})
    kind = str(config.get("CACHE_TYPE") or "SimpleCache").rsplit(".", 1)[-1]
    builder = _BUILDERS.get(kind)
    if builder is None:
        if kind in _UNPICKLING:
            raise ToucanConfigError(
                f"TOUCAN_CACHE_CONFIG: {kind} would unpickle what it reads, so whoever can "
                "write to it could run code in your app. Use RedisCache, RedisSentinelCache, "
                "RedisClusterCache, MemcachedCache (with python-memcached) or leave "
                "TOUCAN_CACHE_CONFIG unset (in-process)"
            )
        raise ToucanConfigError(
            f"TOUCAN_CACHE_CONFIG could not be used: CACHE_TYPE {redact(kind)!r} is not one of "
            f"{', '.join(sorted(k for k in _BUILDERS if k[0].isupper()))}"
        )
    try:
        return builder(config)
    except ToucanConfigError:
        raise
    except ModuleNotFoundError as exc:
        missing = exc.name or str(exc)
        if "redis" in missing.lower():
            hint = 'pip install "flask-toucan[redis]"'
        elif "memcache" in missing.lower():
            hint = "pip install python-memcached"
        else:
            hint = "install the client library of that backend"
        raise ToucanConfigError(
            f"TOUCAN_CACHE_CONFIG needs a package that is not installed ({missing}): {hint}"
        ) from None
    except Exception as exc:
        raise ToucanConfigError(
            f"TOUCAN_CACHE_CONFIG could not be used: {type(exc).__name__}: {redact(str(exc))}"
        ) from None


def _options(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    options = dict(defaults)
    options.update(config.get("CACHE_OPTIONS") or {})
    return options


def _redis(config: Mapping[str, Any]) -> Store:
    redis: Any = importlib.import_module("redis")
    options = _client_options(config)
    url = config.get("CACHE_REDIS_URL")
    if url:
        client = redis.Redis.from_url(url, **options)
    else:
        client = redis.Redis(
            host=config.get("CACHE_REDIS_HOST", "localhost"),
            port=config.get("CACHE_REDIS_PORT", 6379),
            db=config.get("CACHE_REDIS_DB", 0),
            **options,
        )
    return RedisStore(client, config.get("CACHE_KEY_PREFIX") or "")


def _redis_sentinel(config: Mapping[str, Any]) -> Store:
    sentinels: Any = importlib.import_module("redis.sentinel")  # partly untyped
    options = _options(config, {**_FAST_FAIL, "sentinel_socket_timeout": 1.0})
    sentinel_options = {k[9:]: v for k, v in options.items() if k.startswith("sentinel_")}
    options = {k: v for k, v in options.items() if not k.startswith("sentinel_")}
    if config.get("CACHE_REDIS_SENTINEL_PASSWORD"):
        sentinel_options["password"] = config["CACHE_REDIS_SENTINEL_PASSWORD"]
    sentinel = sentinels.Sentinel(
        config.get("CACHE_REDIS_SENTINELS") or [("127.0.0.1", 26379)],
        sentinel_kwargs=sentinel_options,
        password=config.get("CACHE_REDIS_PASSWORD"),
        db=config.get("CACHE_REDIS_DB", 0),
        **options,
    )
    # Reads, writes and leases all go to the master: a token just written must be read.
    client = sentinel.master_for(config.get("CACHE_REDIS_SENTINEL_MASTER") or "mymaster")
    return RedisStore(client, config.get("CACHE_KEY_PREFIX") or "")


def _redis_cluster(config: Mapping[str, Any]) -> Store:
    cluster: Any = importlib.import_module("redis.cluster")  # partly untyped
    options = _client_options(config)
    url = config.get("CACHE_REDIS_URL")
    if url:
        client = cluster.RedisCluster.from_url(url, **options)
    else:
        try:
            nodes = [
                cluster.ClusterNode(host.strip(), int(port))
                for host, port in (node.rsplit(":", 1) for node in
                                   str(config.get("CACHE_REDIS_CLUSTER", "")).split(","))
            ]  # fmt: skip
        except ValueError:
            raise ToucanConfigError(
                "TOUCAN_CACHE_CONFIG: CACHE_REDIS_CLUSTER must be host1:port1,host2:port2,..."
            ) from None
        options.setdefault("skip_full_coverage_check", True)
        client = cluster.RedisCluster(startup_nodes=nodes, **options)
    return RedisStore(client, config.get("CACHE_KEY_PREFIX") or "")


def _client_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """A plain or cluster redis-py client's options: fail fast, CACHE_OPTIONS, password."""
    options = _options(config, _FAST_FAIL)
    password = config.get("CACHE_REDIS_PASSWORD")
    if password:
        options["password"] = password
    return options


def _memcached(config: Mapping[str, Any]) -> Store:
    try:
        memcache: Any = importlib.import_module("memcache")  # python-memcached, untyped
    except ModuleNotFoundError:
        raise ToucanConfigError(
            "TOUCAN_CACHE_CONFIG: MemcachedCache needs python-memcached (pip install "
            "python-memcached): flask_toucan makes its client refuse pickles, which other "
            "memcached clients cannot be told to do"
        ) from None
    servers = config.get("CACHE_MEMCACHED_SERVERS") or ["127.0.0.1:11211"]
    if isinstance(servers, str):
        servers = [servers]
    client = memcache.Client(list(servers), unpickler=_NoUnpickler, decompressor=bounded_decompress)
    return MemcachedStore(client, config.get("CACHE_KEY_PREFIX") or "")


def _memory(config: Mapping[str, Any]) -> Store:
    return MemoryStore(int(config.get("CACHE_THRESHOLD", 10_000)))


def _null(config: Mapping[str, Any]) -> Store:
    return NullStore()


_BUILDERS: dict[str, Callable[[Mapping[str, Any]], Store]] = {
    "SimpleCache": _memory,
    "simple": _memory,
    "TokenMemoryCache": _memory,
    "NullCache": _null,
    "null": _null,
    "RedisCache": _redis,
    "redis": _redis,
    "RedisSentinelCache": _redis_sentinel,
    "redissentinel": _redis_sentinel,
    "RedisClusterCache": _redis_cluster,
    "rediscluster": _redis_cluster,
    "MemcachedCache": _memcached,
    "memcached": _memcached,
}


#: What follows the prefix in a key flask_toucan wrote: a token's key is a SHA-256 hex
#: digest (:func:`~flask_toucan.identity.cache_key`), a lease is that plus ``:lock``.
_OUR_KEY = re.compile(r"[0-9a-f]{64}(?::lock)?")


def list_keys(store: Any, prefix: str) -> Iterator[str] | None:
    """Every key flask_toucan wrote under ``prefix``, when the store can list them (else
    None). Another application's key that happens to start with the prefix is not ours:
    only keys of our layout are listed (``flask toucan cache clear`` deletes these)."""
    keys_under = getattr(store, "keys_under", None)
    found = keys_under(prefix) if keys_under is not None else None
    if found is None:
        return None
    return (k for k in found if _OUR_KEY.fullmatch(k[len(prefix) :]))


def in_process(store: Any) -> bool:
    """Whether ``store`` lives in this process's memory (nothing else reads or writes it)."""
    return getattr(store, "in_process", False) is True


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


class TokenStore:
    """Reads and writes tokens: the front map (over a shared backend), then the backend.

    An entry lives exactly as long as its token may be served
    (:func:`~flask_toucan.tokens.serving_margin`), so no level returns a token the
    service would refuse. Backend failures go through a :class:`BackendGuard`: the
    caller sees a miss (or a failed write) and goes on.
    """

    def __init__(
        self,
        backend: Store,
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
