"""The ``Toucan`` extension: set-up, the request's user and token, the template globals."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar, overload

from flask import Flask, current_app, g, has_app_context, has_request_context
from flask_caching import Cache

from . import cli
from .backends import backend_for
from .errors import (
    InvalidToucanUser,
    InvalidVariant,
    ToucanAPIError,
    ToucanConfigError,
    ToucanForbidden,
    ToucanUserRequired,
)
from .identity import ToucanUser
from .prefetch import Prefetcher, connect_login
from .settings import apply_defaults, read_settings, unknown_keys
from .state import AppState, RequestState
from .templating import TemplateGlobals
from .tokens import EmbedToken
from .variants import TokenVariants, Variant, VariantRegistry
from .views import install, run_first

__all__ = ["Toucan"]

logger = logging.getLogger("flask_toucan")

P = ParamSpec("P")
R = TypeVar("R")
UserLoader = Callable[[], "ToucanUser | Mapping[str, Any] | None"]
AnyUser = ToucanUser | Mapping[str, Any]


class Toucan(TemplateGlobals):
    """Embeds Toucan AI for the signed-in users of one or more Flask apps.

    ``Toucan(app)``, or ``Toucan()`` then ``init_app(app)`` in an app factory.
    Pass ``cache=`` a :class:`flask_caching.Cache` to share the app's own cache.
    """

    def __init__(self, app: Flask | None = None, *, cache: Cache | None = None) -> None:
        self._cache = cache
        self._user_loader: UserLoader | None = None
        self.variants = VariantRegistry()
        self._prefetcher = Prefetcher()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
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
        try:
            settings = read_settings(app.config)
        except ToucanConfigError as exc:
            if not cli.deferring_config_errors():
                raise
            # Loaded by `flask toucan ...`: the command reports the error (✗) instead.
            app.extensions["toucan_config_error"] = exc
            return
        variants = TokenVariants(lambda: app.secret_key)
        backend = backend_for(app, settings, self._cache)
        app.extensions["toucan"] = AppState(self, settings, backend, variants, app)
        install(app, settings)
        app.cli.add_command(cli.toucan_cli)
        self.register_globals(app)
        if settings.prefetch_on_login:
            connect_login(app, self._prefetch_on_login)

    def user_loader(self, loader: UserLoader) -> UserLoader:
        """Register the function returning the current user as a ToucanUser (or None)."""
        self._user_loader = loader
        return loader

    # -- state ----------------------------------------------------------------

    def _state(self) -> AppState:
        if not has_app_context():
            raise RuntimeError(
                "flask_toucan needs an application context; use it inside a request "
                "or `with app.app_context():`"
            )
        state = current_app.extensions.get("toucan")
        if not isinstance(state, AppState) or state.toucan is not self:
            raise RuntimeError(
                "this Toucan instance is not initialised on the current app; "
                "did you forget toucan.init_app(app)?"
            )
        return state

    def _request(self) -> RequestState | None:
        """This request's state (made on first use), or None outside a request."""
        if not has_request_context():
            return None
        rs: RequestState | None = g.get("_toucan")
        if rs is None or rs.app.toucan is not self:
            rs = g._toucan = RequestState(self._state())
        return rs

    # -- users and tokens -----------------------------------------------------

    def current_user(self) -> ToucanUser | None:
        """The request's user from the ``user_loader``, loaded at most once per request."""
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
            role = rs.app.settings.default_role
            rs.user = None if loaded is None else ToucanUser.coerce(loaded, role)
            rs.loaded = True
        return rs.user

    def _require_user(self, rs: RequestState | None = None) -> ToucanUser:
        rs = rs or self._request()
        user = None if rs is None else self._user(rs)
        if user is None:
            raise ToucanUserRequired()
        return user

    def _require_request(self) -> RequestState:
        rs = self._request()
        if rs is None:
            raise RuntimeError("flask_toucan needs a request here: there is no current user")
        return rs

    def _resolve(self, user: AnyUser | None) -> tuple[RequestState | None, AppState, ToucanUser]:
        """The request state (if any), the app state, and ``user`` as a ToucanUser
        (None: the request's user, 401 without one)."""
        rs = self._request()
        state = rs.app if rs is not None else self._state()
        if user is None:
            return rs, state, self._require_user(rs)
        return rs, state, ToucanUser.coerce(user, state.settings.default_role)

    def get_token(self, user: AnyUser | None = None, *, force: bool = False) -> EmbedToken:
        """A token for ``user`` (default: the request's user), cached while it has life left."""
        rs, state, resolved = self._resolve(user)
        return state.token(resolved, force=force, rs=rs)

    def prefetch(self, user: AnyUser | None = None) -> None:
        """Mint ``user``'s token (default: the request's) in the background; never raises.

        Free when the token is warm. Goes through the same cache, single-flight and
        checks (TOUCAN_REQUIRED_ATTRIBUTES) as a page, so the next view finds it.
        """
        try:
            _, state, resolved = self._resolve(user)
            self._prefetcher.prefetch(state, resolved)
        except Exception as exc:  # a prefetch must never break the caller (a sign-in)
            logger.warning("prefetching a Toucan token failed: %s", exc)

    def _prefetch_on_login(self, sender: Flask, **extra: Any) -> None:
        """Flask-Login's ``user_logged_in`` for the app it was connected to (the sender):
        the loader sees the new user now."""
        rs = self._request()
        if rs is not None:
            rs.loaded = False  # the user changed within this request
        self.prefetch()

    def invalidate(self, user: AnyUser) -> None:
        """Forget the cached token of ``user`` (exactly this identity).

        It reaches this process and the shared backend; other processes' front
        caches drop it within ``TOUCAN_FRONT_CACHE_TTL``. With the default
        in-process backend, only this process forgets it.
        """
        state = self._state()
        state.cache.delete(state.key_for(ToucanUser.coerce(user, state.settings.default_role)))

    def _page_token(self, rs: RequestState) -> EmbedToken | None:
        """The token of this request's components, minted once per request.

        None means "render placeholders": the mint failed and TOUCAN_ON_ERROR is
        ``placeholder`` (the one place that rule is applied).
        """
        if rs.token is None and rs.error is None:
            try:
                if rs.variant is not None:
                    user = rs.variant[0].apply(rs.variant[1])
                else:
                    user = self._require_user(rs)
                rs.instance = self._same_instance(rs, user.instance)
                rs.app.token(user, rs=rs, page=True)
            except (ToucanAPIError, InvalidToucanUser) as exc:
                if rs.app.settings.on_error != "placeholder":
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

        def decorate(func: Callable[P, R]) -> Callable[P, R]:
            # Only role/permission variants are renewed by reference: register those.
            if overrides:
                variant = self.variants.register(func, overrides, allow)
            else:
                variant = Variant("", {}, allow)

            def prepare() -> None:
                rs = self._require_request()
                user = self._require_user(rs)
                if not variant.allowed():
                    raise ToucanForbidden()
                if variant.overrides:
                    rs.variant = (variant, user)
                rs.decorated = True
                g.toucan_token = self._page_token(rs)

            return run_first(prepare, func)

        return decorate(view) if view is not None else decorate

    def refresh(self, reference: str | None) -> EmbedToken:
        """The refresh endpoint's token: the current user's, or a page variant's.

        Raises ToucanUserRequired (no user), InvalidVariant (the reference is not
        valid for this user now, ``allow()`` included) or a ToucanAPIError.
        """
        rs = self._require_request()
        user = self._require_user(rs)
        if reference is not None:
            variant = rs.app.variants.resolve(reference, user, self.variants)
            if not variant.allowed():
                raise InvalidVariant("access_revoked", "allow() refused this user")
            user = variant.apply(user)
        return rs.app.token(user, rs=rs)
