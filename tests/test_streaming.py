"""Streamed responses: a token never goes out on a response that could be cached."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask, render_template_string, stream_template_string, stream_with_context

from flask_toucan.testing import FakeToucan

TEMPLATE = "<h1>Report</h1>{% for i in range(3) %}<p>{{ i }}</p>{% endfor %}" + (
    "{{ toucan_dashboard('sales') }}"
)


def streamed_views(app: Flask, decorate: bool) -> None:
    toucan = app.extensions["test_toucan"]
    wrap = toucan.inject_token if decorate else (lambda view: view)

    @app.get("/stream-template")
    @wrap
    def by_stream_template() -> object:
        return stream_template_string(TEMPLATE)

    @app.get("/stream-generator")
    @wrap
    def by_generator() -> object:
        def generate() -> Iterator[str]:
            yield "<h1>Report</h1>"
            yield render_template_string("{{ toucan_dashboard('sales') }}")

        return stream_with_context(generate())


@pytest.mark.parametrize("path", ["/stream-template", "/stream-generator"])
def test_decorated_streamed_view_is_private(
    make_app: Callable[..., Flask], fake: FakeToucan, path: str
) -> None:
    app = make_app()
    streamed_views(app, decorate=True)
    response = app.test_client().get(path, headers={"X-User": "alice"})
    assert response.status_code == 200
    assert "auth-token=" in response.text
    assert response.headers["Cache-Control"] == "private, no-store"
    assert "Cookie" in response.headers["Vary"]
    assert len(fake.mints) == 1


@pytest.mark.parametrize("path", ["/stream-template", "/stream-generator"])
def test_lazy_helper_in_a_stream_fails_and_sends_no_token(
    make_app: Callable[..., Flask], fake: FakeToucan, path: str
) -> None:
    from flask_toucan import ToucanConfigError

    app = make_app()
    streamed_views(app, decorate=False)
    client = app.test_client()
    with pytest.raises(ToucanConfigError, match=r"decorate the view with @toucan\.inject_token"):
        response = client.get(path, headers={"X-User": "alice"})
        response.get_data()  # the body streams when it is read
    assert fake.requests == []  # refused before asking Toucan
