"""TokenClient: the only code that talks HTTP to Toucan."""

from __future__ import annotations

import json
import logging
import time
from types import TracebackType
from typing import Self

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import MaxRetryError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from .errors import (
    ToucanAuthError,
    ToucanRateLimited,
    ToucanResponseError,
    ToucanUnavailable,
)
from .identity import ToucanUser
from .settings import DEFAULTS
from .tokens import EmbedToken, now, parse_expires_in

__all__ = ["TokenClient"]

logger = logging.getLogger("flask_toucan")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: A token response is a few hundred bytes; anything far bigger is not one.
MAX_BODY_BYTES = 256 * 1024
LOGGED_BODY_CHARS = 200


def _parse_retry_after(header: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` (seconds or HTTP date), uncapped."""
    if not header:
        return None
    try:
        return float(Retry(retry_after_max=2**31).parse_retry_after(header))
    except Exception:  # an unparseable hint: fall back to plain backoff
        return None


class _BoundedRetry(Retry):
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
            wait = _parse_retry_after(response.headers.get("Retry-After"))
            if wait is not None and wait > self.retry_after_max:
                raise MaxRetryError(_pool, url or "", None)  # type: ignore[arg-type]
        return super().increment(method, url, response, error, _pool, _stacktrace)


def _failure_message(exc: requests.exceptions.RequestException) -> str:
    # requests reports a read timeout that used up the retries as a
    # ConnectionError; the urllib3 reason underneath says what really happened.
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if (
        isinstance(exc, requests.exceptions.Timeout)
        or isinstance(reason, TimeoutError)
        or (reason is not None and "Timeout" in type(reason).__name__)
    ):
        return "Toucan did not answer in time"
    if isinstance(exc, requests.exceptions.RetryError):
        return "Toucan kept failing; retries exhausted"
    return "could not connect to Toucan"


class TokenClient:
    """Mints embed tokens with a pooled session, timeouts and bounded retries.

    ``mint()`` either returns an :class:`EmbedToken` or raises one of the typed
    errors of :mod:`flask_toucan.errors`. The API key is sent only in the
    ``x-api-key`` header, only to ``base_url``; redirects are never followed.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        token_path: str = DEFAULTS["TOUCAN_TOKEN_PATH"],
        timeout: tuple[float, float] = DEFAULTS["TOUCAN_TIMEOUT"],
        max_retries: int = DEFAULTS["TOUCAN_MAX_RETRIES"],
        backoff_factor: float = 0.25,
        max_retry_after: float = 5.0,
        pool_maxsize: int = 10,
    ) -> None:
        self.url = base_url.rstrip("/") + "/" + token_path.lstrip("/")
        self._api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        retry = _BoundedRetry(
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
        self.session.trust_env = False  # no proxy settings or .netrc credentials
        adapter = HTTPAdapter(max_retries=retry, pool_connections=1, pool_maxsize=pool_maxsize)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update(
            {"Content-Type": "application/json", "Accept": "application/json"}
        )

    def __repr__(self) -> str:
        return f"TokenClient(url={self.url!r}, api_key=<hidden>)"

    def close(self) -> None:
        self.session.close()

    def mint(self, user: ToucanUser) -> EmbedToken:
        """Ask Toucan for a token for ``user``."""
        body = json.dumps(user.to_payload(), separators=(",", ":")).encode()
        # Expiry counts from before the request left, so it is never later than true.
        sent_at = now()
        started = time.monotonic()
        try:
            response = self.session.post(
                self.url,
                data=body,
                headers={"x-api-key": self._api_key},
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
            )
        except requests.exceptions.RequestException as exc:
            message = _failure_message(exc)
            logger.warning("Toucan token request failed: %s (%s)", message, type(exc).__name__)
            raise ToucanUnavailable(message) from None
        with response:
            status = response.status_code
            raw = self._read_body(response, started)
        content_type = response.headers.get("Content-Type", "")
        if 200 <= status < 300:
            return self._parse_token(raw, status, sent_at, content_type)
        self._log_failure(status, raw, content_type)
        if status in (401, 403):
            raise ToucanAuthError(
                f"Toucan refused the API key ({status}); check TOUCAN_API_KEY",
                upstream_status=status,
            )
        if status == 429:
            raise ToucanRateLimited(
                "Toucan is rate limiting token requests",
                retry_after=_parse_retry_after(response.headers.get("Retry-After")),
            )
        if status >= 500:
            raise ToucanUnavailable(f"Toucan failed with status {status}", upstream_status=status)
        if 300 <= status < 400:
            raise ToucanResponseError(
                f"Toucan answered with a redirect ({status}), which is not followed; "
                "check TOUCAN_BASE_URL",
                upstream_status=status,
            )
        if status == 404:
            raise ToucanResponseError(
                "Toucan has no token endpoint at the configured path (404); "
                "check TOUCAN_TOKEN_PATH and TOUCAN_BASE_URL",
                upstream_status=status,
            )
        raise ToucanResponseError(
            f"Toucan rejected the token request ({status})", upstream_status=status
        )

    def _read_body(self, response: requests.Response, started: float) -> bytes:
        # A per-read timeout alone lets a slow drip last forever; bound the whole body.
        deadline = started + sum(self.timeout) * (self.max_retries + 1)
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                # read1 returns what has arrived, so the deadline is checked
                # between drips instead of after a full buffer.
                chunk = response.raw.read1(16 * 1024)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise ToucanResponseError(
                        f"Toucan's answer was larger than {MAX_BODY_BYTES} bytes",
                        upstream_status=response.status_code,
                    )
                if time.monotonic() > deadline:
                    raise ToucanUnavailable(
                        "Toucan's answer arrived too slowly",
                        upstream_status=response.status_code,
                    )
                chunks.append(chunk)
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            logger.warning("reading Toucan's answer failed: %s", type(exc).__name__)
            raise ToucanUnavailable("Toucan's answer was cut off") from None
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
        lifetime = parse_expires_in(data.get("expiresIn"))
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
        text = str(value).replace(self._api_key, "<api-key>")
        return text if len(text) <= LOGGED_BODY_CHARS else text[:LOGGED_BODY_CHARS] + "..."
