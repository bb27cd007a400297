"""TokenService: the one owner of "the token for this identity", for one app.

Every caller (a page, a helper, the refresh endpoint, ``get_token``, prefetch, the
CLI) asks :meth:`TokenService.get`, which does, in this order:

1. **identity**: the role from ``TOUCAN_DEFAULT_ROLE`` where none was given, the
   instance checked, ``TOUCAN_REQUIRED_ATTRIBUTES`` enforced (fail closed);
2. **key**: instance, API-key fingerprint (from the last key seen: a warm view never
   calls the key source) and the whole identity;
3. **lookup** in the :class:`~flask_toucan.cache.TokenStore`;
4. **single-flight**: one mint per key in this process (a :class:`_Flight` the
   others wait on, getting its token *or its error*), and across processes a lease;
5. **mint** through the instance's minter, within ``TOUCAN_MINT_DEADLINE``;
6. **store**;
7. **signals**, after the token is stored: a receiver that raises is logged and
   can neither discard the token nor cause another mint.

A failed mint is remembered for a short back-off (at least :data:`FAILURE_BACKOFF`
seconds, or Toucan's ``Retry-After``): meanwhile callers for that identity get the
same error at once, so a burst during an outage costs one upstream attempt per
back-off window, and nobody else waits on it.

Refresh-ahead follows botocore's ``RefreshableCredentials``: past the *advisory*
point (``refresh_ahead`` of its life) a token is served and renewed in the
background, one renewal per key, keeping the still-valid token if renewing fails;
past the *mandatory* point (its serving margin) it is not served and the caller
mints. Renewals and prefetches share one small executor per process.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import signals
from .cache import NO_LEASE, FrontCache, Store, TokenStore, in_process, list_keys
from .client import TokenClient, default_deadline
from .errors import (
    InvalidToucanUser,
    ToucanAPIError,
    ToucanAuthError,
    ToucanRateLimited,
    ToucanUnavailable,
)
from .identity import (
    ToucanUser,
    cache_key,
    check_required,
    derive_key,
    distinct_tag,
    identity_digest,
)
from .instances import Instance
from .preview import PreviewMinter
from .settings import Settings
from .tokens import EmbedToken, Minter, now
from .variants import TokenVariants

__all__ = ["FAILURE_BACKOFF", "MAX_PENDING", "REMINT_WINDOW", "WORKERS", "TokenService"]

logger = logging.getLogger("flask_toucan")

#: Seconds a failed mint is remembered for its identity (longer when Toucan says so).
FAILURE_BACKOFF = 1.0
#: Longest back-off taken from a ``Retry-After``.
MAX_FAILURE_BACKOFF = 60.0
#: Background threads (renewals and prefetches) per process, and jobs that may wait.
WORKERS = 2
MAX_PENDING = 256
#: Identities whose failure is remembered at once (the oldest go first beyond it).
MAX_FAILURES = 10_000
#: Seconds during which a token refused by Toucan (a 401 from its MCP endpoint or REST
#: API) is not minted afresh again for the same identity: one refused token is a token
#: revoked or expired early; a second is a configuration mistake, and minting on every
#: click would spend the app's rate limit at Toucan for everyone.
REMINT_WINDOW = 30.0


class _Flight:
    """One mint in progress in this process; the others wait for its outcome."""

    __slots__ = ("done", "error", "token")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.token: EmbedToken | None = None
        self.error: BaseException | None = None


class TokenService:
    """Tokens of one app, per exact identity: cached, minted once, renewed ahead.

    Made by ``Toucan.init_app`` and kept in ``app.extensions["toucan"]``. The tuning
    arguments are not config keys; subclass or construct it to change them:
    ``refresh_ahead`` (share of a token's life after which it is renewed in the
    background; 0: never), ``lock_timeout`` (seconds a cross-process mint lease
    lives), ``lock_wait`` (seconds to wait for another process's mint before minting),
    ``front_cache_size``/``front_cache_ttl`` (the in-process map over a shared
    backend), ``preview_lifetime`` (seconds of life of preview tokens).
    """

    def __init__(
        self,
        settings: Settings,
        backend: Store,
        variants: TokenVariants,
        *,
        app: Any,
        refresh_ahead: float = 0.5,
        lock_timeout: int = 10,
        lock_wait: float = 5.0,
        front_cache_size: int = 1000,
        front_cache_ttl: float = 30.0,
        preview_lifetime: int = 3600,
    ) -> None:
        self.settings = settings
        #: Signs and checks the variant references pages carry (inject_token(role=...)).
        self.variants = variants
        # A weak reference: the app owns this service (signals name it as sender).
        self._app = weakref.ref(app)
        self._backend = backend
        self.refresh_ahead = 0.0 if settings.preview else refresh_ahead
        self.lock_timeout = lock_timeout
        self.lock_wait = lock_wait
        self.front_cache_size = front_cache_size
        self.front_cache_ttl = front_cache_ttl
        self.preview_lifetime = preview_lifetime
        self.deadline = settings.mint_deadline or default_deadline(
            settings.timeout, settings.max_retries
        )
        self.instances: dict[str | None, Instance] = {None: settings.default_instance}
        self.instances.update(settings.instances)
        self._store: TokenStore | None = None
        self._process_key = secrets.token_bytes(32)  # signals' identity key without SECRET_KEY
        self._per_process()
        _SERVICES.add(self)

    def identity_tag(self, user: ToucanUser) -> str:
        """The ``identity`` signals carry: keyed with the app's ``SECRET_KEY`` (stable
        across processes), or without one a key of this process, never a plain hash
        that could be matched against guessed identities."""
        app = self._app()
        secret = getattr(app, "secret_key", None)
        key = derive_key(secret, "signal-identity") if secret else self._process_key
        return identity_digest(user, key)

    def _per_process(self) -> None:
        """What must not cross a fork (gunicorn --preload): sessions, threads, locks."""
        self._guard = threading.Lock()
        self._minters: dict[str | None, Minter] = {}
        self._flights: dict[str, _Flight] = {}
        self._failures: dict[str, tuple[float, ToucanAPIError]] = {}
        self._reminted: dict[str, float] = {}  # key → when a refused token was last replaced
        self.renewing: set[str] = set()
        self._executor: ThreadPoolExecutor | None = None
        self.pending = 0

    # -- parts ------------------------------------------------------------------

    @property
    def store(self) -> TokenStore:
        # Built on first use: an app-provided Cache may be initialised after us.
        if self._store is None:
            backend = self._backend
            # Over an in-process backend a front map would be a second copy.
            front = (
                not in_process(backend) and self.front_cache_size > 0 and self.front_cache_ttl > 0
            )
            self._store = TokenStore(
                backend,
                min_ttl=self.settings.min_token_ttl,
                leases=backend.leases(self.lock_timeout) if hasattr(backend, "leases") else None,
                front=FrontCache(self.front_cache_size, self.front_cache_ttl) if front else None,
            )
        return self._store

    @store.setter
    def store(self, value: TokenStore) -> None:
        """Replace the storage (a test's failing backend, say)."""
        self._store = value

    def instance(self, name: str | None) -> Instance:
        """The Toucan instance a user's ``instance`` names."""
        found = self.instances.get(name)
        if found is None:
            # From user data, not from the config: a typed error pages can render.
            raise InvalidToucanUser(
                f"the user's instance {name!r} is not in TOUCAN_INSTANCES "
                f"(known: {sorted(n for n in self.instances if n)}); add it to "
                "TOUCAN_INSTANCES or fix the user_loader"
            )
        return found

    def minter(self, instance: str | None = None) -> Minter:
        """The minter of an instance, made once per process."""
        found = self._minters.get(instance)
        if found is None:
            inst = self.instance(instance)
            with self._guard:
                found = self._minters.get(instance)
                if found is None:
                    found = self._make_minter(inst)
                    self._minters[instance] = found
        return found

    def _make_minter(self, instance: Instance) -> Minter:
        s = self.settings
        if s.preview:
            return PreviewMinter(self.preview_lifetime, instance.name)
        assert instance.api_key is not None
        return TokenClient(
            instance.base_url,
            instance.api_key,
            api_key_ttl=s.api_key_ttl,
            token_path=instance.token_path,
            timeout=s.timeout,
            max_retries=s.max_retries,
            deadline=self.deadline,
            proxies=s.proxies,
            verify=s.verify,
            max_lifetime=s.max_token_lifetime,
        )

    # -- identity and key ---------------------------------------------------------

    def resolve(self, user: ToucanUser) -> ToucanUser:
        """``user`` as it is sent: the default role filled in, instance and required
        attributes checked (InvalidToucanUser otherwise, before any call)."""
        user = user.with_default_role(self.settings.default_role)
        self.instance(user.instance)
        check_required(user, self.settings.required_attributes)
        return user

    def key_for(self, user: ToucanUser, minter: Minter | None = None) -> str:
        """The cache key of ``user``'s token (``user`` resolved): instance, key, identity."""
        inst = self.instance(user.instance)
        minter = minter or self.minter(user.instance)
        base = f"preview:{inst.name or ''}" if self.settings.preview else inst.base_url
        return cache_key(self.settings.cache_key_prefix, base, minter.key_fingerprint(), user)

    def _identify(self, user: ToucanUser) -> tuple[ToucanUser, Minter, str]:
        """``user`` resolved, its instance's minter and its token's cache key."""
        user = self.resolve(user)
        minter = self.minter(user.instance)
        return user, minter, self.key_for(user, minter)

    # -- the token ----------------------------------------------------------------

    def get(self, user: ToucanUser, *, force: bool = False) -> tuple[EmbedToken, str]:
        """A servable token for ``user`` and where it came from: ``front``, ``shared``,
        ``minted`` or ``stale`` (past its advisory point, served while it is renewed).

        ``force`` skips the cached token (another mint in flight is joined). Raises
        InvalidToucanUser, or a ToucanAPIError within ``TOUCAN_MINT_DEADLINE``.
        """
        user, minter, key = self._identify(user)
        token, source = self._get(key, user, minter, force)
        self.served(user, source)
        return token, source

    def remint(self, user: ToucanUser) -> EmbedToken:
        """A fresh token for ``user`` after Toucan refused the cached one (HTTP 401):
        at most one per identity per :data:`REMINT_WINDOW` seconds; within it,
        ToucanAuthError at once, without minting (other identities are unaffected)."""
        user, minter, key = self._identify(user)
        current = time.monotonic()
        with self._guard:
            last = self._reminted.get(key)
            if last is not None and current - last < REMINT_WINDOW:
                raise ToucanAuthError(
                    f"Toucan refused this user's embed token again, {current - last:.0f} s after "
                    f"it was minted afresh (at most one fresh mint per {REMINT_WINDOW:g} s): "
                    "check TOUCAN_MCP_URL and that the endpoint belongs to the token's instance",
                    upstream_status=401,
                )
            _put_bounded(self._reminted, key, current, lambda t: current - t >= REMINT_WINDOW)
        token, source = self._get(key, user, minter, True)
        self.served(user, source)
        return token

    def invalidate(self, user: ToucanUser) -> bool:
        """Forget ``user``'s cached token here and in the backend; whether there was one."""
        _, _, key = self._identify(user)
        self._failures.pop(key, None)
        existed = self.store.read(key) is not None
        self.store.delete(key)
        return existed

    def forget(self, distinct_id: str) -> int | None:
        """Forget every cached token of ``distinct_id`` (whatever its attributes, role,
        permissions or instance) here and in the backend: how many, or None when the
        backend cannot list its keys."""
        keys = list_keys(self.store.backend, self.settings.cache_key_prefix)
        if keys is None:
            return None
        start = self.settings.cache_key_prefix + distinct_tag(distinct_id)
        doomed = [k for k in keys if k.startswith(start) and not k.endswith(":lock")]
        for key in doomed:
            self._failures.pop(key, None)
            self.store.delete(key)
        return len(doomed)

    def prefetch(self, user: ToucanUser) -> None:
        """Mint ``user``'s token in the background unless it is warm (raises on a bad user)."""
        user, minter, key = self._identify(user)
        if self.store.get(key) is not None:
            return
        if self.settings.preview:
            self._get(key, user, minter, False)  # instant in process: no thread
        else:
            self.submit(lambda: self._get(key, user, minter, False))

    def _get(
        self, key: str, user: ToucanUser, minter: Minter, force: bool
    ) -> tuple[EmbedToken, str]:
        store = self.store
        if not force:
            token, source = store.lookup(key)
            if token is not None:
                if self._advisory_due(token) and key not in self._failures:
                    self._renew_in_background(key, user, minter, token)
                    source = "stale"
                return token, source
        failed = self._failures.get(key)
        if failed is not None:
            left = failed[0] - now()
            if left > 0:
                # The same answer for the back-off, no new attempt: a copy, so that no
                # traceback grows with each raise and each caller sees its own wait.
                raise failed[1].again(left)
            self._failures.pop(key, None)
        flight, leader = self._join(key)
        if not leader:
            if not flight.done.wait(self.deadline):
                raise ToucanUnavailable(
                    "waited TOUCAN_MINT_DEADLINE for another request's mint of the same token"
                )
            if flight.error is not None:
                raise flight.error
            assert flight.token is not None
            return flight.token, "shared"
        try:
            token, source = self._mint_once(key, user, minter, force)
            flight.token = token
            return token, source
        except BaseException as exc:
            flight.error = exc
            if isinstance(exc, ToucanAPIError):
                self._remember_failure(key, exc)
            raise
        finally:
            with self._guard:
                self._flights.pop(key, None)
            flight.done.set()

    def _join(self, key: str) -> tuple[_Flight, bool]:
        with self._guard:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = _Flight()
            return flight, True

    def _remember_failure(self, key: str, exc: ToucanAPIError) -> None:
        backoff = FAILURE_BACKOFF
        if isinstance(exc, ToucanRateLimited) and exc.upstream_retry_after:
            backoff = min(max(backoff, exc.upstream_retry_after), MAX_FAILURE_BACKOFF)
        with self._guard:
            current = now()
            _put_bounded(self._failures, key, (current + backoff, exc), lambda v: v[0] <= current)
        exc.retry_in = backoff

    def _mint_once(
        self, key: str, user: ToucanUser, minter: Minter, force: bool
    ) -> tuple[EmbedToken, str]:
        """Mint under the cross-process lease, or take the token its holder stores."""
        store = self.store
        started = now()
        fresh_after = started if force else None
        ends = time.monotonic() + self.deadline
        wait_until = min(time.monotonic() + self.lock_wait, ends)
        lease = store.acquire(key)
        while lease is None:
            token = self._wait_for(key, fresh_after, wait_until)
            if token is not None:
                return token, "shared"
            if time.monotonic() >= ends:
                raise ToucanUnavailable(
                    "waited TOUCAN_MINT_DEADLINE for another process's mint of the same token"
                )
            if time.monotonic() >= wait_until:
                logger.warning(
                    "waited %.1fs for another process to mint a token; minting", self.lock_wait
                )
                break
            lease = store.acquire(key)  # the holder left no token (it failed or died)
        try:
            if lease is not None and lease is not NO_LEASE:
                # Another process may have stored a token between our last read and
                # taking the lease: look before minting.
                token = self._fresh(key, fresh_after)
                if token is not None:
                    return token, "shared"
            token = self._mint(key, user, minter, ends)
            return token, "minted"
        finally:
            if lease is not None:
                store.release(lease)

    def _mint(self, key: str, user: ToucanUser, minter: Minter, ends: float) -> EmbedToken:
        """Mint, store, then tell the signal receivers (which cannot undo either)."""
        started = time.monotonic()
        try:
            token = minter.mint(user, deadline=ends)
        except Exception as exc:
            self._send(
                signals.mint_failed,
                identity=self.identity_tag(user),
                instance=user.instance,
                duration=time.monotonic() - started,
                error=type(exc).__name__,
            )
            raise
        self.store.put(key, token)  # stored before the lease goes, so waiters find it
        self._send(
            signals.token_minted,
            identity=self.identity_tag(user),
            instance=user.instance,
            duration=time.monotonic() - started,
            lifetime=token.lifetime,
        )
        return token

    def _wait_for(self, key: str, fresh_after: float | None, until: float) -> EmbedToken | None:
        """The token another process is minting; None when its lease is gone or time is up."""
        store = self.store
        delay = 0.02
        while time.monotonic() < until:
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)
            token = self._fresh(key, fresh_after)
            if token is not None or store.guard.down():
                return token
            if not store.held(key):
                # The holder stores the token before it lets go of the lease, so
                # look once more: it may have landed between the two reads.
                return self._fresh(key, fresh_after)
        return None

    def _fresh(self, key: str, fresh_after: float | None) -> EmbedToken | None:
        token = self.store.read(key)
        if token is None or (fresh_after is not None and not _issued_after(token, fresh_after)):
            return None
        self.store.front_put(key, token)
        return token

    # -- refresh-ahead ------------------------------------------------------------

    def _advisory_due(self, token: EmbedToken) -> bool:
        """Whether ``token`` has used its share of life (never, with a share of 0)."""
        if self.refresh_ahead <= 0 or token.issued_at is None:
            return False
        issued = token.issued_at.timestamp()
        return now() - issued >= (token.expires_at_epoch - issued) * self.refresh_ahead

    def _renew_in_background(
        self, key: str, user: ToucanUser, minter: Minter, seen: EmbedToken
    ) -> None:
        with self._guard:
            if key in self.renewing:
                return  # one refresher at a time
            self.renewing.add(key)

        def renew() -> None:
            try:
                self._renew(key, user, minter, seen)
            finally:
                with self._guard:
                    self.renewing.discard(key)

        if not self.submit(renew):
            with self._guard:
                self.renewing.discard(key)

    def _renew(self, key: str, user: ToucanUser, minter: Minter, seen: EmbedToken) -> None:
        store = self.store
        latest = store.read(key)
        if latest is not None and latest.expires_at_epoch > seen.expires_at_epoch:
            store.front_put(key, latest)  # another process already renewed it
            return
        lease = store.acquire(key)
        if lease is None:
            return  # renewing elsewhere, or backing off after a failure
        try:
            self._mint(key, user, minter, time.monotonic() + self.deadline)
        except ToucanAPIError as exc:
            # Keep the still-valid token; the lease is left to expire as a back-off
            # across processes, the failure memo here.
            self._remember_failure(key, exc)
            logger.warning(
                "renewing a token ahead of expiry failed (%s); still serving the "
                "cached one, %d seconds left",
                type(exc).__name__,
                seen.expires_in,
            )
            return
        store.release(lease)

    # -- the executor -------------------------------------------------------------

    def submit(self, job: Callable[[], object]) -> bool:
        """Run ``job`` on the background executor; False when its queue is full."""
        with self._guard:
            if self.pending >= MAX_PENDING:
                logger.debug("background queue full; the page will mint on demand")
                return False
            if self._executor is None:
                self._executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="toucan")
            self.pending += 1
            executor = self._executor
        try:
            executor.submit(self._run, job)
        except RuntimeError:  # interpreter shutting down
            with self._guard:
                self.pending -= 1
            return False
        return True

    def _run(self, job: Callable[[], object]) -> None:
        try:
            job()
        except Exception as exc:
            logger.warning("a background Toucan mint failed: %s", exc)
        finally:
            with self._guard:
                self.pending -= 1

    # -- signals ------------------------------------------------------------------

    def served(self, user: ToucanUser, source: str) -> None:
        """Tell ``token_served`` receivers that ``user``'s token was handed out."""
        if signals.token_served.receivers:
            self._send(
                signals.token_served,
                identity=self.identity_tag(user),
                instance=user.instance,
                source=source,
            )

    def _send(self, signal: Any, **kwargs: Any) -> None:
        """Send ``signal`` from the app; a receiver that raises is logged, nothing more."""
        if not signal.receivers:
            return
        try:
            signal.send(self._app(), **kwargs)
        except Exception:
            logger.exception("a receiver of flask_toucan's %s signal raised", signal.name)

    def __repr__(self) -> str:
        return f"TokenService(preview={self.settings.preview}, instances={len(self.instances)})"


def _put_bounded(
    entries: dict[str, Any], key: str, value: Any, expired: Callable[[Any], bool]
) -> None:
    """``entries[key] = value``, keeping at most :data:`MAX_FAILURES` identities: when
    full, the expired entries go first, then the oldest (the caller holds the lock)."""
    if len(entries) >= MAX_FAILURES:
        for old in [k for k, v in entries.items() if expired(v)]:
            del entries[old]
        while len(entries) >= MAX_FAILURES:
            del entries[next(iter(entries))]
    entries[key] = value


def _issued_after(token: EmbedToken, moment: float) -> bool:
    return token.issued_at is not None and token.issued_at.timestamp() > moment


#: Every service, so that a forked child (gunicorn --preload) starts with its own
#: sessions, threads and locks.
_SERVICES: weakref.WeakSet[TokenService] = weakref.WeakSet()


def _after_fork() -> None:
    for service in list(_SERVICES):
        service._per_process()


os.register_at_fork(after_in_child=_after_fork)
