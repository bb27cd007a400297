"""Refresh-ahead: renewing a cached token in the background before it must be.

Once a token has used ``fraction`` of its life (TOUCAN_REFRESH_AHEAD), the request
that notices is served it at once and the renewal runs here, on a small pool of
threads, one renewal per key at a time. A background thread was chosen over
probabilistic early expiry (XFetch): XFetch makes the unlucky request wait on
Toucan, and no warm view should wait.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .tokens import EmbedToken, now

__all__ = ["RenewAhead"]

logger = logging.getLogger("flask_toucan")


class RenewAhead:
    """Decides when a token is due for renewal and runs each key's renewal once."""

    def __init__(self, fraction: float, threads: int = 2) -> None:
        self.fraction = fraction
        self.threads = threads
        self.running: set[str] = set()  # keys being renewed in this process
        self._guard = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._executor_pid = 0

    def due(self, token: EmbedToken) -> bool:
        """Whether ``token`` has used its share of life (never, with a fraction of 0)."""
        if self.fraction <= 0 or token.issued_at is None:
            return False
        issued = token.issued_at.timestamp()
        return now() - issued >= (token.expires_at_epoch - issued) * self.fraction

    def start(self, key: str, renew: Callable[[], None]) -> None:
        """Run ``renew`` in the background unless ``key`` is already being renewed."""
        with self._guard:
            if key in self.running:
                return
            self.running.add(key)
        try:
            self._pool().submit(self._run, key, renew)
        except RuntimeError:  # interpreter shutting down
            self._done(key)

    def _run(self, key: str, renew: Callable[[], None]) -> None:
        try:
            renew()
        except Exception:
            logger.exception("unexpected error while renewing a token ahead of expiry")
        finally:
            self._done(key)

    def _done(self, key: str) -> None:
        with self._guard:
            self.running.discard(key)

    def _pool(self) -> ThreadPoolExecutor:
        # Threads do not survive a fork: each gunicorn worker makes its own pool.
        pid = os.getpid()
        with self._guard:
            if self._executor is None or self._executor_pid != pid:
                self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="toucan-renew")
                self._executor_pid = pid
            return self._executor
