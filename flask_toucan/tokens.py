"""Value types: who a token is for, the token itself, and how long it lives.

Nothing here knows about Flask or HTTP, so the rules that decide which users may
share a token (the cache key) can be tested on their own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

__all__ = [
    "FALLBACK_LIFETIME",
    "EmbedToken",
    "InvalidToucanUser",
    "ToucanUser",
    "cache_key",
    "key_fingerprint",
    "now",
    "parse_expires_in",
]

logger = logging.getLogger("flask_toucan")

#: Seconds assumed when Toucan's ``expiresIn`` cannot be understood. Short on
#: purpose: guessing too long would hand out dead tokens, too short only costs a mint.
FALLBACK_LIFETIME = 60

#: Upper bound on a user's JSON (attributes + permissions). Far above any real set of
#: RLS attributes, low enough that a loader bug cannot send megabytes to Toucan.
MAX_USER_JSON = 32 * 1024

JSONValue = Any


class InvalidToucanUser(ValueError):
    """A user description that cannot be sent to Toucan; the message says why.

    A programming error in the app's ``user_loader``, so a plain ``ValueError``
    (a 500 with a clear log line), never something a browser can cause.
    """


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
# Users


def _freeze_json(value: object, path: str) -> JSONValue:
    """Deep-copy ``value`` as plain JSON data, rejecting anything JSON can't carry."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidToucanUser(f"{path} is {value!r}, which JSON cannot carry")
        return value
    if isinstance(value, Mapping):
        out: dict[str, JSONValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidToucanUser(
                    f"{path} has a key of type {type(key).__name__}; keys must be strings"
                )
            out[key] = _freeze_json(item, f"{path}[{key!r}]")
        return MappingProxyType(out)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze_json(item, f"{path}[{i}]") for i, item in enumerate(value))
    raise InvalidToucanUser(
        f"{path} is of type {type(value).__name__}; use str, int, float, bool, None, list or dict"
    )


def _thaw(value: JSONValue) -> JSONValue:
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


@dataclass(frozen=True)
class ToucanUser:
    """The end user a token is minted for, with the attributes Row-Level Security uses."""

    distinct_id: str
    role: str = "explorer"
    attributes: Mapping[str, JSONValue] = field(default_factory=dict)
    permissions: Mapping[str, JSONValue] | None = None
    # The request body, as canonical JSON: computed once, used for the size
    # check, equality and the cache key.
    canonical: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.distinct_id, str) or not self.distinct_id.strip():
            raise InvalidToucanUser(
                "ToucanUser.distinct_id must be a non-empty string, got "
                + _describe(self.distinct_id)
            )
        if not isinstance(self.role, str) or not self.role.strip():
            raise InvalidToucanUser(
                f"ToucanUser.role must be a non-empty string, got {_describe(self.role)}"
            )
        if not isinstance(self.attributes, Mapping):
            raise InvalidToucanUser(
                "ToucanUser.attributes must be a dict (a JSON object), got "
                f"{type(self.attributes).__name__}"
            )
        object.__setattr__(self, "attributes", _freeze_json(self.attributes, "attributes"))
        if self.permissions is not None:
            if not isinstance(self.permissions, Mapping):
                raise InvalidToucanUser(
                    "ToucanUser.permissions must be a dict or None, got "
                    f"{type(self.permissions).__name__}"
                )
            object.__setattr__(self, "permissions", _freeze_json(self.permissions, "permissions"))
        canonical = _canonical_json(self.to_payload())
        if len(canonical) > MAX_USER_JSON:
            raise InvalidToucanUser(
                f"the user's attributes and permissions take {len(canonical)} characters of "
                f"JSON, more than {MAX_USER_JSON}; tokens should carry a few small values "
                "that Row-Level Security rules compare against"
            )
        object.__setattr__(self, "canonical", canonical)

    @classmethod
    def coerce(cls, value: object, default_role: str = "explorer") -> ToucanUser:
        """Turn what a ``user_loader`` returned into a :class:`ToucanUser`."""
        if isinstance(value, ToucanUser):
            return value
        if isinstance(value, Mapping):
            known = {"distinct_id", "distinctId", "role", "attributes", "permissions"}
            unknown = sorted(str(k) for k in value if k not in known)
            if unknown:
                raise InvalidToucanUser(
                    f"unknown user field(s) {', '.join(unknown)}; expected distinct_id "
                    "(or distinctId), role, attributes, permissions"
                )
            if "distinct_id" in value and "distinctId" in value:
                raise InvalidToucanUser("give distinct_id or distinctId, not both")
            distinct_id = value.get("distinct_id", value.get("distinctId"))
            if distinct_id is None:
                raise InvalidToucanUser("the user mapping has no distinct_id")
            role = value.get("role")
            attributes = value.get("attributes")
            return cls(
                distinct_id=distinct_id,
                role=default_role if role is None else role,
                attributes={} if attributes is None else attributes,
                permissions=value.get("permissions"),
            )
        raise InvalidToucanUser(
            "a Toucan user must be a ToucanUser, a mapping with its fields, or None; "
            f"got {type(value).__name__}"
        )

    def replace(self, **changes: Any) -> ToucanUser:
        """A copy with some fields changed, validated like a new one."""
        return dataclasses.replace(self, **changes)

    def to_payload(self) -> dict[str, Any]:
        """The JSON body of a token request for this user."""
        body: dict[str, Any] = {
            "user": {
                "distinctId": self.distinct_id,
                "role": self.role,
                "attributes": _thaw(self.attributes),
            }
        }
        if self.permissions is not None:
            body["permissions"] = _thaw(self.permissions)
        return body

    def __hash__(self) -> int:
        return hash(self.canonical)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ToucanUser):
            return NotImplemented
        return self.canonical == other.canonical


