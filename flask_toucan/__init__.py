"""Embed Toucan AI dashboards and the AI assistant in Flask apps, per signed-in user."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .context import current_token
from .errors import (
    InvalidToucanUser,
    InvalidVariant,
    ToucanAPIError,
    ToucanAuthError,
    ToucanConfigError,
    ToucanError,
    ToucanForbidden,
    ToucanRateLimited,
    ToucanResponseError,
    ToucanUnavailable,
    ToucanUserRequired,
)
from .extension import Toucan
from .identity import ToucanUser
from .tokens import EmbedToken, parse_expires_in

if TYPE_CHECKING:
    from .mcp import MCPConnection, ToucanAnswer

__all__ = [
    "EmbedToken",
    "InvalidToucanUser",
    "InvalidVariant",
    "MCPConnection",
    "Toucan",
    "ToucanAPIError",
    "ToucanAnswer",
    "ToucanAuthError",
    "ToucanConfigError",
    "ToucanError",
    "ToucanForbidden",
    "ToucanRateLimited",
    "ToucanResponseError",
    "ToucanUnavailable",
    "ToucanUser",
    "ToucanUserRequired",
    "current_token",
    "parse_expires_in",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # ToucanAnswer and MCPConnection live with the MCP client, an optional extra:
    # imported on first use.
    if name in ("ToucanAnswer", "MCPConnection"):
        from . import mcp

        return getattr(mcp, name)
    raise AttributeError(f"module 'flask_toucan' has no attribute {name!r}")
