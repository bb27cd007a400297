"""What Toucan's answer to a token request means.

A 2xx answer becomes an :class:`EmbedToken`; any other becomes the typed error
that names the ``TOUCAN_*`` key to check. What gets logged of an answer is only
the ``code`` and ``message`` of a JSON error, scrubbed of the API key, never the
raw body. The ``Date`` header tells how far Toucan's clock is from ours.
"""

from __future__ import annotations

import email.utils
import json
import logging
from collections.abc import Iterable, Mapping

from .errors import (
    ToucanAPIError,
    ToucanAuthError,
    ToucanRateLimited,
    ToucanResponseError,
    ToucanUnavailable,
)
from .tokens import EmbedToken, parse_expires_in
from .transport import parse_retry_after

__all__ = ["check_clock", "error_for", "log_failure", "parse_token"]

logger = logging.getLogger("flask_toucan")

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