def _canonical_json(value: object) -> str:
    # sort_keys makes attribute order irrelevant; no unicode normalisation is
    # applied on purpose: Toucan compares raw strings, so "é" composed and
    # decomposed are different identities and must not share a token.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def key_fingerprint(api_key: str) -> str:
    """A short one-way tag of the API key, so tokens of different keys never mix."""
    return hashlib.sha256(b"flask_toucan:api-key:" + api_key.encode()).hexdigest()[:16]


def cache_key(prefix: str, base_url: str, api_key_fingerprint: str, user: ToucanUser) -> str:
    """The cache key of ``user``'s token: equal only for identical identities."""
    # Newlines cannot occur inside the parts (JSON escapes them; the URL and
    # fingerprint have none), so the joined string is unambiguous.
    material = "\n".join((base_url.rstrip("/"), api_key_fingerprint, user.canonical))
    return prefix + hashlib.sha256(material.encode()).hexdigest()


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

    def to_cache(self) -> dict[str, Any]:
        """Plain data for a cache backend, with absolute epoch times all hosts agree on."""
        return {
            "v": 1,
            "token": self.value,
            "expires_at": self.expires_at_epoch,
            "issued_at": self.issued_at.timestamp() if self.issued_at else None,
        }

    @classmethod
    def from_cache(cls, data: object) -> EmbedToken | None:
        if not isinstance(data, dict) or data.get("v") != 1:
            return None
        value, expires_at, issued_at = (
            data.get("token"),
            data.get("expires_at"),
            data.get("issued_at"),
        )
        if not isinstance(value, str) or not isinstance(expires_at, (int, float)):
            return None
        return cls(
            value=value,
            expires_at=datetime.fromtimestamp(expires_at, UTC),
            issued_at=(
                datetime.fromtimestamp(issued_at, UTC)
                if isinstance(issued_at, (int, float))
                else None
            ),
        )

    def __call__(self) -> EmbedToken:
        # In a decorated view's template ``toucan_token`` is this object while
        # elsewhere it is the global function; being callable lets templates
        # write ``toucan_token()`` in both places.
        return self

    def __repr__(self) -> str:
        return f"EmbedToken(value=<hidden>, expires_at={self.expires_at.isoformat()})"

    __str__ = __repr__
