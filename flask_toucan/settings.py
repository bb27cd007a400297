"""Reading and checking the ``TOUCAN_*`` config keys."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ToucanConfigError

__all__ = ["DEFAULTS", "Settings", "apply_defaults"]

DEFAULT_BASE_URL = "https://toucanai.cloud"

#: Defaults that do not depend on other keys; derived ones are set in apply_defaults.
DEFAULTS: dict[str, Any] = {
    "TOUCAN_BASE_URL": DEFAULT_BASE_URL,
    "TOUCAN_TOKEN_PATH": "/embed/generate-token",
    "TOUCAN_DEFAULT_ROLE": "explorer",
    "TOUCAN_TIMEOUT": (3.05, 10),
    "TOUCAN_MAX_RETRIES": 2,
    "TOUCAN_MIN_TOKEN_TTL": 300,
    "TOUCAN_CACHE_CONFIG": None,
    "TOUCAN_CACHE_KEY_PREFIX": "toucan:",
    "TOUCAN_URL_PREFIX": "/toucan",
    "TOUCAN_REFRESH": True,
    "TOUCAN_REFRESH_STRATEGY": "attribute",
    "TOUCAN_PREVIEW": False,
    "TOUCAN_PREVIEW_TOKEN_LIFETIME": 3600,
    "TOUCAN_REFRESH_AHEAD": 0.5,
    "TOUCAN_LOCK_TIMEOUT": 10,
    "TOUCAN_LOCK_WAIT": 5.0,
    "TOUCAN_FRONT_CACHE_SIZE": 1000,
    "TOUCAN_FRONT_CACHE_TTL": 30,
    "TOUCAN_ON_ERROR": "raise",
}

REFRESH_STRATEGIES = ("attribute", "remount")
ON_ERROR = ("raise", "placeholder")


@dataclass(frozen=True)
class Settings:
    """The checked config of one app, frozen at ``init_app``."""

    api_key: str | None
    base_url: str
    token_path: str
    server_url: str
    script_url: str
    default_role: str
    timeout: tuple[float, float]
    max_retries: int
    min_token_ttl: int
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
    on_error: str

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={'<hidden>' if name == 'api_key' else repr(value)}"
            for name, value in self.__dict__.items()
        )
        return f"Settings({shown})"


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
    shown = "<hidden>" if key == "TOUCAN_API_KEY" else repr(value)
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


def _timeout(config: Mapping[str, Any]) -> tuple[float, float]:
    value = config.get("TOUCAN_TIMEOUT")
    parts = value if isinstance(value, (tuple, list)) else (value, value)
    if len(parts) != 2 or not all(
        isinstance(p, (int, float)) and not isinstance(p, bool) and p > 0 for p in parts
    ):
        raise _fail(
            "TOUCAN_TIMEOUT",
            "must be a positive number of seconds or a (connect, read) pair",
            value,
        )
    return float(parts[0]), float(parts[1])


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


def read_settings(config: Mapping[str, Any]) -> Settings:
    """Check every ``TOUCAN_*`` key; a wrong one raises ToucanConfigError naming it."""
    preview = _bool(config, "TOUCAN_PREVIEW")
    api_key = config.get("TOUCAN_API_KEY")
    if not preview:
        if api_key is None or api_key == "":
            raise ToucanConfigError(
                "TOUCAN_API_KEY is not set: put your Toucan API key in app.config"
                "['TOUCAN_API_KEY'] or the TOUCAN_API_KEY environment variable, or "
                "set TOUCAN_PREVIEW = True to try flask_toucan without an account"
            )
        if not isinstance(api_key, str) or not api_key.strip() or "\n" in api_key:
            raise _fail("TOUCAN_API_KEY", "must be a non-empty one-line string", api_key)
    cache_config = config.get("TOUCAN_CACHE_CONFIG")
    if cache_config is not None and not isinstance(cache_config, Mapping):
        raise _fail(
            "TOUCAN_CACHE_CONFIG", "must be a flask-caching config dict or None", cache_config
        )
    prefix = config.get("TOUCAN_CACHE_KEY_PREFIX")
    if not isinstance(prefix, str):
        raise _fail("TOUCAN_CACHE_KEY_PREFIX", "must be a string", prefix)
    strategy = config.get("TOUCAN_REFRESH_STRATEGY")
    if strategy not in REFRESH_STRATEGIES:
        raise _fail("TOUCAN_REFRESH_STRATEGY", f"must be one of {REFRESH_STRATEGIES}", strategy)
    url_prefix = _string(config, "TOUCAN_URL_PREFIX", path=True)
    on_error = config.get("TOUCAN_ON_ERROR")
    if on_error not in ON_ERROR:
        raise _fail("TOUCAN_ON_ERROR", f"must be one of {ON_ERROR}", on_error)
    return Settings(
        api_key=api_key if isinstance(api_key, str) and api_key else None,
        base_url=_string(config, "TOUCAN_BASE_URL", url=True).rstrip("/"),
        token_path=_string(config, "TOUCAN_TOKEN_PATH", path=True),
        server_url=_string(config, "TOUCAN_SERVER_URL", url=True),
        script_url=_string(config, "TOUCAN_SCRIPT_URL"),
        default_role=_string(config, "TOUCAN_DEFAULT_ROLE"),
        timeout=_timeout(config),
        max_retries=_int(config, "TOUCAN_MAX_RETRIES", 0),
        min_token_ttl=_int(config, "TOUCAN_MIN_TOKEN_TTL", 0),
        cache_config=cache_config,
        cache_key_prefix=prefix,
        url_prefix=url_prefix.rstrip("/") or "/",
        refresh=_bool(config, "TOUCAN_REFRESH"),
        refresh_strategy=str(strategy),
        preview=preview,
        preview_token_lifetime=_int(config, "TOUCAN_PREVIEW_TOKEN_LIFETIME", 1),
        refresh_ahead=_number(config, "TOUCAN_REFRESH_AHEAD", 0, 1),
        lock_timeout=_int(config, "TOUCAN_LOCK_TIMEOUT", 1),
        lock_wait=_number(config, "TOUCAN_LOCK_WAIT", 0),
        front_cache_size=_int(config, "TOUCAN_FRONT_CACHE_SIZE", 0),
        front_cache_ttl=_number(config, "TOUCAN_FRONT_CACHE_TTL", 0),
        on_error=str(on_error),
    )
