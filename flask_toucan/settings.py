"""Every ``TOUCAN_*`` config key: its default (stated here and nowhere else), its check, its doc.

``apply_defaults`` writes the defaults into ``app.config`` (so it shows what is in
force) and ``read_settings`` checks every key into a frozen :class:`Settings`.
A wrong value raises :class:`~flask_toucan.errors.ToucanConfigError` naming the key.
"""

from __future__ import annotations

import difflib
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from . import checks, instances
from .checks import Check, redact
from .errors import ToucanConfigError
from .identity import DEFAULT_ROLE
from .instances import Instance, KeySource
from .tokens import MAX_LIFETIME

__all__ = [
    "KEYS",
    "Key",
    "Settings",
    "apply_defaults",
    "bundle_context",
    "ca_bundle",
    "did_you_mean",
    "read_settings",
    "removed_keys",
    "unknown_keys",
]

#: Marks a default computed from other keys in ``apply_defaults``.
DERIVED = object()


@dataclass(frozen=True)
class Key:
    """One config key: its default, its check, and the one-line description the docs show."""

    name: str
    default: Any
    check: Check
    doc: str

    @property
    def field(self) -> str:
        return self.name.removeprefix("TOUCAN_").lower()


KEYS: tuple[Key, ...] = (
    Key("TOUCAN_API_KEY", DERIVED, instances.api_key,
        "your Toucan API key (default: env TOUCAN_API_KEY); "
        "required unless preview mode"),
    Key("TOUCAN_BASE_URL", "https://toucanai.cloud", instances.base_url,
        "SaaS or your self-hosted instance (default: env TOUCAN_BASE_URL, else Toucan's SaaS)"),
    Key("TOUCAN_TOKEN_PATH", "/embed/generate-token", checks.path,
        "token endpoint path (older docs: /api/generate-token)"),
    Key("TOUCAN_SERVER_URL", DERIVED, checks.public_url,
        "the components' server-url (default: base + /api)"),
    Key("TOUCAN_SCRIPT_URL", DERIVED, checks.public_string,
        "the web-components module (default: base + /embed/embed.js)"),
    Key("TOUCAN_MCP_URL", DERIVED, checks.public_url,
        "Toucan's MCP endpoint, for ask() and mcp_session() (default: base + /api/mcp)"),
    Key("TOUCAN_MCP_DEADLINE", 60, checks.number(1, 600),
        "total seconds one ask() may take: connecting, the session, the tool's answer"),
    Key("TOUCAN_DEFAULT_ROLE", DEFAULT_ROLE, checks.string,
        "role when the user loader gives none"),
    Key("TOUCAN_TIMEOUT", (3.05, 10), checks.timeout,
        "connect, read seconds (one number sets both)"),
    Key("TOUCAN_MAX_RETRIES", 2, checks.integer(0),
        "retries on 429/502/503/504 and connection errors"),
    Key("TOUCAN_MIN_TOKEN_TTL", 300, checks.integer(0),
        "the serving margin: a cached token is handed out while it "
        "has more than min(this, a quarter of its lifetime) seconds left"),
    Key("TOUCAN_MINT_DEADLINE", None, checks.optional(checks.number(0.1, 300)),
        "total seconds one mint may take: connect, TLS, headers, "
        "body, retries, waiting on another's mint (default: from the timeouts, at most 30)"),
    Key("TOUCAN_MAX_TOKEN_LIFETIME", MAX_LIFETIME, checks.integer(1),
        "lifetimes Toucan announces above this "
        "are capped, with a warning"),
    Key("TOUCAN_PROXIES", None, checks.proxies,
        "proxies for the token request, e.g. {'https': "
        "'http://proxy:3128'} (default: HTTPS_PROXY/HTTP_PROXY/NO_PROXY; never .netrc)"),
    Key("TOUCAN_VERIFY", True, checks.verify,
        "TLS verification: True, or a CA bundle path for a private CA "
        "(REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE are honoured)"),
    Key("TOUCAN_ALLOW_HTTP", False, checks.boolean,
        "allow a plain http:// TOUCAN_BASE_URL that is not "
        "loopback (the API key would travel in clear)"),
    Key("TOUCAN_CACHE_CONFIG", None, checks.cache_config,
        "flask_toucan's own store, in Flask-Caching's key names, read by flask_toucan "
        "(default: in process); Toucan(app, cache=...) wins"),
    Key("TOUCAN_CACHE_KEY_PREFIX", "toucan:", checks.prefix,
        "namespace of our keys in a shared cache"),
    Key("TOUCAN_URL_PREFIX", "/toucan", checks.url_prefix,
        "where the blueprint (scripts, refresh) is mounted"),
    Key("TOUCAN_REFRESH", True, checks.boolean,
        "include the token refresh controller with toucan_script()"),
    Key("TOUCAN_REFRESH_STRATEGY", "attribute", checks.choice("attribute", "remount"),
        "how the controller hands a component a new token: attribute or remount"),
    Key("TOUCAN_PREVIEW", False, checks.boolean,
        "offline preview: tokens minted in process, stand-in "
        "components, no Toucan account needed"),
    Key("TOUCAN_TRUSTED_ORIGINS", (), checks.origins,
        "extra origins (https://host[:port]) the refresh endpoint "
        "accepts, e.g. a sibling subdomain"),
    Key("TOUCAN_INSTANCES", {}, instances.named_instances,
        "name -> {'BASE_URL', 'API_KEY', optional 'TOKEN_PATH', "
        "'SERVER_URL', 'SCRIPT_URL', 'MCP_URL'}; ToucanUser(instance=name) selects one"),
    Key("TOUCAN_API_KEY_TTL", 300, checks.integer(0),
        "seconds a key returned by a callable TOUCAN_API_KEY "
        "is reused (it is called again at once after a 401/403)"),
    Key("TOUCAN_REQUIRED_ATTRIBUTES", None, checks.required_attributes,
        "attribute names, or a dict name -> type(s), "
        "every user must carry: no token otherwise (fail closed)"),
    Key("TOUCAN_PREFETCH_ON_LOGIN", False, checks.boolean,
        "mint in the background on Flask-Login's "
        "user_logged_in, so the first analytics view finds the token ready"),
    Key("TOUCAN_EMBED_PAGES", False, checks.embed_pages,
        "ready-made embed pages: True (every id), a list of "
        "dashboard/chart ids, or a callable (kind, item_id) -> bool"),
    Key("TOUCAN_EMBED_LAYOUT", None, checks.optional(checks.string),
        "the app's base template for embed pages (blocks head "
        "and content); default: a minimal full-viewport layout"),
    Key("TOUCAN_EMBED_FRAME_ANCESTORS", "'self'", checks.frame_ancestors,
        "frame-ancestors sent (merged into any "
        "Content-Security-Policy) on embed pages"),
    Key("TOUCAN_VARIANT_MAX_AGE", 86400, checks.integer(1),
        "seconds after a page's render during which its inject_token(role=..., "
        "permissions=...) components keep renewing; then the page must be reloaded"),
    Key("TOUCAN_ON_ERROR", "raise", checks.choice("raise", "placeholder"),
        "raise: a failed mint is a 502/503 page; placeholder: "
        "the page renders, each component becomes toucan/unavailable.html"),
)  # fmt: skip

