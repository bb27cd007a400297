"""TokenClient: the only code that talks HTTP to Toucan, and everything a mint needs.

Egress as enterprises run it: proxies from ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``
(read the way requests reads them) or ``TOUCAN_PROXIES``, but ``.netrc`` credentials
are never sent; TLS verified against ``TOUCAN_VERIFY`` (a CA bundle path) or
``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``. Answers compressed by a CDN (gzip,
deflate, br when installed) are decoded, with the decoded size capped. One
wall-clock budget, ``TOUCAN_MINT_DEADLINE``, bounds a whole mint, retries and
dripping answers included. Every failure names the host it tried and the
``TOUCAN_*`` key to check, never the API key.

One job, in the sections below: the deadline's enforcer (a watchdog over sockets),
retries (urllib3's ``Retry``, bounded by the deadline), what Toucan's answer means
(the token, the typed error, what is logged), the API key (a string or a secret
manager's callable) and the client itself.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import ConnectionPool, HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from .checks import redact_text
from .errors import (
    ToucanAPIError,
    ToucanAuthError,
    ToucanRateLimited,
    ToucanResponseError,
    ToucanUnavailable,
)
from .identity import ToucanUser, key_fingerprint
from .settings import DEFAULTS, ca_bundle
from .tokens import EmbedToken, now, parse_expires_in

__all__ = [
    "CLOCK_SKEW_WARNING",
    "RETRY_STATUSES",
    "WATCHDOG",
    "ApiKey",
    "TokenClient",
    "default_deadline",
    "failure_message",
    "parse_retry_after",
]

logger = logging.getLogger("flask_toucan")


# --------------------------------------------------------------------------------------
# The mint deadline's enforcer
#
# The mint deadline's enforcer: closes a token request's sockets once its time is up.
#
# urllib3's timeouts bound each socket operation (connect, one read), not a whole
# request: an upstream that sends one byte of its status line or headers every
# second never trips a 10-second read timeout, and holds the worker thread for as
# long as it likes. No library offers a wall-clock limit for a blocking request, so
# flask_toucan keeps one daemon thread per process (started at the first real mint,
# never in preview mode) that shuts down the sockets of any token request still
# running at its deadline. The blocked ``recv`` then returns, urllib3 raises, and the
# caller gets ``ToucanUnavailable`` naming ``TOUCAN_MINT_DEADLINE``.
#
# A thread was chosen over signals (``SIGALRM`` works only in the main thread, which
# a threaded server's requests are not in) and over running each request in a worker
# thread the caller stops waiting for (the caller would return, but the worker would
# stay blocked on a dripping answer, holding a thread and a connection). The watchdog
# is the one deadline mechanism: the request runs in the caller's thread, and what the
# watchdog cannot see (the TLS handshake, before urllib3 hands over the socket) is
# bounded by a connect timeout capped at the time left (``TokenClient._post``), with no
# retry started that could not finish its connect in time (``BoundedRetry``).


class _Mint:
    __slots__ = ("deadline", "expired", "sockets")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.sockets: list[socket.socket] = []
        self.expired = False


class Watchdog:
    """Shuts down the sockets of token requests that outlive their deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._mints: dict[int, _Mint] = {}  # by thread: one mint in flight per thread
        self._started = False
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._cond = threading.Condition()
        self._mints = {}
        self._started = False

    @contextlib.contextmanager
    def guard(self, deadline: float) -> Iterator[_Mint]:
        """Watch the sockets this thread opens or reuses until ``deadline`` (monotonic)."""
        mint = _Mint(deadline)
        with self._cond:
            self._ensure_thread()
            self._mints[threading.get_ident()] = mint
            self._cond.notify()
        try:
            yield mint
        finally:
            with self._cond:
                self._mints.pop(threading.get_ident(), None)
            for dup in mint.sockets:
                dup.close()

    def watch(self, sock: socket.socket) -> None:
        """Called by the connections below for every socket a guarded request uses."""
        with self._cond:
            mint = self._mints.get(threading.get_ident())
            if mint is None:
                return
            # A duplicate of the descriptor: TLS wrapping detaches the original socket
            # object, and shutting down any descriptor of a socket ends it for all.
            try:
                dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
            except OSError:
                return
            mint.sockets.append(dup)
            if mint.expired:
                _shut(dup)

    def _ensure_thread(self) -> None:
        # Threads do not survive a fork: each gunicorn worker starts its own.
        if not self._started:
            self._started = True
            threading.Thread(target=self._run, name="toucan-watchdog", daemon=True).start()

    def _run(self) -> None:
        with self._cond:
            while True:
                current = time.monotonic()
                upcoming = []
                for mint in self._mints.values():
                    if mint.expired:
                        continue
                    if mint.deadline <= current:
                        mint.expired = True
                        for sock in mint.sockets:
                            _shut(sock)
                    else:
                        upcoming.append(mint.deadline)
                self._cond.wait(timeout=min(upcoming) - current if upcoming else None)

    def __len__(self) -> int:
        return len(self._mints)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


