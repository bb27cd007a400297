"""Tokens and time: ``EmbedToken``, ``parse_expires_in``, the clock, the ``Minter`` protocol."""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .identity import ToucanUser

__all__ = ["FALLBACK_LIFETIME", "EmbedToken", "Minter", "now", "parse_expires_in"]

logger = logging.getLogger("flask_toucan")

#: Seconds assumed when Toucan's ``expiresIn`` cannot be understood. Short on
#: purpose: guessing too long would hand out dead tokens, too short only costs a mint.
FALLBACK_LIFETIME = 60

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

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_expires_in(value: object) -> int:
    """Seconds of life described by Toucan's ``expiresIn``.

    Accepts the duration grammar of the common Node JWT libraries (``"1h"``,
    ``"30m"``, ``"2 days"``, ``"1.5h"``), a JSON number of seconds, or a string of
    digits meaning seconds. Fractions are rounded down. Anything else, including
    zero or negative values, gives :data:`FALLBACK_LIFETIME` and logs a warning.
    """
    seconds: float | None = None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            unit = match.group(2).lower()
            factor = _UNIT_SECONDS.get(unit) if unit else 1
            if factor is not None:
                seconds = float(match.group(1)) * factor
    if seconds is None or not math.isfinite(seconds) or seconds < 1:
        logger.warning(
            "Toucan returned an expiresIn of %s that flask_toucan does not understand; "
            "assuming %d seconds",
            _describe(value),
            FALLBACK_LIFETIME,
        )
        return FALLBACK_LIFETIME
    return int(seconds)


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
        return cls(
            value=value,
            expires_at=datetime.fromtimestamp(sent_at + lifetime, UTC),
            issued_at=datetime.fromtimestamp(sent_at, UTC),
        )

    @property
    def expires_in(self) -> int:
        """Whole seconds left (never negative)."""
        return max(0, math.floor(self.expires_at.timestamp() - now()))

    @property
    def expires_at_epoch(self) -> float:
        return self.expires_at.timestamp()

    def to_dict(self) -> dict[str, Any]:
        """What the browser receives: the token and its expiry."""
        return {
            "token": self.value,
            "expiresAt": self.expires_at.isoformat().replace("+00:00", "Z"),
            "expiresIn": self.expires_in,
        }

    def __repr__(self) -> str:
        return f"EmbedToken(value=<hidden>, expires_at={self.expires_at.isoformat()})"

    __str__ = __repr__


class Minter(Protocol):
    """Something that turns a user into a fresh token: ``TokenClient`` or ``PreviewMinter``.

    ``mint`` returns an :class:`EmbedToken` or raises a ``ToucanAPIError``.
    """

    def mint(self, user: ToucanUser) -> EmbedToken: ...
