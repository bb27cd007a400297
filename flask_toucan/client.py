"""TokenClient: the only code that talks HTTP to Toucan.

Egress as enterprises run it: proxies from ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``
(read the way requests reads them) or ``TOUCAN_PROXIES``, but ``.netrc`` credentials
are never sent; TLS verified against ``TOUCAN_VERIFY`` (a CA bundle path) or
``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``. Answers compressed by a CDN (gzip,
deflate, br when installed) are decoded, with the decoded size capped. One
wall-clock budget, ``TOUCAN_MINT_DEADLINE``, bounds a whole mint, retries and
dripping answers included (:mod:`flask_toucan.watchdog`). Every failure names the
host it tried and the ``TOUCAN_*`` key to check, never the API key.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from .answers import check_clock, error_for, log_failure, parse_token
from .apikey import ApiKey
from .errors import ToucanResponseError, ToucanUnavailable
from .identity import ToucanUser
from .settings import DEFAULTS
from .tokens import EmbedToken, now
from .transport import (
    RETRY_STATUSES,
    Adapter,
    BoundedRetry,
    current,
    env_ca_bundle,
    failure_message,
)
from .watchdog import WATCHDOG

__all__ = ["TokenClient"]

logger = logging.getLogger("flask_toucan")

#: Seconds past the mint deadline the caller waits for the worker's own answer.
GRACE = 0.25

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
        self.host = urlsplit(self.url).netloc
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
        self.session.verify = env_ca_bundle() or True if verify is True else verify
        adapter = Adapter(max_retries=retry, pool_connections=1, pool_maxsize=pool_maxsize)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update(
            {"Content-Type": "application/json", "Accept": "application/json"}
        )
        self._workers = ThreadPoolExecutor(pool_maxsize, thread_name_prefix="toucan-mint")

    def __repr__(self) -> str:
        return f"TokenClient(url={self.url!r}, api_key=<hidden>)"

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
        """One POST with its retries, on a worker thread the caller waits for until
        ``ends``: a wall-clock bound no socket timeout gives (a stalled TLS handshake,
        a dripping answer). The watchdog then cuts what it can reach, so the worker
        does not stay busy either."""
        future = self._workers.submit(self._guarded, body, key, ends)
        try:
            # A little past ``ends``: the worker's own, more precise, error comes first
            # when it can; this is the backstop for what no socket timeout bounds.
            return future.result(timeout=max(0.0, ends - time.monotonic()) + GRACE)
        except concurrent.futures.TimeoutError:
            future.cancel()
            message = failure_message(requests.exceptions.Timeout(), self.host, True)
            logger.warning("Toucan token request failed: %s", message)
            raise ToucanUnavailable(message) from None

    def _guarded(self, body: bytes, key: str, ends: float) -> tuple[int, Any, bytes]:
        current.deadline = ends
        try:
            with WATCHDOG.guard(ends) as guard:
                return self._post(body, key, ends, lambda: guard.expired)
        finally:
            current.deadline = None

    def _post(self, body: bytes, key: str, ends: float, late: Any) -> tuple[int, Any, bytes]:
        try:
            response = self.session.post(
                self.url,
                data=body,
                headers={"x-api-key": key},
                timeout=self.timeout,
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
