"""The request side: the request's user and token, the template globals, the response hook.

Flask-Login's shape: :class:`ToucanState` is what ``app.extensions["toucan"]`` holds
for one app, and module-level functions find it through ``current_app`` and cache what
one request learns in ``g._toucan_*``:

``_toucan_user``      the user from the ``user_loader`` (absent: not loaded yet)
``_toucan_token``     (the user it was minted for, the page's ``EmbedToken``)
``_toucan_error``     why there is no token (``TOUCAN_ON_ERROR = "placeholder"``)
``_toucan_instance``  the Toucan instance of this page's script and components
``_toucan_variant``   the ``inject_token(role=...)`` variant of the view
``_toucan_private``   a token went out: ``Cache-Control: private, no-store``
``_toucan_sent``      the response headers are final (``after_request`` ran)

Nothing is stored for a request that never uses flask_toucan. The token is kept
with the user it was minted for, so a sign-in or sign-out within the request
(Flask-Login's signals) is seen by the helpers rendered after it.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from flask import current_app, g, has_app_context, has_request_context, render_template, session
from flask import url_for as flask_url_for
from markupsafe import Markup
from werkzeug.local import LocalProxy
from werkzeug.wrappers import Response

from . import markup
from .errors import (
    InvalidToucanUser,
    InvalidVariant,
    ToucanAPIError,
    ToucanConfigError,
    ToucanForbidden,
    ToucanUserRequired,
)
from .identity import ToucanUser
from .tokens import EmbedToken, now
from .variants import Variant

if TYPE_CHECKING:
    from .service import TokenService
    from .settings import Settings

__all__ = [
    "NOT_SET_UP",
    "SESSION_BINDING",
    "ToucanState",
    "after_request",
    "current_token",
    "get_state",
    "load_user",
    "refresh_token",
    "require_user",
    "template_globals",
]

logger = logging.getLogger("flask_toucan")

P = ParamSpec("P")
R = TypeVar("R")
UserLoader = Callable[[], "ToucanUser | Mapping[str, Any] | None"]

_MISSING: Any = object()

#: What is said where flask_toucan is asked for on an app it was not set up on.
NOT_SET_UP = "flask_toucan is not set up on this app (call Toucan(app) or toucan.init_app(app))"

#: The session key holding the random value variant references are bound to.
SESSION_BINDING = "_toucan_binding"


class ToucanState:
    """flask_toucan on one app: ``app.extensions["toucan"]``.

    ``extension`` is the :class:`~flask_toucan.Toucan` set up on the app, ``service``
    its :class:`~flask_toucan.service.TokenService` (tokens, their cache and minting).
    """

    __slots__ = ("__weakref__", "extension", "service", "warned_assistant")

    def __init__(self, extension: Any, service: TokenService) -> None:
        self.extension = extension
        self.service = service
        self.warned_assistant = False  # debug mode: the ai permission, said once

    @property
    def settings(self) -> Settings:
        return self.service.settings

    @property
    def user_loader(self) -> UserLoader | None:
        loader: UserLoader | None = self.extension.loader
        return loader

    def __repr__(self) -> str:
        return f"<ToucanState of {self.extension!r}>"


def get_state() -> ToucanState:
    """The current app's :class:`ToucanState`; a RuntimeError that says what to do otherwise."""
    if not has_app_context():
        raise RuntimeError(
            "flask_toucan needs an application context; use it inside a request "
            "or `with app.app_context():`"
        )
    state = current_app.extensions.get("toucan")
    if not isinstance(state, ToucanState):
        raise RuntimeError(NOT_SET_UP)
    return state


# -- the user ----------------------------------------------------------------------


def load_user() -> ToucanUser | None:
    """The request's user from the ``user_loader``, loaded once per request (again after
    a sign-in or sign-out within it); None outside a request or without a user."""
    if not has_request_context():
        return None
    user: ToucanUser | None = g.get("_toucan_user", _MISSING)
    if user is _MISSING:
        loader = get_state().user_loader
        if loader is None:
            raise ToucanConfigError(
                "no user loader: decorate a function returning a ToucanUser "
                "with @toucan.user_loader"
            )
        loaded = loader()
        user = g._toucan_user = None if loaded is None else ToucanUser.coerce(loaded)
    return user


def require_user() -> ToucanUser:
    """The request's user; ToucanUserRequired (401) without one (or outside a request)."""
    user = load_user()
    if user is None:
        raise ToucanUserRequired()
    return user


