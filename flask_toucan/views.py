"""The HTTP side: the blueprint (refresh endpoint, scripts) and the response headers.

``POST <prefix>/token`` hands the current user (from the server-side
``user_loader``, never from the request) a token through the same cache as pages.
Cross-site requests cannot use it: it requires a custom header that a form cannot
send and that a cross-origin ``fetch`` cannot send without a CORS preflight we
never grant, and it refuses requests whose ``Sec-Fetch-Site`` (or, without it,
``Origin``) say they come from another site. ``Origin`` is compared by host, so
``https://host`` is accepted on an ``http://host`` request (a TLS-terminating proxy
without ProxyFix), with one warning; ``TOUCAN_TRUSTED_ORIGINS`` adds origins.
The user is checked before the body is read, and the body is capped. Whatever
goes wrong, it answers JSON: ``{"error": code}`` with a 4xx or 5xx status.

Ready-made embed pages, opt-in with ``TOUCAN_EMBED_PAGES``: ``<prefix>/dashboards/<id>``
(``toucan.dashboard_page``), ``<prefix>/charts/<id>`` (``toucan.chart_page``) and
``<prefix>/assistant`` (``toucan.assistant_page``), each rendering ``toucan/embed.html``
with the same rules as a decorated view: no user is a 401, an id that is not allowed
is the same 404 as an unknown one (ids cannot be probed, and Toucan is not asked), the
response is ``private, no-store``. They are made to be framed:
``TOUCAN_EMBED_FRAME_ANCESTORS`` is sent as the ``frame-ancestors`` of the page's
Content-Security-Policy, merged into whatever CSP the app (or Flask-Talisman) sets,
in an ``after_request`` hook. Flask runs ``after_request`` hooks in the reverse order of
their registration, so ``Toucan(app)`` must come before ``Talisman(app)`` for ours to
run last; the other order is refused at start-up with that fix.

The views call the request side (:mod:`flask_toucan.context`) directly.

CSRF: the refresh endpoint has its own defence, which does not expire, and takes no
form token. An app using Flask-WTF's ``CSRFProtect`` exempts it explicitly::

    from flask_toucan.views import refresh_token
    csrf.exempt(refresh_token)
"""

from __future__ import annotations

import json
import logging
import math
import re
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    jsonify,
    render_template,
    request,
)
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from . import context, signals
from .errors import (
    InvalidToucanUser,
    InvalidVariant,
    ToucanAPIError,
    ToucanConfigError,
    ToucanUserRequired,
)
from .settings import Settings

__all__ = [
    "REFRESH_HEADER",
    "THEMES",
    "create_blueprint",
    "install",
    "merge_frame_ancestors",
    "refresh_token",
]

logger = logging.getLogger("flask_toucan")

#: Header the refresh controller sends; its presence is the CSRF defence.
REFRESH_HEADER = "X-Toucan-Refresh"
_SAME_SITE_FETCH = {"same-origin", "none"}

THEMES = ("light", "dark")
#: The ids embed pages accept: letters, digits, ``_``, ``-``, ``.`` and ``~`` (URL-safe,
#: no control characters), at most 128, and never a ``.`` or ``..`` path segment
#: (Toucan's component may build a path from the id).
_SAFE_ID = re.compile(r"(?!\.\.?$)[A-Za-z0-9_.~-]{1,128}")
_FRAME_ANCESTORS = re.compile(r"(^|;)\s*frame-ancestors[^;]*", re.IGNORECASE)


def install(app: Flask, settings: Settings) -> None:
    """Mount the blueprint on ``app`` (and merge frame-ancestors on embed pages)."""
    app.register_blueprint(create_blueprint(settings))
    if settings.embed_pages:
        nonce = app.jinja_env.globals.get("csp_nonce")
        owner = type(getattr(nonce, "__self__", None)).__module__
        if owner.startswith("flask_talisman"):
            # Its after_request hook was registered first, so it would run after ours
            # and replace the CSP we merge frame-ancestors into.
            raise ToucanConfigError(
                "TOUCAN_EMBED_PAGES: Flask-Talisman was set up on this app before "
                "flask_toucan, so it would replace the embed pages' frame-ancestors; call "
                "Toucan(app) (or toucan.init_app(app)) before Talisman(app)"
            )
        app.after_request(merge_frame_ancestors)


