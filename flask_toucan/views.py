"""The HTTP side: the blueprint (refresh endpoint, scripts), response headers, placeholders.

``POST <prefix>/token`` hands the current user (from the server-side
``user_loader``, never from the request) a token through the same cache as pages.
Cross-site requests cannot use it: it requires a custom header that a form cannot
send and that a cross-origin ``fetch`` cannot send without a CORS preflight we
never grant, and it refuses requests whose ``Sec-Fetch-Site`` or ``Origin`` say
they come from another site.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    has_request_context,
    jsonify,
    render_template,
    request,
)
from flask.typing import ResponseReturnValue
from markupsafe import Markup
from werkzeug.wrappers import Response

from . import markup
from .errors import InvalidVariant, ToucanAPIError, ToucanUserRequired
from .state import RequestState

__all__ = [
    "REFRESH_HEADER",
    "create_blueprint",
    "csp_nonce",
    "exempt_from_csrf",
    "no_store_when_token_sent",
    "placeholder",
]

#: Header the refresh controller sends; its presence is the CSRF defence.
REFRESH_HEADER = "X-Toucan-Refresh"
REFRESH_VIEW = "flask_toucan.views.refresh_token"
_SAME_SITE_FETCH = {"same-origin", "none"}


def create_blueprint(url_prefix: str) -> Blueprint:
    """A fresh blueprint per app, mounted at ``TOUCAN_URL_PREFIX``."""
    bp = Blueprint(
        "toucan",
        __name__,
        url_prefix=url_prefix if url_prefix != "/" else None,
        static_folder="static",
        static_url_path="/static",
        template_folder="templates",
    )
    bp.add_url_rule("/token", view_func=refresh_token, methods=["POST"])
    # URL value preprocessors run before every before_request function (the app's
    # included) and only for this blueprint's requests: the one place to exempt the
    # refresh endpoint from a CSRFProtect set up after us, at no cost to other views.
    bp.url_value_preprocessor(lambda endpoint, values: exempt_from_csrf(current_app))
    return bp


def _json_error(status: int, error: str, message: str) -> Response:
    response = jsonify(error=error, message=message)
    response.status_code = status
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _cross_site_reason() -> str | None:
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in _SAME_SITE_FETCH:
        return f"Sec-Fetch-Site is {fetch_site}"
    origin = request.headers.get("Origin")
    if origin is not None and origin != request.host_url.rstrip("/"):
        return "Origin does not match this site"
    return None


def refresh_token() -> ResponseReturnValue:
    """``POST <prefix>/token`` → ``{"token", "expiresAt", "expiresIn"}`` for the current user."""
    if request.headers.get(REFRESH_HEADER) != "1":
        return _json_error(403, "forbidden", f"the {REFRESH_HEADER} header is required")
    reason = _cross_site_reason()
    if reason is not None:
        return _json_error(403, "forbidden", f"cross-site request refused ({reason})")
    state = current_app.extensions["toucan"]
    toucan = state.toucan
    body: Any = request.get_json(silent=True) if request.content_length else None
    variant = body.get("variant") if isinstance(body, dict) else None
    try:
        user = toucan._require_user()  # the server-side user, whatever the body says
        if isinstance(variant, str) and variant:
            user = state.variants.apply(variant, user)
        token = toucan.get_token(user)
    except ToucanUserRequired:
        return _json_error(401, "session_ended", "no signed-in user")
    except ToucanAPIError as exc:
        return _json_error(exc.code or 503, "unavailable", "analytics are unavailable")
    except InvalidVariant:
        return _json_error(403, "forbidden", "the page's token variant is not valid here")
    # get_token() marked the request: the app's after_request adds no-store and Vary.
    return jsonify(token.to_dict())


def exempt_from_csrf(app: Flask) -> None:
    """Exempt the refresh endpoint from Flask-WTF's CSRFProtect, if the app uses it.

    Its own defence (custom header + same-origin checks) does not expire, while a
    CSRF form token does (an hour by default), which would end refreshes on pages
    left open.
    """
    csrf = app.extensions.get("csrf")
    if csrf is not None and hasattr(csrf, "exempt"):
        csrf.exempt(REFRESH_VIEW)


def placeholder(tag: str, fixed: Mapping[str, object], attrs: Mapping[str, object]) -> Markup:
    """What stands in for a component when no token could be had (TOUCAN_ON_ERROR)."""
    layout = {
        markup.attribute_name(k): v
        for k, v in attrs.items()
        if k in ("style", "class_", "class", "id")
    }
    html = render_template(
        "toucan/unavailable.html",
        kind="assistant" if tag == "tc-ai-assistant" else "dashboard",
        item_id=fixed.get("dashboard-id") or fixed.get("chart-id"),
        layout=markup.html_attributes(layout),
    )
    return Markup(html)  # noqa: S704 - rendered by an autoescaped template


def csp_nonce() -> str | None:
    # Flask-Talisman (and look-alikes) expose the request's nonce as a Jinja global.
    nonce_fn = current_app.jinja_env.globals.get("csp_nonce")
    if callable(nonce_fn) and has_request_context():
        nonce = nonce_fn()
        return str(nonce) if nonce else None
    return None


def no_store_when_token_sent(response: Response) -> Response:
    rs: RequestState | None = g.get("_toucan")
    if rs is not None and rs.no_store:
        headers = response.headers
        headers["Cache-Control"] = "private, no-store"
        headers.pop("Expires", None)
        vary = headers.get("Vary")
        if not vary:
            headers["Vary"] = "Cookie"
        elif "cookie" not in vary.lower():
            headers["Vary"] = vary + ", Cookie"
    return response
