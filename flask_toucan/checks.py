"""The checks behind ``read_settings``: one function per kind of ``TOUCAN_*`` value.

Each takes the app's config and a key, and returns the checked value or raises
``ToucanConfigError`` naming the key (with any secret in the value redacted).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .errors import ToucanConfigError
from .identity import ATTRIBUTE_TYPES

__all__ = ["CHECKS", "ApiKey", "Instance", "redact"]

REFRESH_STRATEGIES = ("attribute", "remount")
ON_ERROR = ("raise", "placeholder")


_SECRET_NAME = re.compile(r"(key|password|passwd|secret|token|credential)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@", re.I)


def redact(value: Any) -> Any:
    """``value`` for display: entries of a mapping named like a secret hidden, and
    passwords in URLs (``redis://:pw@``, ``rediss://user:pw@``) masked."""
    if isinstance(value, Instance):
        value = {
            "BASE_URL": value.base_url,
            "API_KEY": value.api_key,
            "TOKEN_PATH": value.token_path,
            "SERVER_URL": value.server_url,
            "SCRIPT_URL": value.script_url,
        }
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
        return _URL_PASSWORD.sub(r"\g<scheme>\g<user>:<hidden>@", value)
    return value


def _fail(key: str, problem: str, value: object) -> ToucanConfigError:
    shown = "<hidden>" if key == "TOUCAN_API_KEY" else repr(redact(value))
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return ToucanConfigError(f"{key} {problem} (got {shown})")


def _string(config: Mapping[str, Any], key: str, *, url: bool = False, path: bool = False) -> str:
    value = config.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _fail(key, "must be a non-empty string", value)
    if url and not value.startswith(("http://", "https://")):
        raise _fail(key, "must be an http:// or https:// URL", value)
    if path and not value.startswith("/"):
        raise _fail(key, "must start with '/'", value)
    return value


def _bool(config: Mapping[str, Any], key: str) -> bool:
    value = config.get(key)
    if not isinstance(value, bool):
        raise _fail(key, "must be True or False", value)
    return value


def _int(config: Mapping[str, Any], key: str, minimum: int) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(key, f"must be an integer >= {minimum}", value)
    return value


def _number(config: Mapping[str, Any], key: str, low: float, high: float | None = None) -> float:
    value = config.get(key)
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value <= high)
    ):
        return float(value)
    bounds = f"between {low} and {high}" if high is not None else f">= {low}"
    raise _fail(key, f"must be a number {bounds}", value)


def _choice(choices: tuple[str, ...]) -> Callable[[Mapping[str, Any], str], str]:
    def check(config: Mapping[str, Any], key: str) -> str:
        value = config.get(key)
        if value not in choices:
            raise _fail(key, f"must be one of {choices}", value)
        return str(value)

    return check


def _timeout(config: Mapping[str, Any], key: str) -> tuple[float, float]:
    value = config.get(key)
    parts = value if isinstance(value, (tuple, list)) else (value, value)
    if len(parts) != 2 or not all(
        isinstance(p, (int, float)) and not isinstance(p, bool) and p > 0 for p in parts
    ):
        raise _fail(key, "must be a positive number of seconds or a (connect, read) pair", value)
    return float(parts[0]), float(parts[1])


ApiKey = str | Callable[[], str]


def _api_key(config: Mapping[str, Any], key: str) -> ApiKey | None:
    api_key = config.get(key)
    if callable(api_key):
        return api_key  # type: ignore[no-any-return]  # a secret manager's getter, called later
    if _bool(config, "TOUCAN_PREVIEW"):
        return api_key if isinstance(api_key, str) and api_key else None
    if api_key is None or api_key == "":
        raise ToucanConfigError(
            "TOUCAN_API_KEY is not set: put your Toucan API key in app.config"
            "['TOUCAN_API_KEY'] or the TOUCAN_API_KEY environment variable, or "
            "set TOUCAN_PREVIEW = True to try flask_toucan without an account"
        )
    if not isinstance(api_key, str) or not api_key.strip() or "\n" in api_key:
        raise _fail(key, "must be a non-empty one-line string or a callable", api_key)
    return api_key


@dataclass(frozen=True)
class Instance:
    """One Toucan instance: the top-level keys (name None) or an entry of TOUCAN_INSTANCES."""

    name: str | None
    base_url: str
    api_key: ApiKey | None = field(repr=False)
    token_path: str
    server_url: str
    script_url: str