def refresh_token() -> ResponseReturnValue:
    """``POST <prefix>/token`` → ``{"token", "expiresAt", "expiresIn"}``."""
    response, code = _answer_refresh(context.get_state().settings)
    if signals.token_refreshed.receivers:
        try:
            signals.token_refreshed.send(
                current_app._get_current_object(),  # type: ignore[attr-defined]
                status=response.status_code,
                code=code,
            )
        except Exception:
            logger.exception("a receiver of flask_toucan's token_refreshed signal raised")
    return response


def create_blueprint(settings: Settings) -> Blueprint:
    """A fresh blueprint per app, mounted at ``TOUCAN_URL_PREFIX``."""
    url_prefix = settings.url_prefix
    bp = Blueprint(
        "toucan",
        __name__,
        url_prefix=url_prefix if url_prefix != "/" else None,
        static_folder="static",
        static_url_path="/static",
        template_folder="templates",
    )

    bp.add_url_rule("/token", view_func=refresh_token, methods=["POST"])
    if settings.embed_pages:

        def dashboard_page(dashboard_id: str) -> str:
            return _page(settings, "dashboard", dashboard_id)

        def chart_page(chart_id: str) -> str:
            return _page(settings, "chart", chart_id)

        def assistant_page() -> str:
            return _page(settings, "assistant", None)

        bp.add_url_rule("/dashboards/<dashboard_id>", view_func=dashboard_page)
        bp.add_url_rule("/charts/<chart_id>", view_func=chart_page)
        bp.add_url_rule("/assistant", view_func=assistant_page)
    return bp


#: The refresh body is ``{"variant": "<reference>"}`` or empty: a few hundred bytes.
MAX_BODY = 4096


def _json_error(status: int, code: str, message: str) -> tuple[Response, str]:
    response = jsonify(error=code, message=message)
    response.status_code = status
    response.headers["Cache-Control"] = "private, no-store"
    return response, code


def _origin_refusal(trusted: frozenset[str]) -> str | None:
    """Why this request looks cross-site, or None when it comes from our own pages."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/").lower() in trusted:
        return None
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:  # the browser's own verdict, when it gives one
        return None if fetch_site in _SAME_SITE_FETCH else f"Sec-Fetch-Site is {fetch_site}"
    if origin is None:
        return None
    parsed = urlsplit(origin)
    if parsed.netloc.lower() != request.host.lower():
        return "Origin names another site; list it in TOUCAN_TRUSTED_ORIGINS if it is yours"
    if parsed.scheme == request.scheme:
        return None
    if parsed.scheme == "https" and request.scheme == "http":
        # A TLS-terminating proxy in front of an app that does not know it.
        _warn_proxy_once()
        return None
    return "Origin's scheme differs from this site's"


_warned_proxy = False


def _warn_proxy_once() -> None:
    global _warned_proxy
    if not _warned_proxy:
        _warned_proxy = True
        logger.warning(
            "a refresh request came from https://%s but the app sees http: behind a "
            "TLS-terminating proxy, wrap the app in werkzeug's ProxyFix (x_proto=1) so "
            "Flask knows the real scheme; flask_toucan accepts it meanwhile",
            request.host,
        )


def _read_reference() -> str | tuple[Response, str] | None:
    """The body's variant reference, None for none, or the error response to send."""
    if (request.content_length or 0) > MAX_BODY:
        return _json_error(413, "body_too_large", f"the body is limited to {MAX_BODY} bytes")
    raw = request.stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        return _json_error(413, "body_too_large", f"the body is limited to {MAX_BODY} bytes")
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return _json_error(400, "bad_request", "the body is not JSON")
    reference = body.get("variant") if isinstance(body, dict) else 0
    if reference is None or (isinstance(reference, str) and reference):
        return reference
    return _json_error(400, "bad_request", 'the body must be {"variant": "<reference>"} or {}')


