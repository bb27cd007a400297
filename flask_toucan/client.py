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

import email.utils
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from .apikey import ApiKey
from .errors import (
    ToucanAPIError,
    ToucanAuthError,
    ToucanRateLimited,
    ToucanResponseError,
    ToucanUnavailable,
)
from .identity import ToucanUser
from .settings import DEFAULTS
from .tokens import EmbedToken, now, parse_expires_in
from .transport import (
    RETRY_STATUSES,
    Adapter,
    BoundedRetry,
    current,
    env_ca_bundle,
    failure_message,
    parse_retry_after,
)
from .watchdog import WATCHDOG

__all__ = ["TokenClient"]

logger = logging.getLogger("flask_toucan")

#: A token response is a few hundred bytes; anything far bigger is not one.
MAX_BODY_BYTES = 256 * 1024
LOGGED_BODY_CHARS = 200
#: Toucan's Date header and our clock may differ this much before we say so.
CLOCK_SKEW_WARNING = 30.0

_warned_skew = False


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

    def __repr__(self) -> str:
        return f"TokenClient(url={self.url!r}, api_key=<hidden>)"

    def close(self) -> None:
        self.session.close()

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
                self._log_failure(status, raw, headers.get("Content-Type", ""))
                logger.warning("Toucan refused the API key; retrying once with a newly fetched key")
                sent_at = now()
                status, headers, raw = self._attempt(body, fresh, ends)
        self.last_skew = _check_clock(headers.get("Date"), sent_at, self.host)
        content_type = headers.get("Content-Type", "")
        if 200 <= status < 300:
            return self._parse_token(raw, status, sent_at, content_type)
        self._log_failure(status, raw, content_type)
        error = self._error_for(status, headers)
        logger.warning("Toucan token request failed: %s", error)
        raise error

    def _error_for(self, status: int, headers: Any) -> ToucanAPIError:
        """The typed error for a non-2xx answer, saying which key to check."""
        where = f"Toucan at {self.host}"
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
                f"{where} has no token endpoint at {urlsplit(self.url).path} (404); "
                "check TOUCAN_TOKEN_PATH and TOUCAN_BASE_URL",
                upstream_status=status,
            )
        return ToucanResponseError(
            f"{where} rejected the token request ({status})", upstream_status=status
        )

    def _attempt(self, body: bytes, key: str, ends: float) -> tuple[int, Any, bytes]:
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

    def _parse_token(
        self, raw: bytes, status: int, sent_at: float, content_type: str
    ) -> EmbedToken:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            self._log_failure(status, raw, content_type)
            raise ToucanResponseError(
                "Toucan's answer was not JSON", upstream_status=status
            ) from None
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token.strip():
            # Do not log the body: it may hold a token-like secret in the wrong field.
            logger.warning("Toucan's %d answer held no usable token", status)
            raise ToucanResponseError(
                "Toucan's answer held no usable token", upstream_status=status
            )
        assert isinstance(data, dict)
        lifetime = parse_expires_in(data.get("expiresIn"), self.max_lifetime)
        return EmbedToken.from_lifetime(token, lifetime, sent_at)

    def _log_failure(self, status: int, raw: bytes, content_type: str = "") -> None:
        """Log what Toucan said, never its raw body: only the ``code`` and ``message``
        fields of a JSON error, scrubbed of the API key before they are shortened."""
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
        fields = {name: self._scrub(data.get(name)) for name in ("code", "message")}
        logger.warning(
            "Toucan answered %d to a token request: code=%r message=%r",
            status,
            fields["code"],
            fields["message"],
        )

    def _scrub(self, value: object) -> str | None:
        if value is None:
            return None
        text = str(value)
        for key in self.key.known():
            text = text.replace(key, "<api-key>")
        return text if len(text) <= LOGGED_BODY_CHARS else text[:LOGGED_BODY_CHARS] + "..."


def default_deadline(timeout: tuple[float, float], max_retries: int) -> float:
    """TOUCAN_MINT_DEADLINE when unset: every attempt's timeouts plus backoff, at most 30 s."""
    return min(30.0, sum(timeout) * (max_retries + 1) + 0.5 * max_retries)


def _check_clock(date: str | None, sent_at: float, host: str) -> float | None:
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
