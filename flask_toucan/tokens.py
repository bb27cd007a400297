"""Tokens and time: ``EmbedToken``, ``parse_expires_in``, the clock, the ``Minter`` protocol."""

from __future__ import annotations

import html
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from .errors import describe

if TYPE_CHECKING:
    from .identity import ToucanUser

__all__ = [
    "FALLBACK_LIFETIME",
    "EmbedToken",
    "Minter",
    "now",
    "parse_expires_in",
    "serving_margin",
]

logger = logging.getLogger("flask_toucan")

#: Seconds assumed when Toucan's ``expiresIn`` cannot be understood. Short on
#: purpose: guessing too long would hand out dead tokens, too short only costs a mint.
FALLBACK_LIFETIME = 60
#: Lifetimes Toucan announces above this are capped (TOUCAN_MAX_TOKEN_LIFETIME's default).
MAX_LIFETIME = 86400

# The one clock everything reads, so tests can move time without sleeping.
_clock: Callable[[], float] = time.time


def now() -> float:
    """Current time as a UNIX timestamp, from the replaceable module clock."""
    return _clock()


# ---------------------------------------------------------------------------
# expiresIn


_UNIT_SECONDS: dict[str, float] = {}
for _names, _seconds in (
    (("ms", "msec", "msecs", "millisecond", "milliseconds"), 0.001),
    (("s", "sec", "secs", "second", "seconds"), 1),
    (("m", "min", "mins", "minute", "minutes"), 60),
    (("h", "hr", "hrs", "hour", "hours"), 3600),
    (("d", "day", "days"), 86400),
    (("w", "week", "weeks"), 604800),
    (("y", "yr", "yrs", "year", "years"), 31557600),
):
    for _name in _names:
        _UNIT_SECONDS[_name] = _seconds

#: A number and an optional unit. Applied with ``fullmatch`` to a value already stripped
#: and at most :data:`MAX_EXPIRES_IN` characters: no two parts can match the same
#: characters (digits, then spaces, then letters), so matching is linear even on hostile
#: input (the old ``\s*`` on both sides of an empty unit was quadratic).
_DURATION = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)", re.IGNORECASE)
#: Longer ``expiresIn`` strings are refused before any parsing ("1 hour" is 6).
MAX_EXPIRES_IN = 32


_warned_cap = False


def parse_expires_in(value: object, max_lifetime: int = MAX_LIFETIME) -> int:
    """Seconds of life described by Toucan's ``expiresIn``; it never raises.

    Accepts the duration grammar of the common Node JWT libraries (``"1h"``,
    ``"30m"``, ``"2 days"``, ``"1.5h"``), a JSON number of seconds, or a string of
    digits meaning seconds. Fractions are rounded down. Anything else, including
    zero or negative values, gives :data:`FALLBACK_LIFETIME` and logs a warning.
    More than ``max_lifetime`` (``TOUCAN_MAX_TOKEN_LIFETIME``) is capped to it, with
    one warning per process: a token cached for "5000y" would outlive any real one.
    """
    global _warned_cap
    seconds: float | None = None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            seconds = math.inf
    elif isinstance(value, str) and len(value) <= MAX_EXPIRES_IN:
        match = _DURATION.fullmatch(value.strip())
        if match:
            unit = match.group(2).lower()
            factor = _UNIT_SECONDS.get(unit) if unit else 1
            if factor is not None:
                seconds = float(match.group(1)) * factor
    if seconds is None or not math.isfinite(seconds) or seconds < 1:
        logger.warning(
            "Toucan returned an expiresIn of %s that flask_toucan does not understand; "
            "assuming %d seconds",
            describe(value),
            FALLBACK_LIFETIME,
        )
        return FALLBACK_LIFETIME
    if seconds > max_lifetime:
        if not _warned_cap:
            _warned_cap = True
            logger.warning(
                "Toucan returned an expiresIn of %s, more than TOUCAN_MAX_TOKEN_LIFETIME "
                "(%d s); using %d s",
                describe(value),
                max_lifetime,
                max_lifetime,
            )
        return max_lifetime
    return int(seconds)


# ---------------------------------------------------------------------------
# Tokens


@dataclass(frozen=True, repr=False)
class EmbedToken:
    """A minted token and its absolute expiry. Its ``repr`` never shows the value."""

    value: str
    expires_at: datetime
    issued_at: datetime | None = None

    @classmethod
    def from_lifetime(cls, value: str, lifetime: int, sent_at: float) -> EmbedToken:
        """A token announced to live ``lifetime`` seconds, asked for at ``sent_at``.

        Issuers count whole seconds (a JWT's ``exp`` is its whole-second ``iat`` plus the
        lifetime), so the expiry counts from the second ``sent_at`` falls in: never later
        than the token's own, at most a second earlier.
        """
        return cls(
            value=value,
            expires_at=datetime.fromtimestamp(math.floor(sent_at) + lifetime, UTC),
            issued_at=datetime.fromtimestamp(sent_at, UTC),
        )

    @property
    def expires_in(self) -> int:
        """Whole seconds left (never negative)."""
        return max(0, math.floor(self.expires_at.timestamp() - now()))

    @property
    def expires_at_epoch(self) -> float:
        return self.expires_at.timestamp()

    @property
    def lifetime(self) -> float | None:
        """Seconds from issue to expiry, when the issue time is known: counted from the
        whole second of issue, as the expiry is (see :meth:`from_lifetime`)."""
        if self.issued_at is None:
            return None
        return self.expires_at_epoch - math.floor(self.issued_at.timestamp())

    def to_dict(self) -> dict[str, Any]:
        """What the browser receives: the token and its expiry."""
        return {
            "token": self.value,
            "expiresAt": self.expires_at.isoformat().replace("+00:00", "Z"),
            "expiresIn": self.expires_in,
        }

    def __html__(self) -> str:
        """``{{ toucan_token }}`` in an autoescaped template is the token itself, on
        purpose (``auth-token="{{ toucan_token }}"``); ``str()`` stays redacted."""
        return html.escape(self.value, quote=True)

    def __repr__(self) -> str:
        return f"EmbedToken(value=<hidden>, expires_at={self.expires_at.isoformat()})"

    __str__ = __repr__


def serving_margin(token: EmbedToken, min_ttl: float) -> float:
    """Seconds of life a token must have left to be handed out.

    ``min(TOUCAN_MIN_TOKEN_TTL, lifetime / 4)``: the advisory/mandatory split of
    botocore's refreshable credentials, so that 5-minute tokens are reused for
    225 s (one mint per lifetime) while 1-hour tokens keep the full 300 s margin.
    """
    lifetime = token.lifetime
    return min_ttl if lifetime is None else min(min_ttl, lifetime * MARGIN_SHARE)


#: The share of a token's lifetime kept as the least serving margin.
MARGIN_SHARE = 0.25


class Minter(Protocol):
    """Something that turns a user into a fresh token: ``TokenClient`` or ``PreviewMinter``.

    ``mint`` returns an :class:`EmbedToken` or raises a ``ToucanAPIError``; it gives
    up at ``deadline`` (a ``time.monotonic()`` value) when one is given.
    """

    def mint(self, user: ToucanUser, *, deadline: float | None = None) -> EmbedToken: ...

    def key_fingerprint(self) -> str:
        """A one-way tag of the key in use, part of every cache key."""
        ...
