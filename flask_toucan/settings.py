"""Every ``TOUCAN_*`` config key: its default (stated here and nowhere else), its check, its doc.

``apply_defaults`` writes the defaults into ``app.config`` (so it shows what is in
force) and ``read_settings`` checks every key into a frozen :class:`Settings`.
A wrong value raises :class:`~flask_toucan.errors.ToucanConfigError` naming the key.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from .errors import ToucanConfigError
from .identity import ATTRIBUTE_TYPES, DEFAULT_ROLE
from .tokens import MAX_LIFETIME

__all__ = [
    "KEYS",
    "Instance",
    "Key",
    "Settings",
    "apply_defaults",
    "did_you_mean",
    "read_settings",
    "redact",
    "unknown_keys",
]

REFRESH_STRATEGIES = ("attribute", "remount")
ON_ERROR = ("raise", "placeholder")

#: Marks a default computed from other keys in ``apply_defaults``.
DERIVED = object()


@dataclass(frozen=True)
class Key:
    """One config key: its default and the one-line description the docs show."""

    name: str
    default: Any
    doc: str

    @property
    def field(self) -> str:
        return self.name.removeprefix("TOUCAN_").lower()


KEYS: tuple[Key, ...] = (
    Key("TOUCAN_API_KEY", DERIVED, "your Toucan API key (default: env TOUCAN_API_KEY); "
        "required unless preview mode"),
    Key("TOUCAN_BASE_URL", "https://toucanai.cloud", "SaaS or your self-hosted instance"),
    Key("TOUCAN_TOKEN_PATH", "/embed/generate-token",
        "token endpoint path (older docs: /api/generate-token)"),
    Key("TOUCAN_SERVER_URL", DERIVED, "the components' server-url (default: base + /api)"),
    Key("TOUCAN_SCRIPT_URL", DERIVED,
        "the web-components module (default: base + /embed/embed.js)"),
    Key("TOUCAN_DEFAULT_ROLE", DEFAULT_ROLE, "role when the user loader gives none"),
    Key("TOUCAN_TIMEOUT", (3.05, 10), "connect, read seconds (one number sets both)"),
    Key("TOUCAN_MAX_RETRIES", 2, "retries on 429/502/503/504 and connection errors"),
    Key("TOUCAN_MIN_TOKEN_TTL", 300, "the serving margin: a cached token is handed out while it "
        "has more than min(this, a quarter of its lifetime) seconds left"),
    Key("TOUCAN_MINT_DEADLINE", None, "total seconds one mint may take: connect, TLS, headers, "
        "body, retries, waiting on another's mint (default: from the timeouts, at most 30)"),
    Key("TOUCAN_MAX_TOKEN_LIFETIME", MAX_LIFETIME, "lifetimes Toucan announces above this "
        "are capped, with a warning"),
    Key("TOUCAN_PROXIES", None, "proxies for the token request, e.g. {'https': "
        "'http://proxy:3128'} (default: HTTPS_PROXY/HTTP_PROXY/NO_PROXY; never .netrc)"),
    Key("TOUCAN_VERIFY", True, "TLS verification: True, or a CA bundle path for a private CA "
        "(REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE are honoured)"),
    Key("TOUCAN_ALLOW_HTTP", False, "allow a plain http:// TOUCAN_BASE_URL that is not "
        "loopback (the API key would travel in clear)"),
    Key("TOUCAN_CACHE_CONFIG", None, "a flask-caching config dict (default: in-process "
        "SimpleCache); Toucan(app, cache=...) wins"),
    Key("TOUCAN_CACHE_KEY_PREFIX", "toucan:", "namespace of our keys in a shared cache"),
    Key("TOUCAN_URL_PREFIX", "/toucan", "where the blueprint (scripts, refresh) is mounted"),
    Key("TOUCAN_REFRESH", True, "include the token refresh controller with toucan_script()"),
    Key("TOUCAN_REFRESH_STRATEGY", "attribute",
        "how the controller hands a component a new token: attribute or remount"),
    Key("TOUCAN_PREVIEW", False, "offline preview: tokens minted in process, stand-in "
        "components, no Toucan account needed"),
    Key("TOUCAN_PREVIEW_TOKEN_LIFETIME", 3600, "seconds of life of preview tokens"),
    Key("TOUCAN_REFRESH_AHEAD", 0.5, "share of a token's life after which it is renewed in "
        "the background (0 = off)"),
    Key("TOUCAN_LOCK_TIMEOUT", 10, "seconds a mint lease lives in the shared cache"),
    Key("TOUCAN_LOCK_WAIT", 5.0, "seconds a request waits for another one's mint of the "
        "same token before minting itself"),
    Key("TOUCAN_FRONT_CACHE_SIZE", 1000,
        "entries of the in-process front cache over a shared backend"),
    Key("TOUCAN_FRONT_CACHE_TTL", 30, "seconds a front-cache entry may live (0 = off)"),
    Key("TOUCAN_TRUSTED_ORIGINS", (), "extra origins (https://host[:port]) the refresh endpoint "
        "accepts, e.g. a sibling subdomain"),
    Key("TOUCAN_INSTANCES", {}, "name -> {'BASE_URL', 'API_KEY', optional 'TOKEN_PATH', "
        "'SERVER_URL', 'SCRIPT_URL'}; ToucanUser(instance=name) selects one"),
    Key("TOUCAN_API_KEY_TTL", 300, "seconds a key returned by a callable TOUCAN_API_KEY "
        "is reused (it is called again at once after a 401/403)"),
    Key("TOUCAN_REQUIRED_ATTRIBUTES", None, "attribute names, or a dict name -> type(s), "
        "every user must carry: no token otherwise (fail closed)"),
    Key("TOUCAN_PREFETCH_ON_LOGIN", False, "mint in the background on Flask-Login's "
        "user_logged_in, so the first analytics view finds the token ready"),
    Key("TOUCAN_EMBED_PAGES", False, "ready-made embed pages: True (every id), a list of "
        "dashboard/chart ids, or a callable (kind, item_id) -> bool"),
    Key("TOUCAN_EMBED_LAYOUT", None, "the app's base template for embed pages (blocks head "
        "and content); default: a minimal full-viewport layout"),
    Key("TOUCAN_EMBED_FRAME_ANCESTORS", "'self'", "frame-ancestors sent (merged into any "
        "Content-Security-Policy) on embed pages"),
    Key("TOUCAN_ON_ERROR", "raise", "raise: a failed mint is a 502/503 page; placeholder: "
        "the page renders, each component becomes toucan/unavailable.html"),
)  # fmt: skip

DEFAULTS: dict[str, Any] = {k.name: k.default for k in KEYS if k.default is not DERIVED}


@dataclass(frozen=True)
class Settings:
    """The checked config of one app, frozen at ``init_app``. Fields: the keys, lower case."""

    api_key: ApiKey | None
    base_url: str
    token_path: str
    server_url: str
    script_url: str
    default_role: str
    timeout: tuple[float, float]
    max_retries: int
    min_token_ttl: int
    mint_deadline: float | None
    max_token_lifetime: int
    proxies: dict[str, str] | None
    verify: bool | str
    allow_http: bool
    cache_config: Mapping[str, Any] | None
    cache_key_prefix: str
    url_prefix: str
    refresh: bool
    refresh_strategy: str
    preview: bool
    preview_token_lifetime: int
    refresh_ahead: float
    lock_timeout: int
    lock_wait: float
    front_cache_size: int
    front_cache_ttl: float
    trusted_origins: frozenset[str]
    instances: dict[str, Instance]
    api_key_ttl: int
    required_attributes: dict[str, tuple[type, ...]]
    prefetch_on_login: bool
    embed_pages: bool | frozenset[str] | Callable[[str, str | None], bool]
    embed_layout: str | None
    embed_frame_ancestors: str
    on_error: str

    @property
    def default_instance(self) -> Instance:
        """The top-level TOUCAN_BASE_URL / TOUCAN_API_KEY / ... as an instance."""
        return Instance(
            None,
            self.base_url,
            self.api_key,
            self.token_path,
            self.server_url,
            self.script_url,
        )

    def as_config(self) -> dict[str, Any]:
        """``{"TOUCAN_...": value}`` with secrets redacted, for display."""
        shown = {"TOUCAN_" + f.name.upper(): redact(getattr(self, f.name)) for f in fields(self)}
        shown["TOUCAN_API_KEY"] = "<set>" if self.api_key else "<not set>"
        return shown

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name.removeprefix('TOUCAN_').lower()}={value!r}"
            for name, value in self.as_config().items()
        )
        return f"Settings({shown})"


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


def apply_defaults(config: dict[str, Any]) -> None:
    """``setdefault`` every key, so ``app.config`` shows what is in force."""
    for key, value in DEFAULTS.items():
        config.setdefault(key, value)
    config.setdefault("TOUCAN_API_KEY", os.environ.get("TOUCAN_API_KEY") or None)
    base = config["TOUCAN_BASE_URL"]
    if isinstance(base, str):
        base = base.rstrip("/")
        config.setdefault("TOUCAN_SERVER_URL", base + "/api")
        config.setdefault("TOUCAN_SCRIPT_URL", base + "/embed/embed.js")


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

_CHECKS: dict[str, Check] = {
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


def unknown_keys(config: Mapping[str, Any]) -> dict[str, str | None]:
    """``TOUCAN_*`` keys flask_toucan does not know, each with the closest known one."""
    known = [k.name for k in KEYS]
    return {
        key: next(iter(difflib.get_close_matches(key, known, n=1, cutoff=0.75)), None)
        for key in config
        if isinstance(key, str) and key.startswith("TOUCAN_") and key not in known
    }


def did_you_mean(config: Mapping[str, Any]) -> str:
    """`` (did you mean TOUCAN_X instead of TOUCAN_Y?)`` for each likely typo, or ``""``."""
    typos = [f"{good} instead of {bad}" for bad, good in unknown_keys(config).items() if good]
    return f" (did you mean {'; '.join(typos)}?)" if typos else ""


def read_settings(config: Mapping[str, Any]) -> Settings:
    """Check every ``TOUCAN_*`` key; a wrong one raises ToucanConfigError naming it."""
    try:
        # TOUCAN_PREVIEW first: whether the API key is required depends on it.
        _bool(config, "TOUCAN_PREVIEW")
        return Settings(**{key.field: _CHECKS[key.name](config, key.name) for key in KEYS})
    except ToucanConfigError as exc:
        # A typo (TOUCAN_PREVEIW) often causes the error reported (no API key): say so.
        hint = did_you_mean(config)
        if not hint:
            raise
        raise ToucanConfigError(str(exc) + hint) from None
