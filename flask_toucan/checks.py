"""The checks behind ``read_settings``: one per kind of ``TOUCAN_*`` value.

A check takes the app's config and a key, and returns the checked value or raises
``ToucanConfigError`` naming the key (with any secret in the value redacted).
``settings.KEYS`` says which check each key gets; the Toucan instance checks
(base URL, API key, TOUCAN_INSTANCES) are in :mod:`flask_toucan.instances`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from .errors import ToucanConfigError
from .identity import ATTRIBUTE_TYPES

__all__ = ["Check", "fail", "redact", "redact_text", "shape"]

Check = Callable[[Mapping[str, Any], str], Any]

_SECRET_NAME = re.compile(r"(key|password|passwd|secret|token|credential)", re.IGNORECASE)
# A URL's userinfo: everything between "scheme://" and the last "@" of the authority
# (a password may itself hold "@" or ":").
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/?#\s]*@", re.IGNORECASE)
# Query parameters that carry a secret (redis-py honours ?password=).
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;](?:[a-z0-9_.-]*(?:password|passwd|pass|pwd|secret|token|key|auth)"
    r"[a-z0-9_.-]*)=)[^&;#\s]*",
    re.IGNORECASE,
)


def redact(value: Any) -> Any:
    """``value`` for display: entries of a mapping named like a secret hidden, and
    passwords in URLs (``redis://:pw@``, ``rediss://user:pw@``) masked. An object
    with an ``as_config()`` method is shown as the mapping it returns."""
    as_config = getattr(type(value), "as_config", None)  # the class's: no proxy magic
    if callable(as_config):
        value = as_config(value)
    if callable(value) and not isinstance(value, type):
        return "<callable>"
    if isinstance(value, Mapping):
        return {
            k: "<hidden>" if _SECRET_NAME.search(str(k)) and v else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_text(text: str) -> str:
    """``text`` with every URL credential removed: userinfo (``user:pw@``, a password
    holding ``@`` included) and secret-named query parameters (``?password=``,
    ``&token=``...). The one function every message, log line and command output
    that may show a configured URL goes through."""
    if "://" in text:
        text = _URL_USERINFO.sub(r"\g<scheme><hidden>@", text)
    if "=" in text:
        text = _SECRET_PARAM.sub(r"\g<name><hidden>", text)
    return text


def shape(value: object) -> str:
    """What ``value`` is, never what it holds: for errors about a value of the wrong
    shape, which may be a secret put in the wrong place."""
    if isinstance(value, Mapping):
        names = sorted(str(k) for k in value)[:8]
        return f"a {type(value).__name__} with keys {names}"
    if isinstance(value, (list, tuple, set, frozenset)):
        return f"a {type(value).__name__} of {len(value)}"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    return f"a {type(value).__name__}"


def fail(key: str, problem: str, value: object, *, by_shape: bool = False) -> ToucanConfigError:
    """The error for a wrong ``key``: what it must be, and what it is: a scalar
    (redacted, short), or with ``by_shape`` (and for any container) only its shape."""
    if key == "TOUCAN_API_KEY" or by_shape or not isinstance(value, (str, int, float, type(None))):
        shown = shape(value)
    else:
        shown = repr(redact(value))
        if len(shown) > 60:
            shown = shown[:57] + "..."
    return ToucanConfigError(f"{key} {problem} (got {shown})")


def string(config: Mapping[str, Any], key: str, *, url: bool = False, path: bool = False) -> str:
    value = config.get(key)
    if not isinstance(value, str) or not value.strip():
        raise fail(key, "must be a non-empty string", value)
    if url and not value.startswith(("http://", "https://")):
        raise fail(key, "must be an http:// or https:// URL", value)
    if path and not value.startswith("/"):
        raise fail(key, "must start with '/'", value)
    return value


def url(config: Mapping[str, Any], key: str) -> str:
    return string(config, key, url=True)


def public_string(config: Mapping[str, Any], key: str) -> str:
    """A URL (or path) sent to browsers or to a Bearer-authenticated endpoint: it must
    not carry credentials (they would reach every visitor)."""
    value = string(config, key)
    if "@" in urlsplit(value).netloc:
        raise ToucanConfigError(
            f"{key} must not carry credentials (user:password@): it is sent to every "
            f"browser; got {redact_text(value)}"
        )
    return value


def public_url(config: Mapping[str, Any], key: str) -> str:
    url(config, key)
    return public_string(config, key)


def path(config: Mapping[str, Any], key: str) -> str:
    return string(config, key, path=True)


def url_prefix(config: Mapping[str, Any], key: str) -> str:
    return path(config, key).rstrip("/") or "/"


def boolean(config: Mapping[str, Any], key: str) -> bool:
    value = config.get(key)
    if not isinstance(value, bool):
        raise fail(key, "must be True or False", value)
    return value


def integer(minimum: int) -> Check:
    def check(config: Mapping[str, Any], key: str) -> int:
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise fail(key, f"must be an integer >= {minimum}", value)
        return value

    return check


def number(low: float, high: float | None = None) -> Check:
    def check(config: Mapping[str, Any], key: str) -> float:
        value = config.get(key)
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and value >= low
            and (high is None or value <= high)
        ):
            return float(value)
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise fail(key, f"must be a number {bounds}", value)

    return check


def choice(*choices: str) -> Check:
    def check(config: Mapping[str, Any], key: str) -> str:
        value = config.get(key)
        if value not in choices:
            raise fail(key, f"must be one of {choices}", value)
        return str(value)

    return check


def optional(inner: Check) -> Check:
    """``inner``, with None allowed (and kept)."""

    def check(config: Mapping[str, Any], key: str) -> Any:
        return None if config.get(key) is None else inner(config, key)

    return check


def timeout(config: Mapping[str, Any], key: str) -> tuple[float, float]:
    value = config.get(key)
    parts = value if isinstance(value, (tuple, list)) else (value, value)
    if len(parts) != 2 or not all(
        isinstance(p, (int, float)) and not isinstance(p, bool) and p > 0 for p in parts
    ):
        raise fail(key, "must be a positive number of seconds or a (connect, read) pair", value)
    return float(parts[0]), float(parts[1])


def required_attributes(config: Mapping[str, Any], key: str) -> dict[str, tuple[type, ...]]:
    value = config.get(key)
    if value is None:
        return {}
    if isinstance(value, str) or not isinstance(value, (Mapping, list, tuple, set, frozenset)):
        raise fail(key, "must be a list of attribute names or a dict name -> type(s)", value)
    items = value.items() if isinstance(value, Mapping) else ((name, ()) for name in value)
    out: dict[str, tuple[type, ...]] = {}
    for name, types in items:
        kinds = types if isinstance(types, tuple) else (types,)
        if not isinstance(name, str) or not all(t in ATTRIBUTE_TYPES for t in kinds):
            raise fail(key, "names must be strings and types among str, int, float, bool", value)
        out[name] = kinds
    return out


def cache_config(config: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = config.get(key)
    if value is not None and not isinstance(value, Mapping):
        raise fail(key, "must be a dict in Flask-Caching's key names, or None", value)
    return value


def prefix(config: Mapping[str, Any], key: str) -> str:
    """TOUCAN_CACHE_KEY_PREFIX: our namespace in a shared cache. ``flask toucan cache
    clear`` deletes what is under it, so it must name something of ours alone: not
    empty, and no glob character that would widen it to other applications' keys."""
    value = config.get(key)
    if not isinstance(value, str) or not value.strip():
        raise fail(key, "must be a non-empty string such as 'toucan:'", value)
    if any(ch in value for ch in "*?[]\\") or any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise fail(key, "must not hold glob characters (* ? [ ] \\), spaces or controls", value)
    return value


def proxies(config: Mapping[str, Any], key: str) -> dict[str, str] | None:
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise fail(key, "must be None or a dict such as {'https': 'http://proxy:3128'}", value)
    return dict(value)


def verify(config: Mapping[str, Any], key: str) -> bool | str:
    value = config.get(key)
    if value is True or value is False:
        return value
    if isinstance(value, str) and os.path.exists(value):
        return value
    raise fail(key, "must be True, False or the path of an existing CA bundle", value)


def origins(config: Mapping[str, Any], key: str) -> frozenset[str]:
    value = config.get(key)
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise fail(key, "must be a list of origins such as 'https://app.example.com'", value)
    found = set()
    for item in items:
        parsed = urlsplit(item) if isinstance(item, str) else None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise fail(key, "must hold origins such as 'https://app.example.com'", item)
        if parsed.path.strip("/") or parsed.query:
            raise fail(key, "must hold origins (scheme://host[:port]) with no path", item)
        found.add(f"{parsed.scheme}://{parsed.netloc}".lower())
    return frozenset(found)


def embed_pages(
    config: Mapping[str, Any], key: str
) -> bool | frozenset[str] | Callable[[str, str | None], bool]:
    value = config.get(key)
    if isinstance(value, bool) or callable(value):
        return value
    if isinstance(value, (list, tuple, set, frozenset)) and all(
        isinstance(item, str) and item for item in value
    ):
        return frozenset(value)
    raise fail(key, "must be True, False, a list of ids or a callable (kind, item_id)", value)


def frame_ancestors(config: Mapping[str, Any], key: str) -> str:
    value = string(config, key)
    if any(c in value for c in ";,\r\n"):
        raise fail(key, "must be frame-ancestors sources only, such as \"'self'\"", value)
    return value.strip()
