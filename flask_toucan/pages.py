"""Ready-made embed pages: a dashboard, a chart or the assistant on a page of its own.

Opt-in with ``TOUCAN_EMBED_PAGES``. The blueprint then serves
``<prefix>/dashboards/<id>`` (``toucan.dashboard_page``), ``<prefix>/charts/<id>``
(``toucan.chart_page``) and ``<prefix>/assistant`` (``toucan.assistant_page``), each
rendering ``toucan/embed.html`` with the same rules as a decorated view: no user is a
401, an id that is not allowed is the same 404 as an unknown one (ids cannot be
probed, and Toucan is not asked), the response is ``private, no-store``. They are
made to be framed: ``TOUCAN_EMBED_FRAME_ANCESTORS`` is sent as the
``frame-ancestors`` of the page's Content-Security-Policy, merged into whatever CSP
the app (or Flask-Talisman) sets, after it has set it.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, current_app, g, render_template, request
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

__all__ = ["THEMES", "merge_frame_ancestors", "register_pages"]

THEMES = ("light", "dark")
_FRAME_ANCESTORS = re.compile(r"(^|;)\s*frame-ancestors[^;]*", re.IGNORECASE)


def register_pages(bp: Blueprint) -> None:
    bp.add_url_rule("/dashboards/<dashboard_id>", view_func=dashboard_page)
    bp.add_url_rule("/charts/<chart_id>", view_func=chart_page)
    bp.add_url_rule("/assistant", view_func=assistant_page)


def dashboard_page(dashboard_id: str) -> str:
    return _page("dashboard", dashboard_id)


def chart_page(chart_id: str) -> str:
    return _page("chart", chart_id)


def assistant_page() -> str:
    return _page("assistant", None)


def _allowed(kind: str, item_id: str | None) -> bool:
    rule = current_app.extensions["toucan"].settings.embed_pages
    if rule is True:
        return True
    if callable(rule):
        return bool(rule(kind, item_id))
    # A list names dashboards and charts; the assistant needs True or the callable.
    return bool(rule) and item_id is not None and item_id in rule


def _page(kind: str, item_id: str | None) -> str:
    state = current_app.extensions["toucan"]
    toucan = state.toucan
    toucan._require_user()  # 401 first: nothing about the ids is told to strangers
    if not _allowed(kind, item_id):
        raise NotFound()  # the same answer as an id that does not exist
    theme = request.args.get("theme")
    g._toucan_frame_ancestors = state.settings.embed_frame_ancestors
    return render_template(
        "toucan/embed.html",
        kind=kind,
        item_id=item_id,
        theme=theme if theme in THEMES else None,  # anything else is ignored, never echoed
        toucan_embed_layout=state.settings.embed_layout or "toucan/embed_layout.html",
    )


def merge_frame_ancestors(sender: Flask, response: Response, **extra: Any) -> None:
    """``request_finished``: runs after every ``after_request`` (Flask-Talisman's too), so
    the embed page's ``frame-ancestors`` is merged into the final CSP, not overwritten."""
    ancestors = g.get("_toucan_frame_ancestors")
    if ancestors is None:
        return
    directive = f"frame-ancestors {ancestors}"
    csp = response.headers.get("Content-Security-Policy")
    if csp:
        merged = _FRAME_ANCESTORS.sub("", csp).strip().strip(";").strip()
        csp = f"{merged}; {directive}" if merged else directive
    else:
        csp = directive
    response.headers["Content-Security-Policy"] = csp
    # frame-ancestors supersedes X-Frame-Options; a DENY/SAMEORIGIN left beside it would
    # contradict it in browsers that read only the older header.
    response.headers.pop("X-Frame-Options", None)