_INSTANCE_KEYS = {"BASE_URL", "API_KEY", "TOKEN_PATH", "SERVER_URL", "SCRIPT_URL"}


def _instances(config: Mapping[str, Any], key: str) -> dict[str, Instance]:
    value = config.get(key) or {}
    if not isinstance(value, Mapping):
        raise _fail(key, "must be a dict of name -> {'BASE_URL': ..., 'API_KEY': ...}", value)
    out: dict[str, Instance] = {}
    for name, entry in value.items():
        where = f"{key}[{name!r}]"
        if not isinstance(name, str) or not name.strip():
            raise _fail(key, "must have non-empty string names", name)
        if not isinstance(entry, Mapping) or not {"BASE_URL", "API_KEY"} <= set(entry):
            raise _fail(where, "must be a dict with BASE_URL and API_KEY", entry)
        unknown = set(entry) - _INSTANCE_KEYS
        if unknown:
            raise _fail(where, f"has unknown keys {sorted(unknown)}", sorted(unknown))
        sub = {
            "TOUCAN_PREVIEW": config.get("TOUCAN_PREVIEW"),
            "TOUCAN_ALLOW_HTTP": config.get("TOUCAN_ALLOW_HTTP"),
            "TOUCAN_BASE_URL": entry["BASE_URL"],
            "TOUCAN_API_KEY": entry["API_KEY"],
            "TOUCAN_TOKEN_PATH": entry.get("TOKEN_PATH", config.get("TOUCAN_TOKEN_PATH")),
        }
        try:
            base = _base_url(sub, "TOUCAN_BASE_URL")
            sub["TOUCAN_SERVER_URL"] = entry.get("SERVER_URL", base + "/api")
            sub["TOUCAN_SCRIPT_URL"] = entry.get("SCRIPT_URL", base + "/embed/embed.js")
            out[name] = Instance(
                name,
                base,
                _api_key(sub, "TOUCAN_API_KEY"),
                _string(sub, "TOUCAN_TOKEN_PATH", path=True),
                _string(sub, "TOUCAN_SERVER_URL", url=True),
                _string(sub, "TOUCAN_SCRIPT_URL"),
            )
        except ToucanConfigError as exc:
            message = str(exc).replace("TOUCAN_", f"{where}: ", 1)
            raise ToucanConfigError(message.replace("TOUCAN_API_KEY", "API_KEY")) from None
    return out


_TYPES = {t.__name__: t for t in ATTRIBUTE_TYPES}


def _required(config: Mapping[str, Any], key: str) -> dict[str, tuple[type, ...]]:
    value = config.get(key)
    if value is None:
        return {}
    if isinstance(value, str) or not isinstance(value, (Mapping, list, tuple, set, frozenset)):
        raise _fail(key, "must be a list of attribute names or a dict name -> type(s)", value)
    items = value.items() if isinstance(value, Mapping) else ((name, ()) for name in value)
    out: dict[str, tuple[type, ...]] = {}
    for name, types in items:
        kinds = types if isinstance(types, tuple) else (types,)
        if not isinstance(name, str) or not all(t in ATTRIBUTE_TYPES for t in kinds):
            raise _fail(key, "names must be strings and types among str, int, float, bool", value)
        out[name] = kinds
    return out


