"""``Toucan``: the request side. Set-up, the request's user and token, the template globals.

A page view goes: the view's decorator (or a template helper) → :class:`Toucan` →
the app's :class:`~flask_toucan.service.TokenService` → storage and minters. What a
request learns (its user, its token, why there is none) lives in one
:class:`RequestState` under ``g._toucan``; its token is kept for the identity it was
computed for, so a sign-in or sign-out within the request (Flask-Login's signals)
is seen by the helpers rendered after it.
"""

from __future__ import annotations

import functools
import inspect
import logging
import secrets
import weakref
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from flask import (
    Flask,
    current_app,
    g,
    has_app_context,
    has_request_context,
    render_template,
    session,
)
from flask import url_for as flask_url_for
from flask_caching import Cache
from markupsafe import Markup
from werkzeug.wrappers import Response

from . import cli, markup
from .cache import backend_for
from .errors import (
    InvalidToucanUser,
    InvalidVariant,
    ToucanAPIError,
    ToucanConfigError,
    ToucanForbidden,
    ToucanUserRequired,
)
from .identity import ToucanUser
from .service import TokenService
from .settings import (
    apply_defaults,
    defer_config_error,
    read_settings,
    removed_keys,
    unknown_keys,
)
from .tokens import EmbedToken, now
from .variants import TokenVariants, Variant, VariantRegistry
from .views import install

if TYPE_CHECKING:
    from mcp.client.session import ClientSession
    from requests import Session

    from .mcp import Caller, ToucanAnswer

__all__ = ["CurrentToken", "RequestState", "Toucan"]

logger = logging.getLogger("flask_toucan")

P = ParamSpec("P")
R = TypeVar("R")
UserLoader = Callable[[], "ToucanUser | Mapping[str, Any] | None"]
AnyUser = ToucanUser | Mapping[str, Any]

_UNSET: Any = object()  # RequestState.instance before the page picked one


class RequestState:
    """What one request knows, in ``g._toucan``: its user, and its page token with the
    identity it was minted for."""

    __slots__ = (
        "decorated", "error", "instance", "loaded", "no_store", "owner", "results", "sent",
        "service", "token", "token_for", "used", "user", "variant",
    )  # fmt: skip

    def __init__(self, owner: object, service: TokenService) -> None:
        self.owner = owner  # the Toucan instance this request state belongs to
        self.service = service
        self.loaded = False
        self.user: ToucanUser | None = None
        self.token: EmbedToken | None = None  # the token of this request's components
        self.token_for: ToucanUser | None = None  # ...and the user it was minted for
        self.error: Exception | None = None  # why there is none (placeholder mode)
        # The Toucan instance of this page's script and components, once one is rendered.
        self.instance: Any = _UNSET
        # inject_token(role=...): the variant (its overrides apply to the current user)
        self.variant: Variant | None = None
        self.no_store = False  # a token went out: Cache-Control private, no-store
        self.sent = False  # the response headers are final (after_request has run)
        self.decorated = False  # a view decorated with inject_token ran (debug checks)
        self.used = False  # a helper or toucan_token used this request's token (debug checks)
        self.results = False  # toucan_result() rendered (its controller script went out)

    def user_changed(self) -> None:
        """The signed-in user changed within this request: load it again."""
        self.loaded = False
        self.error = None

    def send_token(self) -> None:
        """Mark the response as carrying a token: ``Cache-Control: private, no-store``."""
        if self.sent and not self.no_store:
            # A streamed response: its headers went out without no-store, so a shared
            # cache could keep this token for everyone. Refuse.
            raise ToucanConfigError(
                "a token was needed after the response headers were sent (a streamed "
                "template?): decorate the view with @toucan.inject_token so the token "
                "is minted, and the response marked private, before streaming starts"
            )
        self.no_store = True