WATCHDOG = Watchdog()


class WatchedHTTPConnection(HTTPConnection):
    """urllib3's connection, reporting its socket to the watchdog (through its public
    ``connect``, ``request`` and ``sock``: nothing private of urllib3)."""

    def connect(self) -> None:
        super().connect()
        if self.sock is not None:
            WATCHDOG.watch(self.sock)

    def request(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        if self.sock is not None:  # a kept-alive connection, reused
            WATCHDOG.watch(self.sock)
        super().request(*args, **kwargs)


class WatchedHTTPSConnection(WatchedHTTPConnection, HTTPSConnection):
    """The same for TLS (``super().connect()`` above is HTTPSConnection's here). urllib3
    offers no public hook between the TCP connect and the handshake, so a stalled
    handshake is not cut here: the handshake is bounded by the connect timeout, and the
    caller by a connect timeout capped at the time left (``TokenClient._post``)."""


# --------------------------------------------------------------------------------------
# How a token request travels
#
# How a token request travels: retries (urllib3's Retry, bounded by the mint deadline),
# connections the watchdog can cut, and what a failure is called (the host and the key to check).


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

    def __repr__(self) -> str:
        # urllib3 logs "Retrying (<repr>) after ...": say what it means, and the key.
        return f"{self.total} more retries allowed by TOUCAN_MAX_RETRIES"

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
        if deadline is not None:
            # Another attempt starts only if its connect (TLS handshake included, which
            # the watchdog cannot see) can end within TOUCAN_MINT_DEADLINE.
            starts = time.monotonic() + following.get_backoff_time()
            if starts + getattr(current, "connect", 0.0) >= deadline:
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


#: OpenSSL's reasons when the other end does not speak TLS at all (a plain-HTTP server).
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG")


def tls_failure(exc: BaseException, host: str) -> str:
    """Why a TLS handshake with ``host`` failed, and the key to check: a certificate we
    do not trust, or a server that speaks plain HTTP on an https:// URL."""
    told: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(told) < 8:  # requests and urllib3 wrap ssl's error
        told.append(f"{getattr(current, 'reason', '')} {current}")
        nested = current.args[0] if current.args else None
        current = nested if isinstance(nested, BaseException) else current.__context__
    said = " ".join(told).upper().replace(" ", "_")
    if any(reason in said for reason in _NOT_TLS):
        return (
            f"Toucan at {host} answers in plain HTTP, not TLS: the URL says https:// but the "
            "server (or port) speaks http; check TOUCAN_BASE_URL"
        )
    return (
        f"the TLS certificate of Toucan at {host} could not be verified; "
        "check TOUCAN_VERIFY (a CA bundle for a private CA) and TOUCAN_BASE_URL"
    )


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
        return tls_failure(exc, host)
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


# --------------------------------------------------------------------------------------
# What Toucan's answer means
#
# What Toucan's answer to a token request means.
#
# A 2xx answer becomes an :class:`EmbedToken`; any other becomes the typed error
# that names the ``TOUCAN_*`` key to check. What gets logged of an answer is only
# the ``code`` and ``message`` of a JSON error, scrubbed of the API key, never the
# raw body. The ``Date`` header tells how far Toucan's clock is from ours.


LOGGED_BODY_CHARS = 200
#: Toucan's Date header and our clock may differ this much before we say so.
CLOCK_SKEW_WARNING = 30.0

_warned_skew = False


def parse_token(
    raw: bytes,
    status: int,
    *,
    sent_at: float,
    max_lifetime: int,
    content_type: str,
    secrets: Iterable[str],
) -> EmbedToken:
    """The token in a 2xx answer; ToucanResponseError when there is none."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        log_failure(status, raw, content_type, secrets)
        raise ToucanResponseError("Toucan's answer was not JSON", upstream_status=status) from None
    token = data.get("token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token.strip():
        # Do not log the body: it may hold a token-like secret in the wrong field.
        logger.warning("Toucan's %d answer held no usable token", status)
        raise ToucanResponseError("Toucan's answer held no usable token", upstream_status=status)
    assert isinstance(data, dict)
    lifetime = parse_expires_in(data.get("expiresIn"), max_lifetime)
    return EmbedToken.from_lifetime(token, lifetime, sent_at)


def error_for(status: int, headers: Mapping[str, str], host: str, path: str) -> ToucanAPIError:
    """The typed error for a non-2xx answer from ``host``, saying which key to check."""
    where = f"Toucan at {host}"
    if status in (401, 403):
        return ToucanAuthError(
            f"{where} refused the API key ({status}); check TOUCAN_API_KEY",
            upstream_status=status,
        )
    if status == 429:
        return ToucanRateLimited(
            f"{where} is rate limiting token requests",
            retry_after=parse_retry_after(headers.get("Retry-After")),
        )
    if status >= 500:
        return ToucanUnavailable(f"{where} failed with status {status}", upstream_status=status)
    if 300 <= status < 400:
        return ToucanResponseError(
            f"{where} answered with a redirect ({status}), which is not followed; "
            "check TOUCAN_BASE_URL",
            upstream_status=status,
        )
    if status == 404:
        return ToucanResponseError(
            f"{where} has no token endpoint at {path} (404); "
            "check TOUCAN_TOKEN_PATH and TOUCAN_BASE_URL",
            upstream_status=status,
        )
    return ToucanResponseError(
        f"{where} rejected the token request ({status})", upstream_status=status
    )


def log_failure(status: int, raw: bytes, content_type: str, secrets: Iterable[str]) -> None:
    """Log what Toucan said, never its raw body: only the ``code`` and ``message``
    fields of a JSON error, with ``secrets`` scrubbed before they are shortened."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict) or not ({"code", "message"} & data.keys()):
        kind = content_type.split(";")[0].strip() or "no content type"
        logger.warning(
            "Toucan answered %d to a token request (%s, %d bytes)", status, kind, len(raw)
        )
        return
    secrets = list(secrets)
    fields = {name: _scrub(data.get(name), secrets) for name in ("code", "message")}
    logger.warning(
        "Toucan answered %d to a token request: code=%r message=%r",
        status,
        fields["code"],
        fields["message"],
    )


def _scrub(value: object, secrets: list[str]) -> str | None:
    if value is None:
        return None
    text = str(value)
    for secret in secrets:
        text = text.replace(secret, "<api-key>")
    return text if len(text) <= LOGGED_BODY_CHARS else text[:LOGGED_BODY_CHARS] + "..."


def check_clock(date: str | None, sent_at: float, host: str) -> float | None:
    """Seconds Toucan's clock is ahead of ours (None without a usable Date header);
    warns once per process past CLOCK_SKEW_WARNING."""
    global _warned_skew
    if not date:
        return None
    try:
        theirs = email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    skew = theirs - sent_at
    if abs(skew) > CLOCK_SKEW_WARNING and not _warned_skew:
        _warned_skew = True
        logger.warning(
            "Toucan at %s reports a time %+.0f s from this server's clock; token expiry "
            "is still counted from this server's clock, but check its time sync (NTP)",
            host,
            skew,
        )
    return skew


# --------------------------------------------------------------------------------------
# The API key source
#
# The API key: a string, or a secret manager's callable whose value is reused for a while.
#
# A secret manager is a dependency that fails. Its outage must not become ours:
#
# * it is called by one thread at a time per source (single-flight), never under a lock
#   other callers wait on while they have a key to use: the others keep the last key;
# * when it fails, the last good key keeps being used (stale-while-error) and the next
#   attempt waits a back-off, doubling up to the key's TTL;
# * a cached token is found by the fingerprint of the last key seen: serving it never
#   calls the secret manager at all (:meth:`ApiKey.fingerprint`).


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


# --------------------------------------------------------------------------------------
# The client


#: A token response is a few hundred bytes; anything far bigger is not one.
MAX_BODY_BYTES = 256 * 1024


class TokenClient:
    """Mints embed tokens with a pooled session, timeouts and bounded retries.

    ``mint()`` either returns an :class:`EmbedToken` or raises one of the typed
    errors of :mod:`flask_toucan.errors`. The API key is sent only in the
    ``x-api-key`` header, only to ``base_url``; redirects are never followed.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | Callable[[], str],
        *,
        api_key_ttl: float = DEFAULTS["TOUCAN_API_KEY_TTL"],
        token_path: str = DEFAULTS["TOUCAN_TOKEN_PATH"],
        timeout: tuple[float, float] = DEFAULTS["TOUCAN_TIMEOUT"],
        max_retries: int = DEFAULTS["TOUCAN_MAX_RETRIES"],
        deadline: float | None = None,
        proxies: dict[str, str] | None = DEFAULTS["TOUCAN_PROXIES"],
        verify: bool | str = DEFAULTS["TOUCAN_VERIFY"],
        max_lifetime: int = DEFAULTS["TOUCAN_MAX_TOKEN_LIFETIME"],
        backoff_factor: float = 0.25,
        max_retry_after: float = 5.0,
        pool_maxsize: int = 10,
    ) -> None:
        self.url = base_url.rstrip("/") + "/" + token_path.lstrip("/")
        self.host = urlsplit(self.url).netloc.rpartition("@")[2]  # never its userinfo
        self.key = ApiKey(api_key, api_key_ttl)
        self.timeout = timeout
        self.max_retries = max_retries
        self.deadline = default_deadline(timeout, max_retries) if deadline is None else deadline
        self.max_lifetime = max_lifetime
        #: Seconds Toucan's clock was ahead of ours at the last answer (flask toucan doctor).
        self.last_skew: float | None = None
        retry = BoundedRetry(
            total=max_retries,
            redirect=0,
            raise_on_redirect=False,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,  # POST too: minting twice only costs a token
            backoff_factor=backoff_factor,
            backoff_jitter=backoff_factor,
            backoff_max=max_retry_after,
            respect_retry_after_header=True,
            retry_after_max=int(max_retry_after),
            raise_on_status=False,
        )
        self.session = requests.Session()
        # Environment settings are applied below by hand: trust_env would also send
        # .netrc credentials to Toucan.
        self.session.trust_env = False
        self.session.proxies = (
            dict(proxies) if proxies is not None else requests.utils.get_environ_proxies(self.url)
        )
        self.session.verify = ca_bundle(verify) or verify
        adapter = Adapter(max_retries=retry, pool_connections=1, pool_maxsize=pool_maxsize)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update(
            {"Content-Type": "application/json", "Accept": "application/json"}
        )

    def __repr__(self) -> str:
        return f"TokenClient(url={redact_text(self.url)!r}, api_key=<hidden>)"

    def key_fingerprint(self) -> str:
        return self.key.fingerprint()

    def mint(self, user: ToucanUser, *, deadline: float | None = None) -> EmbedToken:
        """Ask Toucan for a token for ``user``, within ``deadline`` (monotonic) at the latest.

        With a callable TOUCAN_API_KEY, a 401/403 calls it again at once and, if the
        key changed (a rotation), retries once with the new one.
        """
        body = json.dumps(user.to_payload(), separators=(",", ":")).encode()
        ends = time.monotonic() + self.deadline
        ends = ends if deadline is None else min(ends, deadline)
        # Expiry counts from before the request left, so it is never later than true.
        sent_at = now()
        key = self.key.get()
        status, headers, raw = self._attempt(body, key, ends)
        if status in (401, 403) and self.key.rotates:
            fresh = self.key.get(fresh=True)
            if fresh != key and time.monotonic() < ends:
                log_failure(status, raw, headers.get("Content-Type", ""), self.key.known())
                logger.warning("Toucan refused the API key; retrying once with a newly fetched key")
                sent_at = now()
                status, headers, raw = self._attempt(body, fresh, ends)
        self.last_skew = check_clock(headers.get("Date"), sent_at, self.host)
        content_type = headers.get("Content-Type", "")
        if 200 <= status < 300:
            return parse_token(
                raw,
                status,
                sent_at=sent_at,
                max_lifetime=self.max_lifetime,
                content_type=content_type,
                secrets=self.key.known(),
            )
        log_failure(status, raw, content_type, self.key.known())
        error = error_for(status, headers, self.host, urlsplit(self.url).path)
        logger.warning("Toucan token request failed: %s", error)
        raise error

    def _attempt(self, body: bytes, key: str, ends: float) -> tuple[int, Any, bytes]:
        """One POST with its retries, in the caller's thread, within ``ends``: the
        watchdog shuts its sockets down at the deadline."""
        current.deadline = ends
        current.connect = self.timeout[0]
        try:
            with WATCHDOG.guard(ends) as guard:
                return self._post(body, key, ends, lambda: guard.expired)
        finally:
            current.deadline = None
            current.connect = 0.0

    def _post(self, body: bytes, key: str, ends: float, late: Any) -> tuple[int, Any, bytes]:
        try:
            # The TLS handshake happens before the watchdog sees the socket: its connect
            # timeout is capped at the time left.
            connect = min(self.timeout[0], max(0.05, ends - time.monotonic()))
            response = self.session.post(
                self.url,
                data=body,
                headers={"x-api-key": key},
                timeout=(connect, self.timeout[1]),
                allow_redirects=False,
                stream=True,
            )
            with response:
                raw = self._read_body(response, ends, late)
                return response.status_code, response.headers, raw
        except requests.exceptions.RequestException as exc:
            message = failure_message(exc, self.host, late() or time.monotonic() >= ends)
            logger.warning("Toucan token request failed: %s (%s)", message, type(exc).__name__)
            raise ToucanUnavailable(message) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            timed_out = late() or time.monotonic() >= ends
            message = failure_message(
                requests.exceptions.ConnectionError(exc), self.host, timed_out
            )
            if not timed_out:
                message = f"Toucan's answer from {self.host} was cut off"
            logger.warning("reading Toucan's answer failed: %s (%s)", message, type(exc).__name__)
            raise ToucanUnavailable(message) from None

    def _read_body(self, response: requests.Response, ends: float, late: Any) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            # read1 returns what has arrived (decoded: gzip/deflate/br), so the cap
            # and the deadline are checked between drips; urllib3 bounds each
            # decompression step to the size asked for, so a zip bomb stops at the cap.
            chunk = response.raw.read1(16 * 1024, decode_content=True)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ToucanResponseError(
                    f"Toucan's answer from {self.host} was larger than {MAX_BODY_BYTES} bytes "
                    "(decoded)",
                    upstream_status=response.status_code,
                )
            if time.monotonic() > ends:
                raise ToucanUnavailable(
                    f"Toucan's answer from {self.host} arrived too slowly (TOUCAN_MINT_DEADLINE)",
                    upstream_status=response.status_code,
                )
            chunks.append(chunk)
        if late():  # the watchdog cut the answer short: it is not all there
            raise ToucanUnavailable(
                f"Toucan's answer from {self.host} arrived too slowly (TOUCAN_MINT_DEADLINE)",
                upstream_status=response.status_code,
            )
        return b"".join(chunks)


def default_deadline(timeout: tuple[float, float], max_retries: int) -> float:
    """TOUCAN_MINT_DEADLINE when unset: every attempt's timeouts plus backoff, at most 30 s."""
    return min(30.0, sum(timeout) * (max_retries + 1) + 0.5 * max_retries)
