"""Embed Toucan AI dashboards and the AI assistant in Flask apps, per signed-in user."""

from __future__ import annotations

from .errors import (
    ToucanAuthError,
    ToucanConfigError,
    ToucanError,
    ToucanRateLimited,
    ToucanResponseError,
    ToucanUnavailable,
    ToucanUserRequired,
)
from .extension import Toucan
from .tokens import EmbedToken, ToucanUser, parse_expires_in

__all__ = [
    "EmbedToken",
    "Toucan",
    "ToucanAuthError",
    "ToucanConfigError",
    "ToucanError",
    "ToucanRateLimited",
    "ToucanResponseError",
    "ToucanUnavailable",
    "ToucanUser",
    "ToucanUserRequired",
    "parse_expires_in",
]

__version__ = "0.1.0"
