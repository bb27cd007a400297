"""The blueprint: static scripts (preview stand-ins, refresh controller) and endpoints."""

from __future__ import annotations

from flask import Blueprint

__all__ = ["create_blueprint"]


def create_blueprint(url_prefix: str) -> Blueprint:
    """A fresh blueprint per app, mounted at ``TOUCAN_URL_PREFIX``."""
    return Blueprint(
        "toucan",
        __name__,
        url_prefix=url_prefix if url_prefix != "/" else None,
        static_folder="static",
        static_url_path="/static",
        template_folder="templates",
    )
