"""Toucan instances: where tokens are minted, with which key, and which script pages load.

The top-level ``TOUCAN_BASE_URL`` / ``TOUCAN_API_KEY`` / ... keys make the default
instance (name None); ``TOUCAN_INSTANCES`` names more, and
``ToucanUser(instance=name)`` picks one. Here: :class:`Instance` and the checks of
those keys (a plain ``http://`` URL off loopback is refused: the key would travel
in clear).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .checks import boolean, fail, path, public_string, public_url, redact_text, url
from .errors import ToucanConfigError

__all__ = [
    "Instance",
    "KeySource",
    "api_key",
    "base_url",
    "named_instances",
    "script_url_for",
    "server_url_for",
]

#: An API key, or a zero-argument callable returning it (a secret manager's getter).
KeySource = str | Callable[[], str]

_ENTRY_KEYS = {"BASE_URL", "API_KEY", "TOKEN_PATH", "SERVER_URL", "SCRIPT_URL", "MCP_URL"}


@dataclass(frozen=True)
class Instance:
    """One Toucan instance: the top-level keys (name None) or an entry of TOUCAN_INSTANCES."""

    name: str | None
    base_url: str
    api_key: KeySource | None = field(repr=False)
    token_path: str
    server_url: str
    script_url: str
    mcp_url: str

    def as_config(self) -> dict[str, Any]:
        """The instance as a TOUCAN_INSTANCES entry (the key unredacted: see ``redact``)."""
        return {
            "BASE_URL": self.base_url,
            "API_KEY": self.api_key,
            "TOKEN_PATH": self.token_path,
            "SERVER_URL": self.server_url,
            "SCRIPT_URL": self.script_url,
            "MCP_URL": self.mcp_url,
        }


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine: decided by address, never by the look of a name
    (``127.attacker.example`` and ``127.0.0.1.nip.io`` resolve wherever their owner wants);
    the one name trusted is ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def public(url: str) -> str:
    """``url`` without userinfo: credentials a base URL carries for the token request
    never reach a browser or the MCP endpoint."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def server_url_for(base_url: str) -> str:
    """The components' ``server-url`` of an instance at ``base_url`` (TOUCAN_SERVER_URL)."""
    return public(base_url).rstrip("/") + "/api"


def script_url_for(base_url: str) -> str:
    """The web-components module of an instance at ``base_url`` (TOUCAN_SCRIPT_URL)."""
    return public(base_url).rstrip("/") + "/embed/embed.js"


def mcp_url_for(base_url: str) -> str:
    """Toucan's MCP endpoint of an instance at ``base_url`` (TOUCAN_MCP_URL)."""
    return public(base_url).rstrip("/") + "/api/mcp"


def api_key(config: Mapping[str, Any], key: str) -> KeySource | None:
    value = config.get(key)
    if callable(value):
        return value  # type: ignore[no-any-return]  # a secret manager's getter, called later
    if boolean(config, "TOUCAN_PREVIEW"):
        return value if isinstance(value, str) and value else None
    if value is None or value == "":
        raise ToucanConfigError(
            "TOUCAN_API_KEY is not set: put your Toucan API key in app.config"
            "['TOUCAN_API_KEY'] or the TOUCAN_API_KEY environment variable, or "
            "set TOUCAN_PREVIEW = True to try flask_toucan without an account"
        )
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        raise fail(key, "must be a non-empty one-line string or a callable", value)
    return value


def base_url(config: Mapping[str, Any], key: str) -> str:
    value = url(config, key).rstrip("/")
    parsed = urlsplit(value)
    host = (parsed.hostname or "").lower()
    loopback = is_loopback(host)
    if parsed.scheme == "http" and not loopback and config.get("TOUCAN_ALLOW_HTTP") is not True:
        raise ToucanConfigError(
            f"{key} is a plain http:// URL ({redact_text(value)}): the API key would travel "
            "in clear. Use https://, or set TOUCAN_ALLOW_HTTP = True for a private network "
            "you trust"
        )
    return value


def named_instances(config: Mapping[str, Any], key: str) -> dict[str, Instance]:
    """TOUCAN_INSTANCES, each entry checked as the top-level keys are."""
    value = config.get(key) or {}
    if not isinstance(value, Mapping):
        raise fail(key, "must be a dict of name -> {'BASE_URL': ..., 'API_KEY': ...}", value)
    out: dict[str, Instance] = {}
    for name, entry in value.items():
        where = f"{key}[{name!r}]"
        if not isinstance(name, str) or not name.strip():
            raise fail(key, "must have non-empty string names", name, by_shape=True)
        if not isinstance(entry, Mapping) or not {"BASE_URL", "API_KEY"} <= set(entry):
            raise fail(where, "must be a dict with BASE_URL and API_KEY", entry, by_shape=True)
        unknown = set(entry) - _ENTRY_KEYS
        if unknown:
            raise fail(where, f"has unknown keys {sorted(unknown)}", sorted(unknown))
        try:
            out[name] = _entry(config, name, entry)
        except ToucanConfigError as exc:
            message = str(exc).replace("TOUCAN_", f"{where}: ", 1)
            raise ToucanConfigError(message.replace("TOUCAN_API_KEY", "API_KEY")) from None
    return out


def _entry(config: Mapping[str, Any], name: str, entry: Mapping[str, Any]) -> Instance:
    """One TOUCAN_INSTANCES entry, checked under the top-level key names."""
    sub = {
        "TOUCAN_PREVIEW": config.get("TOUCAN_PREVIEW"),
        "TOUCAN_ALLOW_HTTP": config.get("TOUCAN_ALLOW_HTTP"),
        "TOUCAN_BASE_URL": entry["BASE_URL"],
        "TOUCAN_API_KEY": entry["API_KEY"],
        "TOUCAN_TOKEN_PATH": entry.get("TOKEN_PATH", config.get("TOUCAN_TOKEN_PATH")),
    }
    base = base_url(sub, "TOUCAN_BASE_URL")
    sub["TOUCAN_SERVER_URL"] = entry.get("SERVER_URL", server_url_for(base))
    sub["TOUCAN_SCRIPT_URL"] = entry.get("SCRIPT_URL", script_url_for(base))
    sub["TOUCAN_MCP_URL"] = entry.get("MCP_URL", mcp_url_for(base))
    return Instance(
        name,
        base,
        api_key(sub, "TOUCAN_API_KEY"),
        path(sub, "TOUCAN_TOKEN_PATH"),
        public_url(sub, "TOUCAN_SERVER_URL"),
        public_string(sub, "TOUCAN_SCRIPT_URL"),
        public_url(sub, "TOUCAN_MCP_URL"),
    )