def user_changed(sender: Any, **extra: Any) -> None:
    """Flask-Login signed a user in or out within this request (sender: the app)."""
    if has_request_context():
        g.pop("_toucan_user", None)
        g.pop("_toucan_error", None)
        # A sign-in or sign-out starts a new binding: references of pages rendered
        # before it are refused by the refresh endpoint from now on.
        if sender.secret_key:
            session.pop(SESSION_BINDING, None)
    state = sender.extensions["toucan"]
    if extra.get("signal") != "out" and state.settings.prefetch_on_login:
        state.extension.prefetch()


def session_binding() -> str:
    """This browser session's binding for variant references (made on first use)."""
    value = session.get(SESSION_BINDING)
    if not isinstance(value, str):
        value = session[SESSION_BINDING] = secrets.token_urlsafe(16)
    return value


# -- the token ---------------------------------------------------------------------


def mark_private() -> None:
    """The response carries a token: ``Cache-Control: private, no-store``."""
    if g.get("_toucan_sent") and not g.get("_toucan_private"):
        # A streamed response: its headers went out without no-store, so a shared
        # cache could keep this token for everyone. Refuse.
        raise ToucanConfigError(
            "a token was needed after the response headers were sent (a streamed "
            "template?): decorate the view with @toucan.inject_token so the token "
            "is minted, and the response marked private, before streaming starts"
        )
    g._toucan_private = True


def _same_instance(instance: str | None) -> str | None:
    """One Toucan instance per page: its script and every component must agree."""
    chosen = g.get("_toucan_instance", _MISSING)
    if chosen is not _MISSING and chosen != instance:
        raise ToucanConfigError(
            f"this page mixes Toucan instances {chosen!r} and {instance!r}: one "
            "page loads one instance's script; render each instance on its own page"
        )
    g._toucan_instance = instance
    return instance


def page_token(state: ToucanState) -> EmbedToken | None:
    """The token of this request's components, for the request's current identity.

    None means "render placeholders": the mint failed and TOUCAN_ON_ERROR is
    ``placeholder`` (the one place that rule is applied).
    """
    if "_toucan_error" in g:
        return None
    user = require_user()
    held: tuple[ToucanUser, EmbedToken] | None = g.get("_toucan_token")
    if held is not None and held[0] is user:
        return held[1]  # the same identity as when it was minted
    variant: Variant | None = g.get("_toucan_variant")
    try:
        sent = variant.apply(user) if variant is not None else user
        _same_instance(sent.instance)
        mark_private()
        token = state.service.get(sent)[0]
    except (ToucanAPIError, InvalidToucanUser) as exc:
        if state.settings.on_error != "placeholder":
            raise
        logger.warning("Toucan token unavailable, rendering placeholders: %s", exc)
        g._toucan_error = exc
        g._toucan_private = True
        return None
    g._toucan_token = (user, token)
    return token


def get_token(state: ToucanState, user: ToucanUser | None, force: bool) -> EmbedToken:
    """``Toucan.get_token``: the request's own token when it is the same identity."""
    if not has_request_context():
        if user is None:
            raise ToucanUserRequired()
        return state.service.get(user, force=force)[0]
    if user is None:
        user = require_user()
    mark_private()
    held: tuple[ToucanUser, EmbedToken] | None = g.get("_toucan_token")
    if held is not None and not force and "_toucan_variant" not in g and held[0] == user:
        state.service.served(user, "request")
        return held[1]
    return state.service.get(user, force=force)[0]


def _current_token() -> EmbedToken:
    """What :data:`current_token` stands for."""
    if not has_request_context():
        return get_token(get_state(), None, False)
    g._toucan_used = True
    token = page_token(get_state())
    if token is None:
        # Placeholder mode: Jinja renders its attributes as undefined (empty).
        raise AttributeError("no Toucan token: the mint failed (TOUCAN_ON_ERROR = 'placeholder')")
    return token


class _TokenProxy(LocalProxy):  # type: ignore[type-arg]
    """A LocalProxy of the request's token. ``toucan_token()`` (the older template
    spelling) returns the token; a bare ``str()`` refuses rather than print a stand-in."""

    __slots__ = ()

    def __call__(self) -> EmbedToken:
        return self._get_current_object()  # type: ignore[no-any-return]

    def __str__(self) -> str:
        raise TypeError(
            "current_token is an EmbedToken: write {{ toucan_token.value }} (or "
            "{{ toucan_token }} in an autoescaped template) for the token itself"
        )


