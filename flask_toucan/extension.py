"""The ``Toucan`` extension: config, the per-request user, tokens for views and templates."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar, overload

from flask import (
    Flask,
    Response,
    current_app,
    g,
    has_app_context,
    has_request_context,
    render_template,
    request,
    url_for,
)
from flask_caching import Cache
from markupsafe import Markup

from . import jinja
from .cache import CacheBackend, TokenCache
from .cli import toucan_cli
from .errors import ToucanAPIError, ToucanConfigError, ToucanUserRequired
from .settings import Settings, apply_defaults, read_settings
from .state import AppState, RequestState
from .tokens import EmbedToken, ToucanUser, now
from .variants import TokenVariants
from .views import create_blueprint, exempt_from_csrf

__all__ = ["Toucan"]

logger = logging.getLogger("flask_toucan")

P = ParamSpec("P")
R = TypeVar("R")
UserLoader = Callable[[], "ToucanUser | Mapping[str, Any] | None"]

EXTENSION_KEY = "toucan"


def _url(state: AppState, endpoint: str, **values: Any) -> str:
    """``url_for`` memoised per script root: these URLs never change within an app."""
    memo_key = (request.script_root, endpoint, *sorted(values.items()))
    found = state.urls.get(memo_key)
    if found is None:
        found = state.urls[memo_key] = url_for(endpoint, **values)
    return found


def _current_request_state() -> RequestState | None:
    if not has_request_context():
        return None
    found: RequestState | None = g.get("_toucan_request")
    return found


class Toucan:
    """Embeds Toucan AI for the signed-in users of one or more Flask apps.

    ``Toucan(app)``, or ``Toucan()`` then ``init_app(app)`` in an app factory.
    Pass ``cache=`` a :class:`flask_caching.Cache` to share the app's own cache.
    """

    def __init__(self, app: Flask | None = None, *, cache: Cache | None = None) -> None:
        self._cache = cache
        self._user_loader: UserLoader | None = None
        if app is not None:
            self.init_app(app)

    # -- setup --------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "flask_toucan is already initialised on this app; call init_app once per app"
            )
        apply_defaults(app.config)
        settings = read_settings(app.config)
        token_cache = TokenCache(
            self._cache_backend(app, settings),
            min_ttl=settings.min_token_ttl,
            refresh_ahead=settings.refresh_ahead,
            lock_timeout=settings.lock_timeout,
            lock_wait=settings.lock_wait,
            front_size=settings.front_cache_size,
            front_ttl=settings.front_cache_ttl,
        )
        variants = TokenVariants(lambda: app.secret_key)
        app.extensions[EXTENSION_KEY] = AppState(self, settings, token_cache, variants)

        app.register_blueprint(create_blueprint(settings.url_prefix))
        # CSRFProtect may be set up before or after us; cover both orders.
        exempt_from_csrf(app)
        app.before_request(lambda: exempt_from_csrf(current_app))
        app.cli.add_command(toucan_cli)
        app.add_template_global(self.script, "toucan_script")
        app.add_template_global(self.dashboard, "toucan_dashboard")
        app.add_template_global(self.chart, "toucan_chart")
        app.add_template_global(self.assistant, "toucan_assistant")
        app.add_template_global(self.current_token, "toucan_token")
        app.context_processor(_token_context)
        app.after_request(_no_store_when_token_sent)

    def _cache_backend(self, app: Flask, settings: Settings) -> CacheBackend:
        if self._cache is not None:
            # The app's Cache may be initialised after us; use it through its
            # own methods, which resolve the backend in the app context.
            return self._cache
        config: dict[str, Any] = {
            "CACHE_TYPE": "flask_toucan.cache.TokenSimpleCache",
            "CACHE_THRESHOLD": 10_000,
            "CACHE_KEY_PREFIX": "",  # TOUCAN_CACHE_KEY_PREFIX already namespaces our keys
        }
        config.update(settings.cache_config or {})
        plain_redis = str(config["CACHE_TYPE"]).rsplit(".", 1)[-1] in ("RedisCache", "redis")
        if plain_redis and not config.get("CACHE_OPTIONS"):
            # A Redis that hangs must not hang page views: fail fast, mint directly.
            config["CACHE_OPTIONS"] = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
        cache = Cache(config=config)
        try:
            cache.init_app(app)
        except Exception as exc:
            raise ToucanConfigError(
                f"TOUCAN_CACHE_CONFIG could not be used: {type(exc).__name__}: {exc}"
            ) from None
        backend: CacheBackend = app.extensions["cache"][cache]
        return backend

    def user_loader(self, loader: UserLoader) -> UserLoader:
        """Register the function returning the current user as a ToucanUser (or None)."""
        self._user_loader = loader
        return loader

    # -- users and tokens ---------------------------------------------------

    def _state(self) -> AppState:
        if not has_app_context():
            raise RuntimeError(
                "flask_toucan needs an application context; use it inside a request "
                "or `with app.app_context():`"
            )
        state = current_app.extensions.get(EXTENSION_KEY)
        if not isinstance(state, AppState) or state.toucan is not self:
            raise RuntimeError(
                "this Toucan instance is not initialised on the current app; "
                "did you forget toucan.init_app(app)?"
            )
        return state

    def _request_state(self) -> RequestState | None:
        """This request's state (made on first use), or None outside a request."""
        rs = _current_request_state()
        if rs is None and has_request_context():
            rs = RequestState(self._state())
            g._toucan_request = rs
        elif rs is not None and rs.app_state.toucan is not self:
            self._state()  # raises the "not initialised on this app" error
        return rs

    def current_user(self) -> ToucanUser | None:
        """The request's user from the ``user_loader``, loaded at most once per request."""
        rs = self._request_state()
        if rs is None:
            return None
        if not rs.loaded:
            if self._user_loader is None:
                raise ToucanConfigError(
                    "no user loader: decorate a function returning a ToucanUser "
                    "with @toucan.user_loader"
                )
            loaded = self._user_loader()
            default_role = rs.app_state.settings.default_role
            rs.user = None if loaded is None else ToucanUser.coerce(loaded, default_role)
            rs.loaded = True
        return rs.user

    def _require_user(self) -> ToucanUser:
        user = self.current_user()
        if user is None:
            raise ToucanUserRequired()
        return user

    def get_token(
        self, user: ToucanUser | Mapping[str, Any] | None = None, *, force: bool = False
    ) -> EmbedToken:
        """A token for ``user`` (default: the request's user), cached while it has life left."""
        rs = self._request_state()
        state = rs.app_state if rs is not None else self._state()
        resolved = (
            self._require_user()
            if user is None
            else ToucanUser.coerce(user, state.settings.default_role)
        )
        key = state.key_for(resolved)
        if rs is not None:
            rs.no_store = True
            if not force and key in rs.tokens:
                return rs.tokens[key]
        token = state.cache.get_or_mint(key, lambda: state.client().mint(resolved), force=force)
        if rs is not None:
            rs.tokens[key] = token
        return token

    def invalidate(self, user: ToucanUser | Mapping[str, Any]) -> None:
        """Forget the cached token of ``user`` (exactly this identity)."""
        state = self._state()
        resolved = ToucanUser.coerce(user, state.settings.default_role)
        key = state.key_for(resolved)
        state.cache.delete(key)
        rs = _current_request_state()
        if rs is not None:
            rs.tokens.pop(key, None)

    @overload
    def inject_token(self, view: Callable[P, R]) -> Callable[P, R]: ...

    @overload
    def inject_token(
        self,
        view: None = None,
        *,
        role: str | None = None,
        permissions: Mapping[str, Any] | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    def inject_token(
        self,
        view: Callable[P, R] | None = None,
        *,
        role: str | None = None,
        permissions: Mapping[str, Any] | None = None,
    ) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
        """Mint (or reuse) the user's token before the view runs; 401 without a user.

        The token is ``g.toucan_token`` and ``toucan_token`` in templates; the
        response gets ``Cache-Control: private, no-store``.
        """
        overrides: dict[str, Any] = {}
        if role is not None:
            overrides["role"] = role
        if permissions is not None:
            overrides["permissions"] = permissions

        def prepare() -> None:
            user = self._require_user()
            if overrides:
                user = user.replace(**overrides)
            rs = _current_request_state()
            assert rs is not None
            try:
                token = self.get_token(user)
            except ToucanAPIError as exc:
                if rs.app_state.settings.on_error != "placeholder":
                    raise
                # The page renders; its components become placeholders.
                logger.warning("Toucan token unavailable, rendering placeholders: %s", exc)
                rs.error = exc
                return
            rs.token = token
            rs.variant = (user, overrides) if overrides else None
            g.toucan_token = token

        def decorate(func: Callable[P, R]) -> Callable[P, R]:
            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                    prepare()
                    return await func(*args, **kwargs)

                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(func)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                prepare()
                return func(*args, **kwargs)

            return wrapper

        if view is not None:
            return decorate(view)
        return decorate

    # -- template globals ---------------------------------------------------

    def current_token(self) -> EmbedToken:
        """``toucan_token()``: the decorated view's token, or the user's, minted lazily."""
        rs = self._request_state()
        if rs is not None:
            if rs.token is not None:
                return rs.token
            if rs.error is not None:
                raise rs.error  # already failed in this request: don't ask Toucan again
        return self.get_token()

    def script(self, **attrs: object) -> Markup:
        """``toucan_script()``: the web-components module (and the refresh controller)."""
        state = self._state()
        nonce = _csp_nonce()
        if state.settings.preview:
            src = _url(state, "toucan.static", filename="toucan-preview.js")
        else:
            src = state.settings.script_url
        # Reused for 100 ms: the clock the tag carries is at most that stale.
        tick = int(now() * 10)
        memo_key = (request.script_root, nonce, tick) if not attrs else None
        if memo_key is not None and state.script_memo[0] == memo_key:
            return state.script_memo[1]  # same tags as the last page, within 100 ms
        extra = {jinja.attribute_name(k): v for k, v in attrs.items()}
        html = jinja.script_html(src, nonce, extra)
        if state.settings.refresh:
            html += jinja.script_html(
                _url(state, "toucan.static", filename="toucan-refresh.js"),
                nonce,
                {
                    "data-toucan-refresh": _url(state, "toucan.refresh_token"),
                    "data-strategy": state.settings.refresh_strategy,
                    "data-margin": state.settings.min_token_ttl,
                    "data-server-now": jinja._epoch(now()),
                },
            )
        if memo_key is not None:
            state.script_memo = (memo_key, html)
        return html

    def dashboard(self, dashboard_id: str, /, **attrs: object) -> Markup:
        """``toucan_dashboard(id)``: a ``<tc-dashboard>`` for the current user."""
        return self._component("tc-dashboard", {"dashboard-id": dashboard_id}, attrs)

    def chart(self, chart_id: str, /, **attrs: object) -> Markup:
        """``toucan_chart(id)``: a ``<tc-dashboard chart-id=...>`` showing one chart."""
        return self._component("tc-dashboard", {"chart-id": chart_id}, attrs)

    def assistant(self, **attrs: object) -> Markup:
        """``toucan_assistant()``: the ``<tc-ai-assistant>`` chat."""
        return self._component("tc-ai-assistant", {}, attrs)

    def _component(self, tag: str, fixed: dict[str, object], attrs: Mapping[str, object]) -> Markup:
        rs = self._request_state()
        state = rs.app_state if rs is not None else self._state()
        try:
            token = self.current_token()
        except ToucanAPIError as exc:
            if state.settings.on_error != "placeholder":
                raise
            if rs is not None:
                rs.error = exc
                rs.no_store = True
            return _placeholder(tag, fixed, attrs)
        variant = rs.variant if rs is not None else None
        if variant is not None and state.settings.refresh:
            fixed = {**fixed, "data-toucan-variant": state.variants.sign(*variant)}
        return jinja.component_html(tag, token, state.settings.server_url, fixed, attrs)


def _placeholder(tag: str, fixed: Mapping[str, object], attrs: Mapping[str, object]) -> Markup:
    """What stands in for a component when no token could be had (TOUCAN_ON_ERROR)."""
    layout = {
        jinja.attribute_name(k): v
        for k, v in attrs.items()
        if k in ("style", "class_", "class", "id")
    }
    html = render_template(
        "toucan/unavailable.html",
        kind="assistant" if tag == "tc-ai-assistant" else "dashboard",
        item_id=fixed.get("dashboard-id") or fixed.get("chart-id"),
        layout=jinja.html_attributes(layout),
    )
    return Markup(html)  # noqa: S704 - rendered by an autoescaped template


def _csp_nonce() -> str | None:
    # Flask-Talisman (and look-alikes) expose the request's nonce as a Jinja global.
    nonce_fn = current_app.jinja_env.globals.get("csp_nonce")
    if callable(nonce_fn) and has_request_context():
        nonce = nonce_fn()
        return str(nonce) if nonce else None
    return None


def _token_context() -> dict[str, Any]:
    rs = _current_request_state()
    return {"toucan_token": rs.token} if rs is not None and rs.token is not None else {}


def _no_store_when_token_sent(response: Response) -> Response:
    rs = _current_request_state()
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
