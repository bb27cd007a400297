"""The template globals of the extension: ``toucan_script()``, the component helpers and
``toucan_token``, as a mixin of :class:`~flask_toucan.Toucan` (which provides the request
state and the page token they read); and what stands in for a component without a token."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask import current_app, has_request_context, render_template
from flask import url_for as flask_url_for
from markupsafe import Markup

from . import markup
from .errors import ToucanConfigError
from .state import _UNSET, RequestState
from .tokens import EmbedToken, now

if TYPE_CHECKING:
    from flask import Flask

    from .identity import ToucanUser
    from .state import AppState

__all__ = ["CurrentToken", "TemplateGlobals", "csp_nonce", "placeholder"]


class TemplateGlobals:
    """What templates call. Mixed into ``Toucan``, whose methods it uses."""

    if TYPE_CHECKING:  # provided by Toucan

        def _request(self) -> RequestState | None: ...
        def _state(self) -> AppState: ...
        def _user(self, rs: RequestState) -> ToucanUser | None: ...
        def _page_token(self, rs: RequestState) -> EmbedToken | None: ...
        def get_token(self, user: Any = None, *, force: bool = False) -> EmbedToken: ...

    def register_globals(self, app: Flask) -> None:
        """Make the helpers and ``toucan_token`` template globals of ``app``."""
        app.add_template_global(self.script, "toucan_script")
        app.add_template_global(self.dashboard, "toucan_dashboard")
        app.add_template_global(self.chart, "toucan_chart")
        app.add_template_global(self.assistant, "toucan_assistant")
        app.add_template_global(CurrentToken(self), "toucan_token")

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
        state = rs.app if rs is not None else self._state()
        s = state.settings
        instance = None
        if s.instances and rs is not None:
            user = self._user(rs)
            instance = self._same_instance(rs, user.instance if user else None)
            rs.instance = instance
        nonce = csp_nonce()
        src = flask_url_for("toucan.static", filename="toucan-preview.js") if s.preview else None
        extra = {markup.attribute_name(k): v for k, v in attrs.items()}
        html = markup.script_html(src or state.instance(instance).script_url, nonce, extra)
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
        return self._component("tc-ai-assistant", {}, attrs)

    def _component(self, tag: str, fixed: dict[str, object], attrs: Mapping[str, object]) -> Markup:
        rs = self._request()
        if rs is None:
            raise RuntimeError("toucan_dashboard() and friends render inside a request")
        rs.used = True
        token = self._page_token(rs)
        if token is None:
            return placeholder(tag, fixed, attrs)
        if rs.variant is not None and rs.app.settings.refresh:
            reference = rs.app.variants.sign(rs.variant[0], rs.variant[1])
            fixed = {**fixed, "data-toucan-variant": reference}
        server_url = rs.app.instance(rs.instance if rs.instance is not _UNSET else None).server_url
        return markup.component_html(tag, token, server_url, fixed, attrs)


class CurrentToken:
    """``toucan_token`` in templates: this request's token, found on first use.

    ``{{ toucan_token.expires_in }}`` and ``{{ toucan_token().expires_in }}`` read the same
    token. In placeholder mode, after a failed mint, its attributes are undefined.
    """

    __slots__ = ("_toucan",)

    def __init__(self, toucan: TemplateGlobals) -> None:
        self._toucan = toucan

    def __call__(self) -> EmbedToken:
        return self._toucan.current_token()

    def __getattr__(self, name: str) -> Any:
        rs = self._toucan._request()
        if rs is not None:
            rs.used = True
        token = self._toucan._page_token(rs) if rs is not None else self._toucan.get_token()
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


def csp_nonce() -> str | None:
    # Flask-Talisman (and look-alikes) expose the request's nonce as a Jinja global.
    nonce_fn = current_app.jinja_env.globals.get("csp_nonce")
    if callable(nonce_fn) and has_request_context():
        nonce = nonce_fn()
        return str(nonce) if nonce else None
    return None
