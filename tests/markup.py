"""Parsing rendered HTML back, so tests compare what a browser would see."""

from __future__ import annotations

from html.parser import HTMLParser

Element = tuple[str, dict[str, str | None]]


class _StartTags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


def start_tags(html: str) -> list[Element]:
    """Every start tag in ``html``, with its attributes as the parser decoded them."""
    parser = _StartTags()
    parser.feed(html)
    parser.close()
    return parser.found


def token_of(html: str) -> str:
    """The ``auth-token`` of the first Toucan component in ``html``."""
    for _, attrs in start_tags(html):
        token = attrs.get("auth-token")
        if token:
            return token
    raise AssertionError("no component with an auth-token in the page")
