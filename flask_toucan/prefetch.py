"""Minting in the background, so a user's first analytics view finds the token ready.

A small bounded pool per process: at most :data:`WORKERS` mints at a time and
:data:`MAX_PENDING` waiting; beyond that a prefetch is dropped (the page will mint
on demand, as without prefetch). A job's failure is logged, never raised: prefetch
must not be able to break a sign-in.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

__all__ = ["MAX_PENDING", "WORKERS", "Prefetcher"]

logger = logging.getLogger("flask_toucan")

WORKERS = 2
MAX_PENDING = 256


class Prefetcher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0
        self.pending = 0

    def submit(self, job: Callable[[], object]) -> bool:
        """Run ``job`` in the background; False when the queue is full (dropped)."""
        with self._lock:
            if self.pending >= MAX_PENDING:
                logger.debug("prefetch queue full; the page will mint on demand")
                return False
            # Threads do not survive a fork: each gunicorn worker makes its own pool.
            if self._pool is None or self._pid != os.getpid():
                self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="toucan-prefetch")
                self._pid = os.getpid()
            self.pending += 1
            pool = self._pool
        try:
            pool.submit(self._run, job)
        except RuntimeError:  # interpreter shutting down
            with self._lock:
                self.pending -= 1
            return False
        return True

    def _run(self, job: Callable[[], object]) -> None:
        try:
            job()
        except Exception as exc:
            logger.warning("prefetching a Toucan token failed: %s", exc)
        finally:
            with self._lock:
                self.pending -= 1
