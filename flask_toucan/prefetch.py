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
from typing import Any

from flask import Flask

from . import signals
from .errors import ToucanConfigError
from .identity import ToucanUser, check_required

__all__ = ["MAX_PENDING", "WORKERS", "Prefetcher", "connect_login"]

logger = logging.getLogger("flask_toucan")

WORKERS = 2
MAX_PENDING = 256


class Prefetcher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0
        self.pending = 0

    def prefetch(self, state: Any, user: ToucanUser) -> None:
        """Mint ``user``'s token through ``state``'s cache unless it is warm (raises on
        a bad user or config: the caller logs it)."""
        check_required(user, state.settings.required_attributes)
        minter = state.minter(user.instance)
        key = state.key_for(user, minter)
        if state.cache.get(key) is not None:
            return  # warm already

        def job() -> object:
            return state.cache.get_or_mint(key, signals.observed_mint(state, minter, user))

        if state.settings.preview:
            job()  # instant in process: no thread in preview mode
        else:
            self.submit(job)

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


def connect_login(app: Flask, receiver: Callable[..., None]) -> None:
    """Call ``receiver`` on Flask-Login's ``user_logged_in`` in ``app``
    (TOUCAN_PREFETCH_ON_LOGIN)."""
    try:
        from flask_login import user_logged_in  # type: ignore[import-untyped]
    except ImportError:
        raise ToucanConfigError(
            "TOUCAN_PREFETCH_ON_LOGIN needs Flask-Login (pip install flask-login), "
            "or set it to False and call toucan.prefetch() after your own sign-in"
        ) from None
    user_logged_in.connect(receiver, app, weak=False)
