"""TokenCache: reuse tokens through a flask-caching backend, minting once per key.

* **Levels.** The backend holds tokens as JSON text. Over a shared backend
  (Redis, Memcached, ...) a small in-process front cache saves the network round
  trip of a warm view; over the in-process default (SimpleCache) there is none.
* **TTL rules.** A token is served while it has more than its serving margin left
  (``min(min_ttl, lifetime / 4)``, :func:`~flask_toucan.tokens.serving_margin`); an
  entry lives exactly that long, so no level ever returns a token we would refuse.
  Nothing is written without an expiry.
* **Deadline.** Waiting for another thread's or process's mint of the same token,
  and minting, share one budget of ``deadline`` seconds (TOUCAN_MINT_DEADLINE).
* **Single-flight.** A miss mints under a per-key lock and, across processes, a
  lease (:mod:`flask_toucan.coordination`); others wait for that token.
* **Refresh-ahead** (:mod:`flask_toucan.renewal`). Once a token has used
  ``refresh_ahead`` of its life, the request that notices is served it at once and
  a background thread renews it under the same lease. If renewing fails, the
  still-valid token keeps being served (stale-while-error) and the lease, left to
  expire, doubles as a back-off.
* **Backend failures** (Redis down, ...) go through a
  :class:`~flask_toucan.backends.BackendGuard`: logged now and then, the backend
  skipped for a moment, tokens minted directly meanwhile.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from .backends import BackendGuard, FrontCache, decode_token, encode_token
from .coordination import KeyLocks, Lease, Leases
from .errors import ToucanError, ToucanUnavailable
from .renewal import RenewAhead
from .tokens import EmbedToken, now, serving_margin

__all__ = ["CacheBackend", "TokenCache"]

logger = logging.getLogger("flask_toucan")

#: Mints a token, giving up at the monotonic deadline it is passed.
Mint = Callable[[float], EmbedToken]


class CacheBackend(Protocol):
    """The part of the flask-caching / cachelib interface we use."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any, timeout: int | None = None) -> Any: ...

    def delete(self, key: str) -> Any: ...