#: This request's :class:`~flask_toucan.EmbedToken` (the decorated view's, or minted on
#: first use): ``toucan_token`` in templates, where ``{{ toucan_token }}`` is its value.
current_token: EmbedToken = _TokenProxy(_current_token)  # type: ignore[assignment]


# -- the decorated view ----------------------------------------------------------------


def inject(func: Callable[P, R], variant: Variant) -> Callable[P, R]:
    """``@toucan.inject_token``'s wrapper: the user's (or the variant's) token before
    the view runs; 401 without a user, 403 when ``allow()`` refuses."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        state = get_state()
        require_user()
        if variant.allow is not None and not variant.allow():
            raise ToucanForbidden()
        if variant.overrides:
            g._toucan_variant = variant
            if current_app.secret_key and state.settings.refresh:
                # Before the view runs: a streamed page has sent its headers (and
                # its session cookie) before its components render.
                session_binding()
        g._toucan_decorated = True
        page_token(state)
        # Flask's own sync/async bridge, as Flask-Login's login_required uses it.
        return current_app.ensure_sync(func)(*args, **kwargs)  # type: ignore[no-any-return]

    return wrapper


def refresh_token(reference: str | None) -> tuple[EmbedToken, str | None]:
    """The refresh endpoint's token (the current user's, or a page variant's) and the
    variant reference signed anew.

    Raises ToucanUserRequired (no user), InvalidVariant (the reference is not valid
    for this user now, ``allow()`` included), InvalidToucanUser or a ToucanAPIError.
    """
    state = get_state()
    user = require_user()
    renewed = None
    if reference is not None:
        variants = state.service.variants
        variant = variants.resolve(reference, user, session.get(SESSION_BINDING))
        if not variant.allowed():
            raise InvalidVariant("access_revoked", "allow() refused this user")
        user = variant.apply(user)
        renewed = variants.renew(reference)
    mark_private()
    return state.service.get(user)[0], renewed


# -- template globals ------------------------------------------------------------------


def toucan_script(**attrs: object) -> Markup:
    """``toucan_script()``: the web-components module (and the refresh controller).

    With TOUCAN_INSTANCES, the module of the current user's instance.
    """
    state = get_state()
    service = state.service
    s = service.settings
    instance = None
    if s.instances and has_request_context():
        user = load_user()
        instance = _same_instance(user.instance if user else None)
    nonce = csp_nonce()
    src = flask_url_for("toucan.static", filename="toucan-preview.js") if s.preview else None
    extra = {markup.attribute_name(k): v for k, v in attrs.items()}
    try:
        script_url = service.instance(instance).script_url
    except InvalidToucanUser:
        script_url = s.script_url  # the components will say what is wrong
    html = markup.script_html(src or script_url, nonce, extra)
    if s.refresh:
        html += markup.script_html(
            flask_url_for("toucan.static", filename="toucan-refresh.js"),
            nonce,
            {
                "data-toucan-refresh": flask_url_for("toucan.refresh_token"),
                "data-strategy": s.refresh_strategy,
                "data-margin": s.min_token_ttl,
                "data-server-now": markup.epoch(now()),
            },
        )
    return html


def toucan_dashboard(dashboard_id: str, /, **attrs: object) -> Markup:
    """``toucan_dashboard(id)``: a ``<tc-dashboard>`` for the current user."""
    return _component("tc-dashboard", {"dashboard-id": dashboard_id}, attrs)


def toucan_chart(chart_id: str, /, **attrs: object) -> Markup:
    """``toucan_chart(id)``: a ``<tc-dashboard chart-id=...>`` showing one chart."""
    return _component("tc-dashboard", {"chart-id": chart_id}, attrs)


def toucan_assistant(**attrs: object) -> Markup:
    """``toucan_assistant()``: the ``<tc-ai-assistant>`` chat."""
    html = _component("tc-ai-assistant", {}, attrs)
    if current_app.debug:
        _check_assistant_permission(get_state())
    return html


def _check_assistant_permission(state: ToucanState) -> None:
    """Debug mode, once: the assistant answers only tokens with ``{"ai": "can_query"}``."""
    if state.warned_assistant:
        return
    user = require_user()
    variant: Variant | None = g.get("_toucan_variant")
    if variant is not None:
        user = variant.apply(user)
    if (user.permissions or {}).get("ai") == "can_query":
        return
    state.warned_assistant = True
    from flask import request

    logger.warning(
        "%s renders toucan_assistant() with a token whose permissions lack "
        '{"ai": "can_query"}: Toucan\'s assistant will not answer. Return '
        'permissions={"ai": "can_query"} from your user_loader for the users who may ask; '
        "only to give it to a page alone, decorate the view with "
        '@toucan.inject_token(permissions={"ai": "can_query"}, allow=...)',
        request.endpoint,
    )


def _component(tag: str, fixed: dict[str, object], attrs: Mapping[str, object]) -> Markup:
    if not has_request_context():
        raise RuntimeError("toucan_dashboard() and friends render inside a request")
    state = get_state()
    g._toucan_used = True
    token = page_token(state)
    if token is None:
        return placeholder(tag, fixed, attrs)
    service = state.service
    variant: Variant | None = g.get("_toucan_variant")
    if variant is not None and service.settings.refresh:
        binding = session_binding() if current_app.secret_key else None
        reference = service.variants.sign(variant, require_user(), binding)
        fixed = {**fixed, "data-toucan-variant": reference}
    server_url = service.instance(g.get("_toucan_instance")).server_url
    return markup.component_html(tag, token, server_url, fixed, attrs)


def toucan_result(visualization: object, /, **attrs: object) -> Markup:
    """``toucan_result(visualization)``: a ``<tc-result-renderer>`` showing one of
    :attr:`ToucanAnswer.visualizations` (its payload goes in as data, never markup)."""
    nonce = csp_nonce()
    html = markup.result_html(visualization, nonce, attrs)
    if has_request_context() and not g.get("_toucan_results"):
        g._toucan_results = True
        g._toucan_private = True  # the user's own data, scoped by Row-Level Security
        src = flask_url_for("toucan.static", filename="toucan-result.js")
        html = markup.script_html(src, nonce) + html
    return html


def template_globals() -> dict[str, Any]:
    """The names templates see: plain functions, and ``toucan_token``."""
    return {
        "toucan_script": toucan_script,
        "toucan_dashboard": toucan_dashboard,
        "toucan_chart": toucan_chart,
        "toucan_assistant": toucan_assistant,
        "toucan_result": toucan_result,
        "toucan_token": current_token,
    }


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


# -- the response ----------------------------------------------------------------------


def after_request(response: Response) -> Response:
    """Token-bearing responses are private and never stored (and, in debug mode,
    pages that cannot work are pointed out). A response that used nothing of ours
    costs one flag: a streamed body that asks for a token later must find the
    headers already sent (:func:`mark_private` refuses then)."""
    g._toucan_sent = True
    if "_toucan_private" in g:
        headers = response.headers
        headers["Cache-Control"] = "private, no-store"
        headers.pop("Expires", None)
        vary = headers.get("Vary")
        if not vary:
            headers["Vary"] = "Cookie"
        elif "cookie" not in vary.lower():
            headers["Vary"] = vary + ", Cookie"
    if current_app.debug:
        _debug_checks(response)
    return response


def _debug_checks(response: Response) -> None:
    """Debug mode only: warn about pages that cannot work or tokens minted for nothing."""
    from flask import request

    if g.get("_toucan_decorated") and not g.get("_toucan_used"):
        logger.warning(
            "%s is decorated with @toucan.inject_token but its response never used the token "
            "(no toucan_dashboard/toucan_assistant/toucan_token): a mint for nothing. Remove "
            "the decorator, or ignore this if the view reads flask_toucan.current_token itself",
            request.endpoint,
        )
    if response.is_streamed or response.mimetype != "text/html":
        return
    body = response.get_data()
    if (b"<tc-dashboard" in body or b"<tc-ai-assistant" in body) and not _has_script(body):
        logger.warning(
            "%s renders a Toucan component but no Toucan script: the component stays blank. "
            "Add {{ toucan_script() }} to the page (or its layout)",
            request.endpoint,
        )


def _has_script(body: bytes) -> bool:
    s = get_state().settings
    urls = [i.script_url for i in [s.default_instance, *s.instances.values()]]
    needles = [u.encode() for u in urls] + [b"toucan-preview.js", b"data-toucan-refresh"]
    return any(n in body for n in needles)
