"""Embed Toucan AI dashboards and the AI assistant in Flask apps, per signed-in user."""

from __future__ import annotations

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

__all__ = [
    "EmbedToken",
    "InvalidToucanUser",
    "InvalidVariant",
    "Toucan",
    "ToucanAPIError",
    "ToucanAuthError",
    "ToucanConfigError",
    "ToucanError",
    "ToucanForbidden",
    "ToucanRateLimited",
    "ToucanResponseError",
    "ToucanUnavailable",
    "ToucanUser",
    "ToucanUserRequired",
    "parse_expires_in",
]

__version__ = "0.1.0"