class TokenCache:
    """Hands out cached tokens with at least ``min_ttl`` seconds left, minting otherwise."""

    def __init__(
        self,
        backend: CacheBackend,
        *,
        leases: Leases | None,
        front: FrontCache | None,
        min_ttl: int,
        refresh_ahead: float,
        lock_wait: float,
        deadline: float,
    ) -> None:
        self.backend = backend
        self._holds_objects = getattr(backend, "holds_objects", False) is True
        self.leases = leases
        self.front = front
        self.min_ttl = min_ttl
        self.lock_wait = lock_wait
        self.deadline = deadline
        self.locks = KeyLocks()
        self.renewals = RenewAhead(refresh_ahead)
        self._call = BackendGuard("token cache", "minting without the shared cache")
        self._warned_short = False

    # -- reading ------------------------------------------------------------

    def usable(self, token: EmbedToken | None) -> bool:
        return token is not None and self._left(token) >= 0

    def _left(self, token: EmbedToken) -> float:
        """Seconds ``token`` may still be served."""
        return token.expires_at_epoch - now() - serving_margin(token, self.min_ttl)

    def get(self, key: str) -> EmbedToken | None:
        """The cached token for ``key`` if it may still be served (front, then shared)."""
        return self._lookup(key)[0]

    def _lookup(self, key: str) -> tuple[EmbedToken | None, str]:
        """The cached token and where it was found: ``front`` or ``shared``."""
        if self.front is not None:
            token = self.front.get(key)
            if token is not None and self.usable(token):
                return token, "front"
        token = self._backend_get(key)
        if token is not None:
            self._front_put(key, token)
        return token, "shared"

    def _backend_get(self, key: str) -> EmbedToken | None:
        token = decode_token(self._call("read", lambda: self.backend.get(key)))
        return token if self.usable(token) else None

    # -- writing ------------------------------------------------------------

    def put(self, key: str, token: EmbedToken) -> None:
        # The entry dies when the token stops being servable.
        timeout = int(self._left(token))
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
        self._call("write", lambda: self.backend.set(key, value, timeout=timeout))
        self._front_put(key, token)

    def _front_put(self, key: str, token: EmbedToken) -> None:
        if self.front is not None:
            ttl = self._left(token)
            if ttl > 0:
                self.front.set(key, token, ttl)

    def delete(self, key: str) -> None:
        """Forget ``key`` here and in the backend (other processes' front caches
        forget it within the front cache's TTL)."""
        if self.front is not None:
            self.front.delete(key)
        self._call("delete", lambda: self.backend.delete(key))

    # -- minting ------------------------------------------------------------

    def get_or_mint(
        self,
        key: str,
        mint: Mint,
        *,
        force: bool = False,
        served: Callable[[str], None] | None = None,
    ) -> EmbedToken:
        """A usable token for ``key``: cached, or from one call to ``mint`` across processes.

        With ``force`` the cached token is skipped, but a token minted by another
        caller after this call began is accepted as fresh enough. Gives up with
        ToucanUnavailable after ``deadline`` seconds, waiting included. ``served`` is
        told where the token came from: ``front``, ``shared``, ``minted`` or ``stale``
        (past its refresh-ahead point, served while it is renewed).
        """
        started = now()
        if not force:
            token, source = self._lookup(key)
            if token is not None:
                if self.renewals.due(token):
                    self.renewals.start(key, functools.partial(self._renew, key, token, mint))
                    source = "stale"
                if served is not None:
                    served(source)
                return token
        ends = time.monotonic() + self.deadline
        try:
            with self.locks.hold(key, timeout=self.deadline):
                token, source = self._lookup(key)
                if token is None or (force and not _issued_after(token, started)):
                    token, source = self._mint_once(key, mint, started if force else None, ends)
                if served is not None:
                    served(source)
                return token
        except TimeoutError:
            raise ToucanUnavailable(
                "waited TOUCAN_MINT_DEADLINE for another request's mint of the same token"
            ) from None

    def _mint_once(
        self, key: str, mint: Mint, fresh_after: float | None, ends: float
    ) -> tuple[EmbedToken, str]:
        wait_until = min(time.monotonic() + self.lock_wait, ends)
        lease = self._acquire(key)
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
            lease = self._acquire(key)  # the holder left no token (it failed or died)
        try:
            if lease is not None and lease is not _NO_LEASE:
                # Another process may have stored a token between our last read and
                # taking the lease: look before minting.
                token = self._fresh(key, fresh_after)
                if token is not None:
                    return token, "shared"
            token = mint(ends)
            self.put(key, token)  # stored before the lease goes, so waiters find it
            return token, "minted"
        finally:
            if lease is not None:
                self._call("unlock", lease.release)

    def _acquire(self, key: str) -> Lease | None:
        """Our lease on ``key``'s mint, or None while another process holds it.

        Without cross-process leases, or with the backend failing, the per-key
        lock already held is all there is: a do-nothing lease.
        """
        if self.leases is None:
            return _NO_LEASE
        leases = self.leases
        result = self._call("lock", lambda: leases.acquire(key + ":lock") or False)
        if result is None:  # the backend failed
            return _NO_LEASE
        return result or None

    def _wait_for(self, key: str, fresh_after: float | None, deadline: float) -> EmbedToken | None:
        """The token another process is minting; None when its lease is gone or time is up."""
        assert self.leases is not None
        leases = self.leases
        delay = 0.02
        while time.monotonic() < deadline:
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)
            token = self._fresh(key, fresh_after)
            if token is not None or self._call.down():
                return token
            if not self._call("lock", lambda: leases.held(key + ":lock")):
                # The holder stores the token before it lets go of the lease, so
                # look once more: it may have landed between the two reads.
                return self._fresh(key, fresh_after)
        return None

    def _fresh(self, key: str, fresh_after: float | None) -> EmbedToken | None:
        token = self._backend_get(key)
        if token is None or (fresh_after is not None and not _issued_after(token, fresh_after)):
            return None
        self._front_put(key, token)
        return token

    # -- refresh-ahead ------------------------------------------------------

    def _renew(self, key: str, seen: EmbedToken, mint: Mint) -> None:
        """Renew ``seen`` under the lease (run by :class:`RenewAhead`'s pool)."""
        latest = self._backend_get(key)
        if latest is not None and latest.expires_at_epoch > seen.expires_at_epoch:
            self._front_put(key, latest)  # another process already renewed it
            return
        lease = self._acquire(key)
        if lease is None:
            return  # renewing elsewhere, or backing off after a failure
        try:
            token = mint(time.monotonic() + self.deadline)
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
        self._call("unlock", lease.release)


class _NoLease:
    def release(self) -> None:
        pass


_NO_LEASE = _NoLease()


def _issued_after(token: EmbedToken, moment: float) -> bool:
    return token.issued_at is not None and token.issued_at.timestamp() > moment
