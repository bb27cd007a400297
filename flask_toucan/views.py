"""The HTTP side: the blueprint (refresh endpoint, scripts) and the response headers.

``POST <prefix>/token`` hands the current user (from the server-side
``user_loader``, never from the request) a token through the same cache as pages.
Cross-site requests cannot use it: it requires a custom header that a form cannot
send and that a cross-origin ``fetch`` cannot send without a CORS preflight we
never grant, and it refuses requests whose ``Sec-Fetch-Site`` (or, without it,
``Origin``) say they come from another site. ``Origin`` is compared by host, so
``https://host`` is accepted on an ``http://host`` request (a TLS-terminating proxy
without ProxyFix), with one warning; ``TOUCAN_TRUSTED_ORIGINS`` adds origins.
The user is checked before the body is read, and the body is capped.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    jsonify,
    request,
    request_finished,
)
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from . import signals
from .errors import InvalidToucanUser, InvalidVariant, ToucanAPIError, ToucanUserRequired
from .pages import merge_frame_ancestors, register_pages
from .settings import Settings
from .state import RequestState

__all__ = [
    "REFRESH_HEADER",
    "create_blueprint",
    "exempt_from_csrf",
    "install",
    "no_store_when_token_sent",
    "run_first",
]

logger = logging.getLogger("flask_toucan")

#: Header the refresh controller sends; its presence is the CSRF defence.
REFRESH_HEADER = "X-Toucan-Refresh"
REFRESH_VIEW = "flask_toucan.views.refresh_token"
_SAME_SITE_FETCH = {"same-origin", "none"}

P = ParamSpec("P")
R = TypeVar("R")


def install(app: Flask, settings: Settings) -> None:
    """Mount the blueprint on ``app`` and add the response hooks."""
    app.register_blueprint(
        create_blueprint(settings.url_prefix, embed_pages=bool(settings.embed_pages))
    )
    if settings.embed_pages:
        request_finished.connect(merge_frame_ancestors, app, weak=False)
    app.after_request(no_store_when_token_sent)
    if app.debug:  # development help; nothing of it runs outside debug mode
        app.after_request(debug_checks)


def run_first(prepare: Callable[[], None], view: Callable[P, R]) -> Callable[P, R]:
    """``view`` (sync or async) wrapped so that ``prepare()`` runs before it."""
    if inspect.iscoroutinefunction(view):

        @functools.wraps(view)
        async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            prepare()
            return await view(*args, **kwargs)

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        prepare()
        return view(*args, **kwargs)

    return wrapper


def create_blueprint(url_prefix: str, embed_pages: bool = False) -> Blueprint:
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
    if embed_pages:
        register_pages(bp)
    # URL value preprocessors run before every before_request function (the app's
    # included) and only for this blueprint's requests: the one place to exempt the
    # refresh endpoint from a CSRFProtect set up after us, at no cost to other views.
    bp.url_value_preprocessor(lambda endpoint, values: exempt_from_csrf(current_app))
    return bp


#: The refresh body is ``{"variant": "<reference>"}`` or empty: a few hundred bytes.
MAX_BODY = 4096


def _json_error(status: int, code: str, message: str) -> Response:
    response = jsonify(error=code, code=code, message=message)
    response.status_code = status
    response.headers["Cache-Control"] = "private, no-store"
    return response


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


def _read_reference() -> str | Response | None:
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


def refresh_token() -> ResponseReturnValue:
    """``POST <prefix>/token`` → ``{"token", "expiresAt", "expiresIn"}`` for the current user."""
    response = _refresh()
    if signals.token_refreshed.receivers:
        code = None if response.status_code == 200 else (response.get_json() or {}).get("code")
        signals.token_refreshed.send(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            status=response.status_code,
            code=code,
        )
    return response


def _refresh() -> Response:
    if request.headers.get(REFRESH_HEADER) != "1":
        return _json_error(
            403, "refresh_header_missing", f"the {REFRESH_HEADER}: 1 header is required"
        )
    state = current_app.extensions["toucan"]
    reason = _origin_refusal(state.settings.trusted_origins)
    if reason is not None:
        return _json_error(403, "origin_refused", f"cross-site request refused: {reason}")
    toucan = state.toucan
    try:
        toucan._require_user()  # before the body is read: the server-side user decides
        reference = _read_reference()
        if isinstance(reference, Response):
            return reference
        token = toucan.refresh(reference)
    except ToucanUserRequired:
        return _json_error(401, "session_ended", "no signed-in user")
    except InvalidVariant as exc:
        return _json_error(403, exc.code, str(exc))
    except ToucanAPIError as exc:
        return _json_error(exc.code or 503, "unavailable", "analytics are unavailable")
    except InvalidToucanUser:
        logger.exception("the user_loader returned a user flask_toucan cannot send to Toucan")
        return _json_error(500, "invalid_user", "analytics are unavailable")
    # get_token() marked the request: the app's after_request adds no-store and Vary.
    body = token.to_dict()
    if reference is not None:
        # Signed anew: a page that keeps refreshing keeps its variant past MAX_AGE.
        body["variant"] = state.variants.renew(reference)
    return jsonify(body)


def exempt_from_csrf(app: Flask) -> None:
    """Exempt the refresh endpoint from Flask-WTF's CSRFProtect, if the app uses it.

    Its own defence (custom header + same-origin checks) does not expire, while a
    CSRF form token does (an hour by default), which would end refreshes on pages
    left open.
    """
    csrf = app.extensions.get("csrf")
    if csrf is not None and hasattr(csrf, "exempt"):
        csrf.exempt(REFRESH_VIEW)


def no_store_when_token_sent(response: Response) -> Response:
    """``after_request``: token-bearing responses are private and never stored."""
    rs: RequestState | None = g.get("_toucan")
    if rs is None:
        # Nothing of ours ran yet; a streamed body may still ask for a token, and must
        # find the headers already sent (RequestState.send_token refuses then).
        rs = g._toucan = RequestState(current_app.extensions["toucan"])
    rs.sent = True
    if rs.no_store:
        headers = response.headers
        headers["Cache-Control"] = "private, no-store"
        headers.pop("Expires", None)
        vary = headers.get("Vary")
        if not vary:
            headers["Vary"] = "Cookie"
        elif "cookie" not in vary.lower():
            headers["Vary"] = vary + ", Cookie"
    return response


def debug_checks(response: Response) -> Response:
    """Debug mode only: warn about pages that cannot work or tokens minted for nothing."""
    rs: RequestState | None = g.get("_toucan")
    if rs is not None and rs.decorated and not rs.used:
        logger.warning(
            "%s is decorated with @toucan.inject_token but its response never used the token "
            "(no toucan_dashboard/toucan_assistant/toucan_token): a mint for nothing. Remove "
            "the decorator, or ignore this if the view reads g.toucan_token itself",
            request.endpoint,
        )
    if response.is_streamed or response.mimetype != "text/html":
        return response
    body = response.get_data()
    if (b"<tc-dashboard" in body or b"<tc-ai-assistant" in body) and not _has_toucan_script(body):
        logger.warning(
            "%s renders a Toucan component but no Toucan script: the component stays blank. "
            "Add {{ toucan_script() }} to the page (or its layout)",
            request.endpoint,
        )
    return response


def _has_toucan_script(body: bytes) -> bool:
    state = current_app.extensions["toucan"]
    s = state.settings
    urls = [i.script_url for i in [s.default_instance, *s.instances.values()]]
    needles = [u.encode() for u in urls] + [b"toucan-preview.js", b"data-toucan-refresh"]
    return any(n in body for n in needles)
