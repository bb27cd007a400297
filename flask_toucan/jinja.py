"""HTML for the Toucan web components, built with markupsafe so every value is escaped."""

from __future__ import annotations

import re
from collections.abc import Mapping

from markupsafe import Markup, escape

from .tokens import EmbedToken

__all__ = ["component_html", "html_attributes", "script_html"]

_ATTR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")
# Set by flask_toucan itself; a template must not override them by accident.
RESERVED = frozenset(
    {
        "auth-token",
        "server-url",
        "dashboard-id",
        "chart-id",
        "data-toucan-expires-at",
        "data-toucan-variant",
    }
)
_RENAMES = {"theme": "data-theme", "class_": "class", "class": "class"}


def attribute_name(name: str) -> str:
    """``theme`` → ``data-theme``, ``class_`` → ``class``, ``data_x`` → ``data-x``."""
    if name in _RENAMES:
        return _RENAMES[name]
    if not _ATTR_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid HTML attribute name")
    return name.rstrip("_").replace("_", "-").lower()


def html_attributes(attrs: Mapping[str, object]) -> Markup:
    """`` name="value"`` pairs, escaped. ``None``/``False`` drop an attribute, ``True`` is bare."""
    out = Markup("")
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        if value is True:
            out += Markup(" {}").format(name)
        else:
            out += Markup(' {}="{}"').format(name, str(value))
    return out


def component_html(
    tag: str,
    token: EmbedToken,
    server_url: str,
    fixed: Mapping[str, object],
    extra: Mapping[str, object],
) -> Markup:
    """One ``<tc-...>`` element carrying ``token`` plus the caller's attributes."""
    attrs: dict[str, object] = dict(fixed)
    attrs["auth-token"] = token.value
    attrs["server-url"] = server_url
    # Tokens are opaque, so the refresh controller learns the expiry from here.
    attrs["data-toucan-expires-at"] = int(token.expires_at_epoch)
    for key, value in extra.items():
        name = attribute_name(key)
        if name in RESERVED:
            raise ValueError(f"{name!r} is set by flask_toucan and cannot be passed")
        attrs[name] = value
    tag_markup = Markup(tag)  # noqa: S704 - tag is one of our own constants
    return Markup("<{tag}{attrs}></{tag}>").format(tag=tag_markup, attrs=html_attributes(attrs))


def script_html(src: str, nonce: str | None, extra: Mapping[str, object] | None = None) -> Markup:
    """A ``<script type="module">`` tag, carrying the CSP nonce when the app has one."""
    attrs: dict[str, object] = {"type": "module", "src": src, "nonce": nonce}
    attrs.update(extra or {})
    return Markup("<script{}></script>").format(html_attributes(attrs))


def json_script(element_id: str, payload: str, nonce: str | None) -> Markup:
    """Inline JSON data that scripts can read; ``<`` is escaped so it cannot close the tag."""
    safe = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    attrs = {"type": "application/json", "id": element_id, "nonce": nonce}
    return Markup("<script{}>{}</script>").format(html_attributes(attrs), Markup(safe))  # noqa: S704 - JSON with <, >, & escaped


def escape_text(value: object) -> Markup:
    return escape(str(value))
