"""The API key: a string, or a secret manager's callable whose value is reused for a while.

A secret manager is a dependency that fails. Its outage must not become ours:

* it is called by one thread at a time per source (single-flight), never under a lock
  other callers wait on while they have a key to use: the others keep the last key;
* when it fails, the last good key keeps being used (stale-while-error) and the next
  attempt waits a back-off, doubling up to the key's TTL;
* a cached token is found by the fingerprint of the last key seen: serving it never
  calls the secret manager at all (:meth:`ApiKey.fingerprint`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .errors import ToucanUnavailable
from .identity import key_fingerprint

__all__ = ["ApiKey"]

logger = logging.getLogger("flask_toucan")

#: Seconds before a failed secret manager is asked again (doubling, capped at the TTL).
FIRST_BACKOFF = 1.0


class ApiKey:
    """The API key: a string, or a zero-argument callable (a secret manager) whose value
    is reused for ``ttl`` seconds. Its value is never logged, and neither is its repr."""

    def __init__(self, source: str | Callable[[], str], ttl: float) -> None:
        self._source = source
        self._ttl = ttl
        self._state = threading.Condition()  # guards the fields below, never held across a call
        self._value: str | None = source if isinstance(source, str) else None
        self._previous: str | None = None
        self._fetched = -float("inf")
        self._fetching = False
        self._retry_at = -float("inf")
        self._backoff = FIRST_BACKOFF
        self._fingerprint = key_fingerprint(source) if isinstance(source, str) else ""

    @property
    def rotates(self) -> bool:
        return not isinstance(self._source, str)

    def get(self, *, fresh: bool = False, wait: float = 10.0) -> str:
        """The key: the cached one while it is young, else the secret manager's answer.

        ``fresh`` asks the secret manager now (after a 401/403), back-off permitting.
        With a key in hand, a caller never waits for another's fetch. Without one, it
        waits up to ``wait`` seconds, then raises ToucanUnavailable.
        """
        source = self._source
        if isinstance(source, str):
            return source
        with self._state:
            due = fresh or time.monotonic() - self._fetched >= self._ttl
            if self._value is not None and (
                not due or self._fetching or time.monotonic() < self._retry_at
            ):
                return self._value
            if self._fetching:  # no key yet: wait for the fetch under way
                self._state.wait_for(lambda: not self._fetching, timeout=wait)
                if self._value is None:
                    raise _unavailable()
                return self._value
            if self._value is None and time.monotonic() < self._retry_at:
                raise _unavailable()
            self._fetching = True
        value: str | None = None
        try:
            value = _call(source)
        finally:
            with self._state:
                self._fetching = False
                if value is not None:
                    if value != self._value:
                        self._previous, self._value = self._value, value
                        self._fingerprint = key_fingerprint(value)
                    self._fetched = time.monotonic()
                    self._backoff = FIRST_BACKOFF
                else:
                    self._retry_at = time.monotonic() + self._backoff
                    self._backoff = min(self._backoff * 2, max(self._ttl, FIRST_BACKOFF))
                self._state.notify_all()
            if value is None and self._value is not None:
                logger.warning("the TOUCAN_API_KEY callable failed; using the last key it returned")
        if value is None:
            if self._value is not None:
                return self._value
            raise _unavailable()
        return value

    def fingerprint(self) -> str:
        """A one-way tag of the last key seen, for cache keys (tokens of a rotated key
        differ). Asks the secret manager only before its first answer."""
        if not self._fingerprint:
            self.get()
        return self._fingerprint

    def known(self) -> list[str]:
        """The key values seen, to scrub from anything logged."""
        return [k for k in (self._value, self._previous) if k]

    def __repr__(self) -> str:
        return "ApiKey(<hidden>)"


def _call(source: Callable[[], str]) -> str | None:
    """The secret manager's key, or None (logged) when it raised or returned junk."""
    try:
        value = source()
    except Exception as exc:
        logger.warning(
            "the TOUCAN_API_KEY callable raised %s; check the secret manager it reads",
            type(exc).__name__,
        )
        return None
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        logger.warning("the TOUCAN_API_KEY callable must return a non-empty one-line string")
        return None
    return value


def _unavailable() -> ToucanUnavailable:
    return ToucanUnavailable(
        "no API key: the TOUCAN_API_KEY callable failed; check the secret manager it reads"
    )