DEFAULTS: dict[str, Any] = {k.name: k.default for k in KEYS if k.default is not DERIVED}


@dataclass(frozen=True)
class Settings:
    """The checked config of one app, frozen at ``init_app``. Fields: the keys, lower case."""

    api_key: KeySource | None
    base_url: str
    token_path: str
    server_url: str
    script_url: str
    mcp_url: str
    mcp_deadline: float
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
    trusted_origins: frozenset[str]
    instances: dict[str, Instance]
    api_key_ttl: int
    required_attributes: dict[str, tuple[type, ...]]
    prefetch_on_login: bool
    embed_pages: bool | frozenset[str] | Callable[[str, str | None], bool]
    embed_layout: str | None
    embed_frame_ancestors: str
    variant_max_age: int
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
            self.mcp_url,
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


def ca_bundle(verify: bool | str) -> str | None:
    """The CA bundle in force for TOUCAN_VERIFY (``Settings.verify``): the path it names,
    else, when it is True, the one the environment names (REQUESTS_CA_BUNDLE or
    CURL_CA_BUNDLE, as requests honours them), else None (the default trust, or none).
    One rule for minting, the MCP endpoint and ``doctor``."""
    if isinstance(verify, str):
        return verify
    if not verify:
        return None
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None


def bundle_context(bundle: str) -> ssl.SSLContext:
    """An SSL client context trusting the CA bundle at ``bundle`` (a file or a directory)."""
    if os.path.isdir(bundle):
        return ssl.create_default_context(capath=bundle)
    return ssl.create_default_context(cafile=bundle)