class Toucan:
    """Embeds Toucan AI for the signed-in users of one or more Flask apps.

    ``Toucan(app)``, or ``Toucan()`` then ``init_app(app)`` in an app factory.
    Pass ``cache=`` a :class:`flask_caching.Cache` to share the app's own cache, and
    ``service_options=`` keyword arguments of :class:`~flask_toucan.service.TokenService`
    to tune it (``refresh_ahead``, ``lock_timeout``, ``lock_wait``, ``front_cache_size``,
    ``front_cache_ttl``, ``preview_lifetime``).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        cache: Cache | None = None,
        service_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._app_cache = cache
        self._service_options = dict(service_options or {})
        self._user_loader: UserLoader | None = None
        self._warned_assistant = False  # debug mode: the ai permission, said once
        self.variants = VariantRegistry()
        # The services of the apps this instance was set up on (not keeping them alive).
        self._services: weakref.WeakSet[TokenService] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, service_options: Mapping[str, Any] | None = None) -> None:
        """Set flask_toucan up on ``app``; ``service_options`` (for this app) add to or
        replace the constructor's."""
        if "toucan" in app.extensions:
            raise RuntimeError(
                "flask_toucan is already initialised on this app; call init_app once per app"
            )
        apply_defaults(app.config)
        for key, suggestion in unknown_keys(app.config).items():
            logger.warning(
                "unknown config key %s%s",
                key,
                f"; did you mean {suggestion}?" if suggestion else "",
            )
        for key, replacement in removed_keys(app.config).items():
            logger.warning("config key %s was removed and has no effect: %s", key, replacement)
        options = {**self._service_options, **(service_options or {})}
        try:
            settings = read_settings(app.config)
            backend = backend_for(app, settings, self._app_cache)
        except ToucanConfigError as exc:
            if not cli.deferring_config_errors():
                raise
            # Loaded by `flask toucan ...`: the command reports the error (✗) instead.
            defer_config_error(app, exc)
            return
        if settings.preview and settings.api_key is not None:
            logger.warning(
                "TOUCAN_PREVIEW is on while TOUCAN_API_KEY is set: pages show stand-ins and "
                "Toucan is never called; set TOUCAN_PREVIEW = False to use the key"
            )
        variants = TokenVariants(lambda: app.secret_key, self.variants, settings.variant_max_age)
        try:
            service = TokenService(settings, backend, variants, app=app, **options)
        except TypeError as exc:
            raise ToucanConfigError(
                f"service_options: {exc}; see TokenService in the API reference"
            ) from None
        service.has_user_loader = lambda: self._user_loader is not None
        self._services.add(service)
        app.extensions["toucan"] = service
        install(app, settings, refresh=self.refresh, require_user=self.require_user)
        app.after_request(self._after_request)
        app.cli.add_command(cli.toucan_cli)
        app.add_template_global(self.script, "toucan_script")
        app.add_template_global(self.dashboard, "toucan_dashboard")
        app.add_template_global(self.chart, "toucan_chart")
        app.add_template_global(self.assistant, "toucan_assistant")
        app.add_template_global(self.result, "toucan_result")
        app.add_template_global(CurrentToken(self), "toucan_token")
        _connect_login(app, self._user_changed, required=settings.prefetch_on_login)

    def user_loader(self, loader: UserLoader) -> UserLoader:
        """Register the function returning the current user as a ToucanUser (or None).

        Unlike Flask-Login's, it takes no argument: it reads the signed-in user itself
        (``flask_login.current_user``, your session...). One that needs an argument is
        refused here, at registration, rather than failing on the first request.
        """
        try:
            parameters = inspect.signature(loader).parameters.values()
        except (TypeError, ValueError):  # a builtin or a C callable: nothing to check
            parameters = []  # type: ignore[assignment]
        needed = [
            p.name
            for p in parameters
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if needed:
            name = getattr(loader, "__name__", "the user loader")
            raise ToucanConfigError(
                f"@toucan.user_loader functions take no argument, but {name}() needs "
                f"{', '.join(needed)}: read the signed-in user inside it (e.g. Flask-Login's "
                "current_user) and return a ToucanUser, a mapping with its fields, or None"
            )
        self._user_loader = loader
        return loader

    # -- state ----------------------------------------------------------------

    def _service(self) -> TokenService:
        if not has_app_context():
            raise RuntimeError(
                "flask_toucan needs an application context; use it inside a request "
                "or `with app.app_context():`"
            )
        service = current_app.extensions.get("toucan")
        if not isinstance(service, TokenService) or service not in self._services:
            raise RuntimeError(
                "this Toucan instance is not initialised on the current app; "
                "did you forget toucan.init_app(app)?"
            )
        return service

    def _request(self) -> RequestState | None:
        """This request's state (made on first use), or None outside a request."""
        if not has_request_context():
            return None
        rs: RequestState | None = g.get("_toucan")
        if rs is None or rs.owner is not self:
            rs = g._toucan = RequestState(self, self._service())
        return rs

    def _require_request(self) -> RequestState:
        rs = self._request()
        if rs is None:
            raise RuntimeError("flask_toucan needs a request here: there is no current user")
        return rs

    # -- users and tokens -----------------------------------------------------

    def current_user(self) -> ToucanUser | None:
        """The request's user from the ``user_loader``, loaded at most once per request
        (again after a sign-in or sign-out within it)."""
        rs = self._request()
        return None if rs is None else self._user(rs)

    def _user(self, rs: RequestState) -> ToucanUser | None:
        if not rs.loaded:
            if self._user_loader is None:
                raise ToucanConfigError(
                    "no user loader: decorate a function returning a ToucanUser "
                    "with @toucan.user_loader"
                )
            loaded = self._user_loader()
            rs.user = None if loaded is None else ToucanUser.coerce(loaded)
            rs.loaded = True
        return rs.user

    def require_user(self) -> ToucanUser:
        """The request's user; ToucanUserRequired (401) without one (or outside a request)."""
        rs = self._request()
        if rs is None:
            raise ToucanUserRequired()
        return self._required(rs)

    def _required(self, rs: RequestState) -> ToucanUser:
        user = self._user(rs)
        if user is None:
            raise ToucanUserRequired()
        return user

    def get_token(self, user: AnyUser | None = None, *, force: bool = False) -> EmbedToken:
        """A token for ``user`` (default: the request's user), cached while it has life left."""
        rs = self._request()
        service = rs.service if rs is not None else self._service()
        resolved = self.require_user() if user is None else ToucanUser.coerce(user)
        if rs is not None:
            rs.send_token()
            same = rs.token_for is resolved or rs.token_for == resolved
            if same and not force and rs.token is not None and rs.variant is None:
                service.served(resolved, "request")
                return rs.token
        return service.get(resolved, force=force)[0]

    def prefetch(self, user: AnyUser | None = None) -> None:
        """Mint ``user``'s token (default: the request's) in the background; never raises.

        Free when the token is warm. Goes through the same cache, single-flight and
        checks (TOUCAN_REQUIRED_ATTRIBUTES) as a page, so the next view finds it.
        """
        try:
            resolved = self.require_user() if user is None else ToucanUser.coerce(user)
            self._service().prefetch(resolved)
        except Exception as exc:  # a prefetch must never break the caller (a sign-in)
            logger.warning("prefetching a Toucan token failed: %s", exc)

    def _user_changed(self, sender: Flask, **extra: Any) -> None:
        """Flask-Login signed a user in or out within this request (sender: the app)."""
        if has_request_context():
            rs = g.get("_toucan")
            if rs is not None:
                rs.user_changed()
            # A sign-in or sign-out starts a new binding: references of pages rendered
            # before it are refused by the refresh endpoint from now on.
            if sender.secret_key:
                session.pop(SESSION_BINDING, None)
        signed_in = extra.get("signal") != "out"
        if signed_in and sender.extensions["toucan"].settings.prefetch_on_login:
            self.prefetch()

    def invalidate(self, user: AnyUser) -> None:
        """Forget the cached token of ``user`` (exactly this identity).

        It reaches this process and the shared backend; other processes' front
        caches drop it within their TTL. With the default in-process backend, only
        this process forgets it.
        """
        self._service().invalidate(ToucanUser.coerce(user))

    def _page_token(self, rs: RequestState) -> EmbedToken | None:
        """The token of this request's components, for the request's current identity.

        None means "render placeholders": the mint failed and TOUCAN_ON_ERROR is
        ``placeholder`` (the one place that rule is applied).
        """
        if rs.error is not None:
            return None
        user = self._required(rs)
        if rs.token is not None and rs.token_for is user:
            return rs.token  # the same identity as when it was minted
        rs.token = None
        try:
            if rs.variant is not None:
                user = rs.variant.apply(user)
            rs.instance = self._same_instance(rs, user.instance)
            rs.send_token()
            rs.token = rs.service.get(user)[0]
            rs.token_for = rs.user
        except (ToucanAPIError, InvalidToucanUser) as exc:
            if rs.service.settings.on_error != "placeholder":
                raise
            logger.warning("Toucan token unavailable, rendering placeholders: %s", exc)
            rs.error = exc
            rs.no_store = True
        return rs.token

    @overload
    def inject_token(self, view: Callable[P, R]) -> Callable[P, R]: ...

    @overload
    def inject_token(
        self,
        view: None = None,
        *,
        role: str | None = None,
        permissions: Mapping[str, Any] | None = None,
        allow: Callable[[], bool] | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    def inject_token(
        self,
        view: Callable[P, R] | None = None,
        *,
        role: str | None = None,
        permissions: Mapping[str, Any] | None = None,
        allow: Callable[[], bool] | None = None,
    ) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
        """Get the user's token before the view runs; 401 without a user.

        ``role``/``permissions`` make this view's token a variant of the user's;
        ``allow`` (no arguments, run in the request) must return True for the page
        to render (403 otherwise) and for every refresh of its variant. The token
        is ``g.toucan_token`` and ``toucan_token`` in templates; the response gets
        ``Cache-Control: private, no-store``.
        """
        overrides = {
            name: value
            for name, value in (("role", role), ("permissions", permissions))
            if value is not None
        }

        if overrides and allow is None:
            raise ToucanConfigError(
                "inject_token(role=..., permissions=...) needs allow=: a zero-argument "
                "callable run on every page view and every refresh of this variant (e.g. "
                "allow=lambda: current_user.is_admin). A decorator stacked above only "
                "guards the page, not its refreshes; allow=lambda: True lets every "
                "signed-in user have this variant"
            )

        def decorate(func: Callable[P, R]) -> Callable[P, R]:
            # Only role/permission variants are renewed by reference: register those.
            if overrides:
                variant = self.variants.register(func, overrides, allow)
            else:
                variant = Variant("", {}, allow)

            @functools.wraps(func)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                rs = self._require_request()
                self._required(rs)
                if not variant.allowed():
                    raise ToucanForbidden()
                if variant.overrides:
                    rs.variant = variant
                    if current_app.secret_key and rs.service.settings.refresh:
                        # Before the view runs: a streamed page has sent its headers (and
                        # its session cookie) before its components render.
                        session_binding()
                rs.decorated = True
                g.toucan_token = self._page_token(rs)
                # Flask's own sync/async bridge, as Flask-Login's login_required uses it.
                return current_app.ensure_sync(func)(*args, **kwargs)  # type: ignore[no-any-return]

            return wrapper

        return decorate(view) if view is not None else decorate

    def refresh(self, reference: str | None) -> tuple[EmbedToken, str | None]:
        """The refresh endpoint's token (the current user's, or a page variant's) and the
        variant reference signed anew.

        Raises ToucanUserRequired (no user), InvalidVariant (the reference is not
        valid for this user now, ``allow()`` included), InvalidToucanUser or a
        ToucanAPIError.
        """
        rs = self._require_request()
        user = self._required(rs)
        renewed = None
        if reference is not None:
            variants = rs.service.variants
            variant = variants.resolve(reference, user, session.get(SESSION_BINDING))
            if not variant.allowed():
                raise InvalidVariant("access_revoked", "allow() refused this user")
            user = variant.apply(user)
            renewed = variants.renew(reference)
        rs.send_token()
        return rs.service.get(user)[0], renewed

    # -- template globals -------------------------------------------------------

    @staticmethod
    def _same_instance(rs: RequestState, instance: str | None) -> str | None:
        """One Toucan instance per page: its script and every component must agree."""
        if rs.instance is not _UNSET and rs.instance != instance:
            raise ToucanConfigError(
                f"this page mixes Toucan instances {rs.instance!r} and {instance!r}: one "
                "page loads one instance's script; render each instance on its own page"
            )
        return instance

    def current_token(self) -> EmbedToken:
        """``toucan_token()``: this request's token (the decorated view's, or minted now)."""
        rs = self._request()
        if rs is None:
            return self.get_token()
        rs.used = True
        token = self._page_token(rs)
        if token is None:
            assert rs.error is not None
            raise rs.error
        return token

    def script(self, **attrs: object) -> Markup:
        """``toucan_script()``: the web-components module (and the refresh controller).

        With TOUCAN_INSTANCES, the module of the current user's instance.
        """
        rs = self._request()
        service = rs.service if rs is not None else self._service()
        s = service.settings
        instance = None
        if s.instances and rs is not None:
            user = self._user(rs)
            instance = self._same_instance(rs, user.instance if user else None)
            rs.instance = instance
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

    def dashboard(self, dashboard_id: str, /, **attrs: object) -> Markup:
        """``toucan_dashboard(id)``: a ``<tc-dashboard>`` for the current user."""
        return self._component("tc-dashboard", {"dashboard-id": dashboard_id}, attrs)

    def chart(self, chart_id: str, /, **attrs: object) -> Markup:
        """``toucan_chart(id)``: a ``<tc-dashboard chart-id=...>`` showing one chart."""
        return self._component("tc-dashboard", {"chart-id": chart_id}, attrs)

    def assistant(self, **attrs: object) -> Markup:
        """``toucan_assistant()``: the ``<tc-ai-assistant>`` chat."""
        html = self._component("tc-ai-assistant", {}, attrs)
        if current_app.debug and not self._warned_assistant:
            self._check_assistant_permission()
        return html

    def _check_assistant_permission(self) -> None:
        """Debug mode, once: the assistant answers only tokens with ``{"ai": "can_query"}``."""
        rs = self._require_request()
        user = self._required(rs)
        if rs.variant is not None:
            user = rs.variant.apply(user)
        if (user.permissions or {}).get("ai") == "can_query":
            return
        self._warned_assistant = True
        from flask import request

        logger.warning(
            "%s renders toucan_assistant() with a token whose permissions lack "
            '{"ai": "can_query"}: Toucan\'s assistant will not answer. Decorate the view with '
            '@toucan.inject_token(permissions={"ai": "can_query"}, allow=...) or give the '
            "permission in your user_loader",
            request.endpoint,
        )

    def _component(self, tag: str, fixed: dict[str, object], attrs: Mapping[str, object]) -> Markup:
        rs = self._request()
        if rs is None:
            raise RuntimeError("toucan_dashboard() and friends render inside a request")
        rs.used = True
        token = self._page_token(rs)
        if token is None:
            return placeholder(tag, fixed, attrs)
        service = rs.service
        if rs.variant is not None and service.settings.refresh:
            binding = session_binding() if current_app.secret_key else None
            reference = service.variants.sign(rs.variant, self._required(rs), binding)
            fixed = {**fixed, "data-toucan-variant": reference}
        instance = rs.instance if rs.instance is not _UNSET else None
        server_url = service.instance(instance).server_url
        return markup.component_html(tag, token, server_url, fixed, attrs)

    def result(self, visualization: object, /, **attrs: object) -> Markup:
        """``toucan_result(visualization)``: a ``<tc-result-renderer>`` showing one of
        :attr:`ToucanAnswer.visualizations` (its payload goes in as data, never markup)."""
        rs = self._request()
        nonce = csp_nonce()
        html = markup.result_html(visualization, nonce, attrs)
        if rs is not None and not rs.results:
            rs.results = True
            rs.no_store = True  # the user's own data, scoped by Row-Level Security
            src = flask_url_for("toucan.static", filename="toucan-result.js")
            html = markup.script_html(src, nonce) + html
        return html

    # -- your own AI chat: Toucan's MCP server and REST API (extra: mcp) ------------

    def _caller(self, user: AnyUser | None) -> Caller:
        """``user`` (default: the request's) as MCP and REST calls speak for it: resolved
        now, in the caller's context; its token comes from the same cache as pages."""
        from . import mcp  # the optional extra: imported when the feature is used

        rs = self._request()
        service = rs.service if rs is not None else self._service()
        return mcp.caller_for(
            service, self.require_user() if user is None else ToucanUser.coerce(user)
        )

    def mcp_session(
        self, user: AnyUser | None = None
    ) -> AbstractAsyncContextManager[ClientSession]:
        """``async with toucan.mcp_session() as session``: an initialized
        ``mcp.ClientSession`` to Toucan's MCP endpoint (TOUCAN_MCP_URL) as ``user``
        (default: the request's), authenticated with the user's cached embed token."""
        return self._caller(user).session()

    async def ask_async(
        self, question: str, *, thread_id: str | None = None, user: AnyUser | None = None
    ) -> ToucanAnswer:
        """Ask Toucan's assistant (``ask_toucan_assistant``) as ``user``, from async code."""
        return await self._caller(user).ask(question, thread_id)

    def ask(
        self, question: str, *, thread_id: str | None = None, user: AnyUser | None = None
    ) -> ToucanAnswer:
        """Ask Toucan's assistant as ``user`` (default: the request's) and wait for the
        answer, at most TOUCAN_MCP_DEADLINE seconds. For ordinary (sync) views; in
        ``async def`` code, ``await toucan.ask_async(...)``."""
        caller = self._caller(user)
        return caller.ask_blocking(question, thread_id)

    def api_session(self, user: AnyUser | None = None) -> Session:
        """A ``requests.Session`` for Toucan's REST API as ``user`` (default: the
        request's): relative URLs start at the instance, the user's Bearer token goes
        with each request to it (renewed from the cache, minted afresh once after a 401)."""
        return self._caller(user).api_session()

    # -- the response -------------------------------------------------------------

    def _after_request(self, response: Response) -> Response:
        """Token-bearing responses are private and never stored (and, in debug mode,
        pages that cannot work are pointed out)."""
        rs: RequestState | None = g.get("_toucan")
        if rs is None:
            # Nothing of ours ran yet; a streamed body may still ask for a token, and must
            # find the headers already sent (RequestState.send_token refuses then).
            rs = g._toucan = RequestState(self, self._service())
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
        if current_app.debug:
            _debug_checks(rs, response)
        return response


class CurrentToken:
    """``toucan_token`` in templates: this request's token, found on first use.

    ``{{ toucan_token.expires_in }}`` and ``{{ toucan_token().expires_in }}`` read the same
    token. In placeholder mode, after a failed mint, its attributes are undefined.
    """

    __slots__ = ("_toucan",)

    def __init__(self, toucan: Toucan) -> None:
        self._toucan = toucan

    def __call__(self) -> EmbedToken:
        return self._toucan.current_token()

    def __getattr__(self, name: str) -> Any:
        rs = self._toucan._request()
        if rs is None:
            return getattr(self._toucan.get_token(), name)
        rs.used = True
        token = self._toucan._page_token(rs)
        if token is None:
            raise AttributeError(name)  # Jinja renders it as undefined: empty
        return getattr(token, name)

    def __repr__(self) -> str:
        return "<toucan_token>"


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


#: The session key holding the random value variant references are bound to.
SESSION_BINDING = "_toucan_binding"


def session_binding() -> str:
    """This browser session's binding for variant references (made on first use)."""
    value = session.get(SESSION_BINDING)
    if not isinstance(value, str):
        value = session[SESSION_BINDING] = secrets.token_urlsafe(16)
    return value


def csp_nonce() -> str | None:
    # Flask-Talisman (and look-alikes) expose the request's nonce as a Jinja global.
    nonce_fn = current_app.jinja_env.globals.get("csp_nonce")
    if callable(nonce_fn) and has_request_context():
        nonce = nonce_fn()
        return str(nonce) if nonce else None
    return None


def _connect_login(app: Flask, receiver: Callable[..., None], *, required: bool) -> None:
    """Follow Flask-Login's sign-ins and sign-outs in ``app``, when it is installed."""
    try:
        from flask_login import user_logged_in, user_logged_out  # type: ignore[import-untyped]
    except ImportError:
        if required:
            raise ToucanConfigError(
                "TOUCAN_PREFETCH_ON_LOGIN needs Flask-Login (pip install flask-login), "
                "or set it to False and call toucan.prefetch() after your own sign-in"
            ) from None
        return
    user_logged_in.connect(receiver, app, weak=False)
    user_logged_out.connect(functools.partial(receiver, signal="out"), app, weak=False)


def _debug_checks(rs: RequestState, response: Response) -> None:
    """Debug mode only: warn about pages that cannot work or tokens minted for nothing."""
    from flask import request

    if rs.decorated and not rs.used:
        logger.warning(
            "%s is decorated with @toucan.inject_token but its response never used the token "
            "(no toucan_dashboard/toucan_assistant/toucan_token): a mint for nothing. Remove "
            "the decorator, or ignore this if the view reads g.toucan_token itself",
            request.endpoint,
        )
    if response.is_streamed or response.mimetype != "text/html":
        return
    body = response.get_data()
    if (b"<tc-dashboard" in body or b"<tc-ai-assistant" in body) and not _has_script(rs, body):
        logger.warning(
            "%s renders a Toucan component but no Toucan script: the component stays blank. "
            "Add {{ toucan_script() }} to the page (or its layout)",
            request.endpoint,
        )


def _has_script(rs: RequestState, body: bytes) -> bool:
    s = rs.service.settings
    urls = [i.script_url for i in [s.default_instance, *s.instances.values()]]
    needles = [u.encode() for u in urls] + [b"toucan-preview.js", b"data-toucan-refresh"]
    return any(n in body for n in needles)
