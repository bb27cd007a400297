"""Who a token is for: ``ToucanUser``, its validation, canonical form and cache key.

Nothing here knows about Flask or HTTP, so the rule that decides which users may
share a token (the cache key) can be tested on its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .errors import InvalidToucanUser, describe

__all__ = [
    "MAX_DEPTH",
    "MAX_USER_JSON",
    "ToucanUser",
    "cache_key",
    "check_required",
    "identity_digest",
    "key_fingerprint",
]

#: Upper bound on a user's JSON (attributes + permissions). Far above any real set of
#: RLS attributes, low enough that a loader bug cannot send megabytes to Toucan.
MAX_USER_JSON = 32 * 1024

#: How deep attributes and permissions may nest. RLS attributes are flat values; this
#: leaves room for lists and small objects while keeping every walk over them shallow.
MAX_DEPTH = 16

#: The default of TOUCAN_DEFAULT_ROLE. A ToucanUser made without a role has role None
#: ("not given"): the token service fills in the app's TOUCAN_DEFAULT_ROLE.
DEFAULT_ROLE = "explorer"

JSONValue = Any


def _text(value: str, path: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate: not text JSON or HTTP can carry.
        raise InvalidToucanUser(
            f"{path} holds a lone surrogate (invalid Unicode); decode your data properly"
        ) from None
    return value


def _freeze_json(value: object, path: str, depth: int = 0) -> JSONValue:
    """Deep-copy ``value`` as plain JSON data, rejecting anything JSON can't carry."""
    if isinstance(value, str):
        return _text(value, path)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidToucanUser(f"{path} is {value!r}, which JSON cannot carry")
        return value
    if depth >= MAX_DEPTH:
        raise InvalidToucanUser(
            f"{path} is nested more than {MAX_DEPTH} levels deep; RLS attributes are flat values"
        )
    if isinstance(value, Mapping):
        out: dict[str, JSONValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidToucanUser(
                    f"{path} has a key of type {type(key).__name__}; keys must be strings"
                )
            _text(key, f"a key of {path}")
            out[key] = _freeze_json(item, f"{path}[{key!r}]", depth + 1)
        return MappingProxyType(out)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze_json(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
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
    #: None: not given, TOUCAN_DEFAULT_ROLE applies (filled in by the token service).
    role: str | None = None
    attributes: Mapping[str, JSONValue] = field(default_factory=dict)
    permissions: Mapping[str, JSONValue] | None = None
    #: A name in TOUCAN_INSTANCES (None: the top-level TOUCAN_BASE_URL / TOUCAN_API_KEY).
    instance: str | None = None
    # The request body, as canonical JSON: computed once, used for the size
    # check, equality and the cache key.
    canonical: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.distinct_id, str) or not self.distinct_id.strip():
            raise InvalidToucanUser(
                "ToucanUser.distinct_id must be a non-empty string, got "
                + describe(self.distinct_id)
            )
        _text(self.distinct_id, "ToucanUser.distinct_id")
        if self.role is not None:
            if not isinstance(self.role, str) or not self.role.strip():
                raise InvalidToucanUser(
                    "ToucanUser.role must be a non-empty string or None, got " + describe(self.role)
                )
            _text(self.role, "ToucanUser.role")
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
        body: dict[str, Any] = {
            "user": {
                "distinctId": self.distinct_id,
                "role": self.role,
                "attributes": self.attributes,
            }
        }
        if self.permissions is not None:
            body["permissions"] = self.permissions
        if self.instance is not None:
            if not isinstance(self.instance, str) or not self.instance.strip():
                raise InvalidToucanUser(
                    "ToucanUser.instance must be a name in TOUCAN_INSTANCES or None, got "
                    + describe(self.instance)
                )
            _text(self.instance, "ToucanUser.instance")
            # Part of the identity (the cache key), not of the request body.
            body["instance"] = self.instance
        canonical = _canonical_json(body)
        if len(canonical) > MAX_USER_JSON:
            raise InvalidToucanUser(
                f"the user's attributes and permissions take {len(canonical)} characters of "
                f"JSON, more than {MAX_USER_JSON}; tokens should carry a few small values "
                "that Row-Level Security rules compare against"
            )
        object.__setattr__(self, "canonical", canonical)

    @classmethod
    def coerce(cls, value: object, default_role: str | None = None) -> ToucanUser:
        """Turn what a ``user_loader`` returned into a :class:`ToucanUser`.

        A role not given stays None ("not given": the token service fills in
        TOUCAN_DEFAULT_ROLE), unless ``default_role`` is passed here.
        """
        if isinstance(value, ToucanUser):
            return value if default_role is None else value.with_default_role(default_role)
        if isinstance(value, Mapping):
            known = {"distinct_id", "distinctId", "role", "attributes", "permissions", "instance"}
            unknown = sorted(str(k) for k in value if k not in known)
            if unknown:
                raise InvalidToucanUser(
                    f"unknown user field(s) {', '.join(unknown)}; expected distinct_id "
                    "(or distinctId), role, attributes, permissions, instance"
                )
            if "distinct_id" in value and "distinctId" in value:
                raise InvalidToucanUser("give distinct_id or distinctId, not both")
            distinct_id = value.get("distinct_id", value.get("distinctId"))
            if distinct_id is None:
                raise InvalidToucanUser("the user mapping has no distinct_id")
            attributes = value.get("attributes")
            role = value.get("role")
            return cls(
                distinct_id=distinct_id,
                role=default_role if role is None else role,
                attributes={} if attributes is None else attributes,
                permissions=value.get("permissions"),
                instance=value.get("instance"),
            )
        raise InvalidToucanUser(
            "a Toucan user must be a ToucanUser, a mapping with its fields, or None; "
            f"got {type(value).__name__}. Build one from your own user object, e.g. "
            "ToucanUser(distinct_id=str(current_user.id), attributes={'tenant_id': "
            "current_user.tenant_id}) (not current_user itself)"
        )

    def replace(self, **changes: Any) -> ToucanUser:
        """A copy with some fields changed, validated like a new one."""
        return dataclasses.replace(self, **changes)

    def with_default_role(self, role: str) -> ToucanUser:
        """This user with ``role`` if none was given (TOUCAN_DEFAULT_ROLE), else itself.

        Runs on every page view of users without a role, so it skips what ``replace``
        would redo for nothing: the attributes are already checked and frozen, and the
        canonical form ends with the role by construction (sorted keys: ``user`` is the
        last top-level key, ``role`` its last member), so only that end changes.
        Benchmarked: about a third of a warm view's token handling with ``replace``.
        """
        if self.role is not None:
            return self
        if not isinstance(role, str) or not role.strip():
            raise InvalidToucanUser(f"the default role must be a non-empty string, got {role!r}")
        _text(role, "TOUCAN_DEFAULT_ROLE")
        assert self.canonical.endswith('"role":' + _NO_ROLE_END)
        canonical = self.canonical[: -len(_NO_ROLE_END)] + _canonical_json(role) + "}}"
        clone = object.__new__(ToucanUser)
        for name in ("distinct_id", "attributes", "permissions", "instance"):
            object.__setattr__(clone, name, getattr(self, name))
        object.__setattr__(clone, "role", role)
        object.__setattr__(clone, "canonical", canonical)
        return clone

    def to_payload(self) -> dict[str, Any]:
        """The JSON body of a token request for this user (the instance is not in it).

        A role not given is sent as DEFAULT_ROLE; the token service fills in the app's
        TOUCAN_DEFAULT_ROLE before it gets here.
        """
        body: dict[str, Any] = {
            "user": {
                "distinctId": self.distinct_id,
                "role": DEFAULT_ROLE if self.role is None else self.role,
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


_NO_ROLE_END = "null}}"  # the end of a canonical form whose role is None


def _canonical_json(value: object) -> str:
    # sort_keys makes attribute order irrelevant; no unicode normalisation is
    # applied on purpose: Toucan compares raw strings, so "é" composed and
    # decomposed are different identities and must not share a token.
    # default=dict reads the frozen mappings directly (tuples are JSON arrays already).
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=dict
    )


def key_fingerprint(api_key: str) -> str:
    """A short one-way tag of the API key, so tokens of different keys never mix."""
    return hashlib.sha256(b"flask_toucan:api-key:" + api_key.encode()).hexdigest()[:16]


def identity_digest(user: ToucanUser, key: bytes) -> str:
    """A short keyed tag of the user's whole identity (for references and signals).

    Keyed (HMAC), so it cannot be matched offline against guessed identities: a
    server-side attribute the user never sees stays unknown to whoever reads a page.
    """
    return hmac.new(key, user.canonical.encode(), hashlib.sha256).hexdigest()[:32]


def derive_key(secret: str | bytes, purpose: str) -> bytes:
    """A key for ``purpose`` derived from a secret (the app's ``SECRET_KEY``)."""
    material = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(material, b"flask_toucan:" + purpose.encode(), hashlib.sha256).digest()


def cache_key(prefix: str, base_url: str, api_key_fingerprint: str, user: ToucanUser) -> str:
    """The cache key of ``user``'s token: equal only for identical identities."""
    # Newlines cannot occur inside the parts (JSON escapes them; the URL and
    # fingerprint have none), so the joined string is unambiguous.
    material = "\n".join((base_url.rstrip("/"), api_key_fingerprint, user.canonical))
    # 64 hex digits: the user's distinct-id tag, so every token of one user can be found
    # (`flask toucan cache clear --user`), then 192 bits of the whole identity's hash.
    return (
        prefix + distinct_tag(user.distinct_id) + hashlib.sha256(material.encode()).hexdigest()[:48]
    )


def distinct_tag(distinct_id: str) -> str:
    """The first 16 hex digits of every cache key of ``distinct_id``'s tokens."""
    return hashlib.sha256(b"flask_toucan:distinct-id:" + distinct_id.encode()).hexdigest()[:16]


#: The types TOUCAN_REQUIRED_ATTRIBUTES may name.
ATTRIBUTE_TYPES: tuple[type, ...] = (str, int, float, bool)


def check_required(user: ToucanUser, required: Mapping[str, tuple[type, ...]]) -> None:
    """Fail closed: InvalidToucanUser unless ``user`` carries every required attribute.

    ``required`` maps a name to the accepted types (empty: any value but None). A
    bool is not an int here, and an int is not a float: RLS rules compare exactly.
    """
    for name, types in required.items():
        value = user.attributes.get(name)
        if name not in user.attributes or value is None:
            raise InvalidToucanUser(
                f"user {user.distinct_id!r} has no {name!r} attribute"
                + (" (or it is None)" if name in user.attributes else "")
                + ", which TOUCAN_REQUIRED_ATTRIBUTES requires"
                + (f" ({_type_names(types)})" if types else "")
            )
        if types and type(value) not in types:
            raise InvalidToucanUser(
                f"user {user.distinct_id!r} has a {name!r} attribute of type "
                f"{type(value).__name__}; TOUCAN_REQUIRED_ATTRIBUTES requires "
                f"{_type_names(types)}"
            )


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)
