"""HTML for the Toucan components and script tags, built with markupsafe: every value escaped."""

from __future__ import annotations

import re
from collections.abc import Mapping

from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup, escape

from .tokens import EmbedToken

__all__ = [
    "attribute_name",
    "component_html",
    "epoch",
    "html_attributes",
    "result_html",
    "script_html",
]

_ATTR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")
# Set by flask_toucan itself; a template must not override them by accident.
RESERVED = frozenset(
    {
        "auth-token",
        "server-url",
        "dashboard-id",
        "chart-id",
        "data-toucan-expires-at",
        "data-toucan-lifetime",
        "data-toucan-variant",
    }
)
_RESULT_RESERVED = RESERVED | {"data-toucan-result"}
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
    # Joined from escape()d parts rather than Markup.format: on a warm page view
    # format() was the largest single cost (benchmarks: "attribute builder").
    parts: list[str] = []
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        if not _ATTR_NAME.match(name):  # our names and attribute_name()'s always match
            raise ValueError(f"{name!r} is not a valid HTML attribute name")
        parts.append(" " + name)
        if value is not True:
            parts.extend(('="', escape(str(value)), '"'))
    return Markup("".join(parts))  # noqa: S704 - names checked, values escaped above


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
    attrs["data-toucan-expires-at"] = epoch(token.expires_at_epoch)
    # ...and its lifetime, for the serving margin min(TOUCAN_MIN_TOKEN_TTL, lifetime / 4).
    attrs["data-toucan-lifetime"] = None if token.lifetime is None else round(token.lifetime)
    add_caller_attributes(attrs, extra, RESERVED)
    # tag is one of our own constants; the attributes come back escaped.
    return Markup("".join(("<", tag, html_attributes(attrs), "></", tag, ">")))  # noqa: S704


def add_caller_attributes(
    attrs: dict[str, object], extra: Mapping[str, object], reserved: frozenset[str]
) -> None:
    """The template's keyword attributes into ``attrs``, renamed (:func:`attribute_name`);
    one flask_toucan sets (``reserved``) cannot be overridden."""
    for key, value in extra.items():
        name = attribute_name(key)
        if name in reserved:
            raise ValueError(f"{name!r} is set by flask_toucan and cannot be passed")
        attrs[name] = value


def epoch(seconds: float) -> str:
    """Epoch seconds with millisecond precision, for the refresh controller."""
    return format(seconds, ".3f")


def script_html(src: str, nonce: str | None, extra: Mapping[str, object] | None = None) -> Markup:
    """A ``<script type="module">`` tag, carrying the CSP nonce when the app has one."""
    attrs: dict[str, object] = {"type": "module", "src": src, "nonce": nonce}
    attrs.update(extra or {})
    return Markup("".join(("<script", html_attributes(attrs), "></script>")))  # noqa: S704


def result_html(payload: object, nonce: str | None, extra: Mapping[str, object]) -> Markup:
    """A ``<tc-result-renderer>`` and, beside it, its ``payload`` as JSON data that the
    shipped controller hands to the element's ``payload`` property.

    The JSON is escaped for HTML (``<``, ``>``, ``&`` and ``'`` as ``\\u`` escapes), so no
    value of the payload can end the ``<script>`` element or add markup.
    """
    attrs: dict[str, object] = {"data-toucan-result": True}
    add_caller_attributes(attrs, extra, _RESULT_RESERVED)
    try:
        data = htmlsafe_json_dumps(payload, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise ValueError(
            "toucan_result() takes one of ToucanAnswer.visualizations: JSON data "
            f"(got a {type(payload).__name__} that does not serialize)"
        ) from None
    holder = html_attributes(
        {"type": "application/json", "data-toucan-payload": True, "nonce": nonce}
    )
    return Markup(  # noqa: S704 - attributes escaped, the JSON escaped for HTML above
        "".join(
            (
                "<tc-result-renderer",
                html_attributes(attrs),
                "></tc-result-renderer>",
                "<script",
                holder,
                ">",
                data,
                "</script>",
            )
        )
    )