def _cache_config(config: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = config.get(key)
    if value is not None and not isinstance(value, Mapping):
        raise _fail(key, "must be a flask-caching config dict or None", value)
    return value


def _prefix(config: Mapping[str, Any], key: str) -> str:
    value = config.get(key)
    if not isinstance(value, str):
        raise _fail(key, "must be a string", value)
    return value


def _proxies(config: Mapping[str, Any], key: str) -> dict[str, str] | None:
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _fail(key, "must be None or a dict such as {'https': 'http://proxy:3128'}", value)
    return dict(value)


def _verify(config: Mapping[str, Any], key: str) -> bool | str:
    value = config.get(key)
    if value is True or value is False:
        return value
    if isinstance(value, str) and os.path.exists(value):
        return value
    raise _fail(key, "must be True, False or the path of an existing CA bundle", value)


_LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")


def _base_url(config: Mapping[str, Any], key: str) -> str:
    value = _string(config, key, url=True).rstrip("/")
    parsed = urlsplit(value)
    host = (parsed.hostname or "").lower()
    loopback = host in _LOOPBACK or host.startswith("127.")
    if parsed.scheme == "http" and not loopback and config.get("TOUCAN_ALLOW_HTTP") is not True:
        raise ToucanConfigError(
            f"{key} is a plain http:// URL ({value}): the API key would travel in clear. "
            "Use https://, or set TOUCAN_ALLOW_HTTP = True for a private network you trust"
        )
    return value


def _origins(config: Mapping[str, Any], key: str) -> frozenset[str]:
    value = config.get(key)
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise _fail(key, "must be a list of origins such as 'https://app.example.com'", value)
    origins = set()
    for item in items:
        parsed = urlsplit(item) if isinstance(item, str) else None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise _fail(key, "must hold origins such as 'https://app.example.com'", item)
        if parsed.path.strip("/") or parsed.query:
            raise _fail(key, "must hold origins (scheme://host[:port]) with no path", item)
        origins.add(f"{parsed.scheme}://{parsed.netloc}".lower())
    return frozenset(origins)


def _embed_pages(
    config: Mapping[str, Any], key: str
) -> bool | frozenset[str] | Callable[[str, str | None], bool]:
    value = config.get(key)
    if isinstance(value, bool) or callable(value):
        return value
    if isinstance(value, (list, tuple, set, frozenset)) and all(
        isinstance(item, str) and item for item in value
    ):
        return frozenset(value)
    raise _fail(key, "must be True, False, a list of ids or a callable (kind, item_id)", value)


def _frame_ancestors(config: Mapping[str, Any], key: str) -> str:
    value = _string(config, key)
    if any(c in value for c in ";,\r\n"):
        raise _fail(key, "must be frame-ancestors sources only, such as \"'self'\"", value)
    return value.strip()


Check = Callable[[Mapping[str, Any], str], Any]

CHECKS: dict[str, Check] = {
    "TOUCAN_API_KEY": _api_key,
    "TOUCAN_BASE_URL": _base_url,
    "TOUCAN_TOKEN_PATH": lambda c, k: _string(c, k, path=True),
    "TOUCAN_SERVER_URL": lambda c, k: _string(c, k, url=True),
    "TOUCAN_SCRIPT_URL": _string,
    "TOUCAN_DEFAULT_ROLE": _string,
    "TOUCAN_TIMEOUT": _timeout,
    "TOUCAN_MAX_RETRIES": lambda c, k: _int(c, k, 0),
    "TOUCAN_MIN_TOKEN_TTL": lambda c, k: _int(c, k, 0),
    "TOUCAN_MINT_DEADLINE": lambda c, k: None if c.get(k) is None else _number(c, k, 0.1, 300),
    "TOUCAN_MAX_TOKEN_LIFETIME": lambda c, k: _int(c, k, 1),
    "TOUCAN_PROXIES": _proxies,
    "TOUCAN_VERIFY": _verify,
    "TOUCAN_ALLOW_HTTP": _bool,
    "TOUCAN_CACHE_CONFIG": _cache_config,
    "TOUCAN_CACHE_KEY_PREFIX": _prefix,
    "TOUCAN_URL_PREFIX": lambda c, k: _string(c, k, path=True).rstrip("/") or "/",
    "TOUCAN_REFRESH": _bool,
    "TOUCAN_REFRESH_STRATEGY": _choice(REFRESH_STRATEGIES),
    "TOUCAN_PREVIEW": _bool,
    "TOUCAN_PREVIEW_TOKEN_LIFETIME": lambda c, k: _int(c, k, 1),
    "TOUCAN_REFRESH_AHEAD": lambda c, k: _number(c, k, 0, 1),
    "TOUCAN_LOCK_TIMEOUT": lambda c, k: _int(c, k, 1),
    "TOUCAN_LOCK_WAIT": lambda c, k: _number(c, k, 0),
    "TOUCAN_FRONT_CACHE_SIZE": lambda c, k: _int(c, k, 0),
    "TOUCAN_FRONT_CACHE_TTL": lambda c, k: _number(c, k, 0),
    "TOUCAN_TRUSTED_ORIGINS": _origins,
    "TOUCAN_INSTANCES": _instances,
    "TOUCAN_API_KEY_TTL": lambda c, k: _int(c, k, 0),
    "TOUCAN_REQUIRED_ATTRIBUTES": _required,
    "TOUCAN_PREFETCH_ON_LOGIN": _bool,
    "TOUCAN_EMBED_PAGES": _embed_pages,
    "TOUCAN_EMBED_LAYOUT": lambda c, k: None if c.get(k) is None else _string(c, k),
    "TOUCAN_EMBED_FRAME_ANCESTORS": _frame_ancestors,
    "TOUCAN_ON_ERROR": _choice(ON_ERROR),
}