def apply_defaults(config: dict[str, Any]) -> None:
    """``setdefault`` every key, so ``app.config`` shows what is in force.

    ``TOUCAN_API_KEY`` and ``TOUCAN_BASE_URL`` fall back on the environment variables of
    the same names (what ``flask toucan fake`` tells you to export)."""
    if os.environ.get("TOUCAN_BASE_URL"):
        config.setdefault("TOUCAN_BASE_URL", os.environ["TOUCAN_BASE_URL"])
    for key, value in DEFAULTS.items():
        config.setdefault(key, value)
    config.setdefault("TOUCAN_API_KEY", os.environ.get("TOUCAN_API_KEY") or None)
    base = config["TOUCAN_BASE_URL"]
    if isinstance(base, str):
        config.setdefault("TOUCAN_SERVER_URL", instances.server_url_for(base))
        config.setdefault("TOUCAN_SCRIPT_URL", instances.script_url_for(base))
        config.setdefault("TOUCAN_MCP_URL", instances.mcp_url_for(base))


#: Keys that were tuning knobs of the token service, not settings an app should need:
#: now arguments of :class:`~flask_toucan.service.TokenService`, given through
#: ``Toucan(service_options=...)`` or ``init_app(app, service_options=...)``.
REMOVED: dict[str, str] = {
    "TOUCAN_REFRESH_AHEAD": "refresh_ahead",
    "TOUCAN_LOCK_TIMEOUT": "lock_timeout",
    "TOUCAN_LOCK_WAIT": "lock_wait",
    "TOUCAN_FRONT_CACHE_SIZE": "front_cache_size",
    "TOUCAN_FRONT_CACHE_TTL": "front_cache_ttl",
    "TOUCAN_PREVIEW_TOKEN_LIFETIME": "preview_lifetime",
}


def removed_keys(config: Mapping[str, Any]) -> dict[str, str]:
    """Removed keys set in ``config``, each with what replaces it."""
    return {
        key: f"pass service_options={{{REMOVED[key]!r}: ...}} to Toucan() or init_app()"
        for key in config
        if key in REMOVED
    }


def unknown_keys(config: Mapping[str, Any]) -> dict[str, str | None]:
    """``TOUCAN_*`` keys flask_toucan does not know, each with the closest known one
    (removed keys are not unknown: :func:`removed_keys` says what replaced them)."""
    known = [k.name for k in KEYS]
    return {
        key: next(iter(difflib.get_close_matches(key, known, n=1, cutoff=0.75)), None)
        for key in config
        if isinstance(key, str)
        and key.startswith("TOUCAN_")
        and key not in known
        and key not in REMOVED
    }


def did_you_mean(config: Mapping[str, Any]) -> str:
    """`` (did you mean TOUCAN_X instead of TOUCAN_Y?)`` for each likely typo, or ``""``."""
    typos = [f"{good} instead of {bad}" for bad, good in unknown_keys(config).items() if good]
    return f" (did you mean {'; '.join(typos)}?)" if typos else ""


def read_settings(config: Mapping[str, Any]) -> Settings:
    """Check every ``TOUCAN_*`` key; a wrong one raises ToucanConfigError naming it."""
    try:
        # TOUCAN_PREVIEW first: whether the API key is required depends on it.
        checks.boolean(config, "TOUCAN_PREVIEW")
        return Settings(**{key.field: key.check(config, key.name) for key in KEYS})
    except ToucanConfigError as exc:
        # A typo (TOUCAN_PREVEIW) often causes the error reported (no API key): say so.
        hint = did_you_mean(config)
        if not hint:
            raise
        raise ToucanConfigError(str(exc) + hint) from None
