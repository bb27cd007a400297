"""The API key: a string, or a secret manager's callable whose value is reused for a while."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .errors import ToucanConfigError
from .identity import key_fingerprint

__all__ = ["ApiKey"]


class ApiKey:
    """The API key: a string, or a zero-argument callable (a secret manager) whose value
    is reused for ``ttl`` seconds. Its value is never logged, and neither is its repr."""

    def __init__(self, source: str | Callable[[], str], ttl: float) -> None:
        self._source = source
        self._ttl = ttl
        self._lock = threading.Lock()
        self._value: str | None = source if isinstance(source, str) else None
        self._previous: str | None = None
        self._fetched = -float("inf")
        self._fingerprint = key_fingerprint(source) if isinstance(source, str) else ""

    @property
    def rotates(self) -> bool:
        return not isinstance(self._source, str)

    def get(self, *, fresh: bool = False) -> str:
        if isinstance(self._source, str):
            return self._source
        with self._lock:
            stale = time.monotonic() - self._fetched >= self._ttl
            if fresh or stale or self._value is None:
                value = self._call(self._source)
                if value != self._value:
                    self._previous, self._value = self._value, value
                    self._fingerprint = key_fingerprint(value)
                self._fetched = time.monotonic()
            assert self._value is not None
            return self._value

    def fingerprint(self) -> str:
        """A one-way tag of the current key, for cache keys (tokens of a rotated key differ)."""
        self.get()
        return self._fingerprint

    def known(self) -> list[str]:
        """The key values seen, to scrub from anything logged."""
        return [k for k in (self._value, self._previous) if k]

    @staticmethod
    def _call(source: Callable[[], str]) -> str:
        try:
            value = source()
        except Exception as exc:
            raise ToucanConfigError(
                f"the TOUCAN_API_KEY callable raised {type(exc).__name__}; "
                "check the secret manager it reads"
            ) from None
        if not isinstance(value, str) or not value.strip() or "\n" in value:
            raise ToucanConfigError(
                "the TOUCAN_API_KEY callable must return a non-empty one-line string"
            )
        return value

    def __repr__(self) -> str:
        return "ApiKey(<hidden>)"
