"""``Toucan``: set-up and registration on an app, and the calls an app makes.

``Toucan(app)`` or ``init_app(app)`` reads the settings, builds the app's
:class:`~flask_toucan.service.TokenService` and store, and registers the blueprint, the
template globals and one ``after_request`` hook. What happens during a request lives
in :mod:`flask_toucan.context`; this module only hands over to it.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from flask import Flask

from . import context
from .cache import AppCacheStore, Store, make_store
from .context import ToucanState, UserLoader
from .errors import ToucanConfigError
from .identity import ToucanUser
from .service import TokenService
from .settings import apply_defaults, read_settings, removed_keys, unknown_keys
from .tokens import EmbedToken
from .variants import TokenVariants, Variant, VariantRegistry
from .views import install

if TYPE_CHECKING:
    from flask_caching import Cache
    from mcp.client.session import ClientSession
    from requests import Session

    from .mcp import Caller, MCPConnection, ProgressCallback, ToucanAnswer

__all__ = ["Toucan"]

logger = logging.getLogger("flask_toucan")

P = ParamSpec("P")
R = TypeVar("R")
AnyUser = ToucanUser | Mapping[str, Any]


class Toucan:
    """Embeds Toucan AI for the signed-in users of one or more Flask apps.

    ``Toucan(app)``, or ``Toucan()`` then ``init_app(app)`` in an app factory.
    Pass ``cache=`` a :class:`flask_caching.Cache` to keep tokens in the app's own cache
    (used through its public ``get``/``set``/``delete``/``add``), and
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
        #: The function registered with :meth:`user_loader` (None until then).
        self.loader: UserLoader | None = None
        self.variants = VariantRegistry()
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
        settings = read_settings(app.config)
        store: Store
        if self._app_cache is not None:
            store = AppCacheStore(self._app_cache)
        else:
            store = make_store(settings.cache_config)
        if settings.preview and settings.api_key is not None:
            logger.warning(
                "TOUCAN_PREVIEW is on while TOUCAN_API_KEY is set: pages show stand-ins and "
                "Toucan is never called; set TOUCAN_PREVIEW = False to use the key"
            )
        variants = TokenVariants(lambda: app.secret_key, self.variants, settings.variant_max_age)
        try:
            service = TokenService(settings, store, variants, app=app, **options)
        except TypeError as exc:
            raise ToucanConfigError(
                f"service_options: {exc}; see TokenService in the API reference"
            ) from None
        app.extensions["toucan"] = ToucanState(self, service)
        install(app, settings)
        app.after_request(context.after_request)
        for name, value in context.template_globals().items():
            app.add_template_global(value, name)
        _connect_login(app, context.user_changed, required=settings.prefetch_on_login)

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
        self.loader = loader
        return loader

    # -- state ----------------------------------------------------------------

    def _state(self) -> ToucanState:
        """The current app's state, which must be this instance's."""
        state = context.get_state()
        if state.extension is not self:
            raise RuntimeError(
                "this Toucan instance is not initialised on the current app; "
                "did you forget toucan.init_app(app)?"
            )
        return state

    def _resolve(self, user: AnyUser | None) -> ToucanUser:
        """``user``, or by default the request's (ToucanUserRequired without one)."""
        return context.require_user() if user is None else ToucanUser.coerce(user)

    # -- users and tokens -----------------------------------------------------

    def current_user(self) -> ToucanUser | None:
        """The request's user from the ``user_loader``, loaded at most once per request
        (again after a sign-in or sign-out within it)."""
        self._state()
        return context.load_user()

    def get_token(self, user: AnyUser | None = None, *, force: bool = False) -> EmbedToken:
        """A token for ``user`` (default: the request's user), cached while it has life left."""
        state = self._state()
        return context.get_token(state, None if user is None else ToucanUser.coerce(user), force)

    def prefetch(self, user: AnyUser | None = None) -> None:
        """Mint ``user``'s token (default: the request's) in the background; never raises.

        Free when the token is warm. Goes through the same cache, single-flight and
        checks (TOUCAN_REQUIRED_ATTRIBUTES) as a page, so the next view finds it.
        """
        try:
            self._state().service.prefetch(self._resolve(user))
        except Exception as exc:  # a prefetch must never break the caller (a sign-in)
            logger.warning("prefetching a Toucan token failed: %s", exc)

    def invalidate(self, user: AnyUser) -> None:
        """Forget the cached token of ``user`` (exactly this identity).

        It reaches this process and the shared backend; other processes' front
        caches drop it within their TTL. With the default in-process backend, only
        this process forgets it.
        """
        self._state().service.invalidate(ToucanUser.coerce(user))

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
        is :data:`flask_toucan.current_token` (``toucan_token`` in templates); the response gets
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

            return context.inject(func, variant)

        return decorate(view) if view is not None else decorate

    # -- your own AI chat: Toucan's MCP server and REST API (extra: mcp) ------------

    def _caller(self, user: AnyUser | None) -> Caller:
        """``user`` (default: the request's) as MCP and REST calls speak for it: resolved
        now, in the caller's context; its token comes from the same cache as pages."""
        from . import mcp  # the optional extra: imported when the feature is used

        state = self._state()
        return mcp.caller_for(state.service, self._resolve(user))

    def mcp_session(
        self, user: AnyUser | None = None
    ) -> AbstractAsyncContextManager[ClientSession]:
        """``async with toucan.mcp_session() as session``: an initialized
        ``mcp.ClientSession`` to Toucan's MCP endpoint (TOUCAN_MCP_URL) as ``user``
        (default: the request's), authenticated with the user's cached embed token."""
        return self._caller(user).session()

    def mcp_connection(self, user: AnyUser | None = None) -> MCPConnection:
        """Toucan's MCP endpoint as ``user`` (default: the request's, resolved now), for
        an agent framework: ``.url``, ``.auth`` (for httpx and httpx2 clients) and
        ``.headers()``. It keeps working after the request has ended."""
        return self._caller(user).connection()

    async def ask_async(
        self,
        question: str,
        *,
        thread_id: str | None = None,
        user: AnyUser | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> ToucanAnswer:
        """Ask Toucan's assistant (``ask_toucan_assistant``) as ``user``, from async code.
        ``on_progress(progress, total, message)`` (sync or async) hears each progress
        notification of the call."""
        return await self._caller(user).ask(question, thread_id, on_progress)

    def ask(
        self,
        question: str,
        *,
        thread_id: str | None = None,
        user: AnyUser | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> ToucanAnswer:
        """Ask Toucan's assistant as ``user`` (default: the request's) and wait for the
        answer, at most TOUCAN_MCP_DEADLINE seconds. For ordinary (sync) views; in
        ``async def`` code, ``await toucan.ask_async(...)``. ``on_progress(progress,
        total, message)`` hears each progress notification (one that raises is logged
        once; the answer still arrives)."""
        caller = self._caller(user)
        return caller.ask_blocking(question, thread_id, on_progress)

    def api_session(self, user: AnyUser | None = None) -> Session:
        """A ``requests.Session`` for Toucan's REST API as ``user`` (default: the
        request's): relative URLs start at the instance, the user's Bearer token goes
        with each request to it (renewed from the cache, minted afresh once after a 401)."""
        return self._caller(user).api_session()

    def __repr__(self) -> str:
        return f"<Toucan {'with' if self.loader else 'without'} a user_loader>"


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
