"""How a token request travels: retries (urllib3's Retry, bounded by the mint deadline),
connections the watchdog can cut, and what a failure is called (the host and the key to check).
"""

from __future__ import annotations

import os
import threading
import time
from types import TracebackType
from typing import Any, Self

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import ConnectionPool, HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from .watchdog import WatchedHTTPConnection, WatchedHTTPSConnection

__all__ = ["RETRY_STATUSES", "Adapter", "BoundedRetry", "failure_message", "parse_retry_after"]

RETRY_STATUSES = frozenset({429, 502, 503, 504})

# The monotonic deadline of the mint this thread is running (read by BoundedRetry).
current = threading.local()


def parse_retry_after(header: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` (seconds or HTTP date), uncapped."""
    if not header:
        return None
    try:
        return float(Retry(retry_after_max=2**31).parse_retry_after(header))
    except Exception:  # an unparseable hint: fall back to plain backoff
        return None


class BoundedRetry(Retry):
    """urllib3's Retry, but a ``Retry-After`` longer than we may wait ends retrying.

    Plain Retry caps the sleep at ``retry_after_max`` and tries again anyway; a
    page view cannot wait minutes, so a long hint is returned to the caller at
    once (as ToucanRateLimited/ToucanUnavailable) instead of being half-honoured.
    """

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        if response is not None and response.status in RETRY_STATUSES:
            wait = parse_retry_after(response.headers.get("Retry-After"))
            if wait is not None and wait > self.retry_after_max:
                raise MaxRetryError(_pool, url or "", None)  # type: ignore[arg-type]
        following = super().increment(method, url, response, error, _pool, _stacktrace)
        deadline = getattr(current, "deadline", None)
        if deadline is not None and time.monotonic() + following.get_backoff_time() >= deadline:
            # No time left for another attempt within TOUCAN_MINT_DEADLINE.
            raise MaxRetryError(_pool, url or "", error or None)  # type: ignore[arg-type]
        return following


class _WatchedPool(HTTPConnectionPool):
    ConnectionCls = WatchedHTTPConnection


class _WatchedTLSPool(HTTPSConnectionPool):
    ConnectionCls = WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedPool, "https": _WatchedTLSPool}


class Adapter(HTTPAdapter):
    """requests' adapter whose connections report their sockets to the watchdog."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


def failure_message(exc: requests.exceptions.RequestException, host: str, late: bool) -> str:
    """What went wrong, where, and which key to check (never the API key)."""
    if late:
        return (
            f"Toucan at {host} did not answer within TOUCAN_MINT_DEADLINE; "
            "check TOUCAN_BASE_URL, or raise TOUCAN_MINT_DEADLINE"
        )
    if isinstance(exc, requests.exceptions.ProxyError):
        return f"the proxy to Toucan at {host} failed; check TOUCAN_PROXIES (or HTTPS_PROXY)"
    if isinstance(exc, requests.exceptions.SSLError):
        return (
            f"the TLS certificate of Toucan at {host} could not be verified; "
            "check TOUCAN_VERIFY (a CA bundle for a private CA) and TOUCAN_BASE_URL"
        )
    # requests reports a read timeout that used up the retries as a
    # ConnectionError; the urllib3 reason underneath says what really happened.
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"could not connect to Toucan at {host} in time; check TOUCAN_BASE_URL"
    if (
        isinstance(exc, requests.exceptions.Timeout)
        or isinstance(reason, TimeoutError)
        or (reason is not None and "Timeout" in type(reason).__name__)
    ):
        return f"Toucan at {host} did not answer in time (TOUCAN_TIMEOUT)"
    if isinstance(exc, requests.exceptions.RetryError):
        return f"Toucan at {host} kept failing; retries exhausted (TOUCAN_MAX_RETRIES)"
    return f"could not connect to Toucan at {host}; check TOUCAN_BASE_URL"


def env_ca_bundle() -> str | None:
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None