def _answer_refresh(settings: Settings) -> tuple[Response, str | None]:
    """The refresh answer and its error code (None on success)."""
    if request.headers.get(REFRESH_HEADER) != "1":
        return _json_error(
            403, "refresh_header_missing", f"the {REFRESH_HEADER}: 1 header is required"
        )
    reason = _origin_refusal(settings.trusted_origins)
    if reason is not None:
        return _json_error(403, "origin_refused", f"cross-site request refused: {reason}")
    try:
        context.require_user()  # before the body is read: the server-side user decides
        reference = _read_reference()
        if isinstance(reference, tuple):
            return reference
        token, renewed = context.refresh_token(reference)
    except ToucanUserRequired:
        return _json_error(401, "session_ended", "no signed-in user")
    except InvalidVariant as exc:
        return _json_error(403, exc.code, str(exc))
    except ToucanAPIError as exc:
        answer = _json_error(exc.code or 503, "unavailable", "analytics are unavailable")
        if exc.retry_in:
            # This identity's back-off: the controller waits for it instead of asking
            # again at once (it would be told the same).
            answer[0].headers["Retry-After"] = str(math.ceil(exc.retry_in))
        return answer
    except InvalidToucanUser as exc:
        logger.error("the user_loader returned a user flask_toucan cannot send to Toucan: %s", exc)
        return _json_error(500, "invalid_user", "analytics are unavailable")
    except Exception:
        # The app's own code (the user_loader, allow()) raised: still the JSON the
        # controller understands, never an HTML error page.
        logger.exception("the Toucan refresh endpoint failed")
        return _json_error(500, "internal_error", "analytics are unavailable")
    # The request side marked the request: the after_request hook adds no-store and Vary.
    body = token.to_dict()
    if renewed is not None:
        # Signed anew: a page that keeps refreshing keeps its variant past MAX_AGE.
        body["variant"] = renewed
    return jsonify(body), None


def _allowed(settings: Settings, kind: str, item_id: str | None) -> bool:
    rule = settings.embed_pages
    if rule is True:
        return True
    if callable(rule):
        return bool(rule(kind, item_id))
    # A list names dashboards and charts; the assistant needs True or the callable.
    return isinstance(rule, frozenset) and item_id is not None and item_id in rule


def _page(settings: Settings, kind: str, item_id: str | None) -> str:
    context.require_user()  # 401 first: nothing about the ids is told to strangers
    if item_id is not None and not _SAFE_ID.fullmatch(item_id):
        raise NotFound()  # not an id Toucan could have: never handed to its component
    if not _allowed(settings, kind, item_id):
        raise NotFound()  # the same answer as an id that does not exist
    theme = request.args.get("theme")
    g._toucan_frame_ancestors = settings.embed_frame_ancestors
    return render_template(
        "toucan/embed.html",
        kind=kind,
        item_id=item_id,
        theme=theme if theme in THEMES else None,  # anything else is ignored, never echoed
        toucan_embed_layout=settings.embed_layout or "toucan/embed_layout.html",
    )


def merge_frame_ancestors(response: Response) -> Response:
    """``after_request``, registered before Flask-Talisman's (so it runs after it): the
    embed page's ``frame-ancestors`` is merged into the CSP the app set."""
    ancestors = g.get("_toucan_frame_ancestors")
    if ancestors is None:
        return response
    directive = f"frame-ancestors {ancestors}"
    # Every policy the app set is kept (a browser enforces each), with ours merged in.
    policies = []
    for csp in response.headers.getlist("Content-Security-Policy") or [""]:
        merged = _FRAME_ANCESTORS.sub("", csp).strip().strip(";").strip()
        policies.append(f"{merged}; {directive}" if merged else directive)
    response.headers.remove("Content-Security-Policy")
    for policy in policies:
        response.headers.add("Content-Security-Policy", policy)
    # frame-ancestors supersedes X-Frame-Options; a DENY/SAMEORIGIN left beside it would
    # contradict it in browsers that read only the older header.
    response.headers.pop("X-Frame-Options", None)
    return response
