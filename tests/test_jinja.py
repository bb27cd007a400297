from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, render_template_string
from flask_talisman import Talisman
from jinja2 import ChoiceLoader, DictLoader

from flask_toucan.testing import FakeToucan

from .markup import start_tags as parse


def render(app: Flask, source: str, user: str = "alice", **ctx: Any) -> str:
    toucan = app.extensions["test_toucan"]

    @toucan.inject_token
    def view() -> str:
        return render_template_string(source, **ctx)

    with app.test_request_context(headers={"X-User": user}):
        return view()


def test_dashboard_has_exactly_the_documented_attributes(app: Flask, fake: FakeToucan) -> None:
    html = render(app, "{{ toucan_dashboard('sales-42', theme='dark', style='width:100%') }}")
    ((tag, attrs),) = parse(html)
    assert tag == "tc-dashboard"
    assert set(attrs) == {
        "dashboard-id",
        "auth-token",
        "server-url",
        "data-theme",
        "style",
        "data-toucan-expires-at",
        "data-toucan-lifetime",
    }
    assert attrs["data-toucan-lifetime"] == "3600"
    assert attrs["dashboard-id"] == "sales-42"
    assert attrs["auth-token"] == fake.tokens_issued[0]
    assert attrs["server-url"] == fake.url + "/api"
    assert attrs["data-theme"] == "dark"
    assert html.endswith("</tc-dashboard>")


def test_chart_and_assistant(app: Flask) -> None:
    html = render(app, "{{ toucan_chart('c1', class_='wide') }}{{ toucan_assistant(id='chat') }}")
    (chart, assistant) = parse(html)
    assert chart[0] == "tc-dashboard" and chart[1]["chart-id"] == "c1"
    assert "dashboard-id" not in chart[1]
    assert chart[1]["class"] == "wide"
    assert assistant[0] == "tc-ai-assistant"
    assert "dashboard-id" not in assistant[1] and "chart-id" not in assistant[1]
    assert assistant[1]["id"] == "chat"


HOSTILE = [
    '"><script>alert(1)</script>',
    "' onmouseover='alert(1)",
    "</tc-dashboard><img src=x onerror=alert(1)>",
    "&amp;&lt;",
    "\u2028é\U0001f600",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_are_escaped_and_round_trip(app: Flask, value: str) -> None:
    html = render(
        app,
        "{{ toucan_dashboard(v, theme=v, style=v, class_=v, title=v) }}",
        v=value,
    )
    elements = parse(html)
    assert len(elements) == 1
    tag, attrs = elements[0]
    assert tag == "tc-dashboard"
    for name in ("dashboard-id", "data-theme", "style", "class", "title"):
        assert attrs[name] == value
    assert "<script" not in html and "<img" not in html


@pytest.mark.parametrize("name", ["onclick x", 'a"b', "x>y", ""])
def test_bad_attribute_names_are_refused(app: Flask, name: str) -> None:
    with pytest.raises(ValueError, match="not a valid HTML attribute name"):
        render(app, "{{ toucan_dashboard('d', **extra) }}", extra={name: "1"})


@pytest.mark.parametrize("name", ["auth_token", "server_url", "dashboard_id"])
def test_reserved_attributes_cannot_be_overridden(app: Flask, name: str) -> None:
    with pytest.raises(ValueError, match="set by flask_toucan"):
        render(app, "{{ toucan_dashboard('d', **extra) }}", extra={name: "evil"})


def test_boolean_and_none_attributes(app: Flask) -> None:
    html = render(app, "{{ toucan_dashboard('d', hidden=True, title=None, draggable=False) }}")
    attrs = parse(html)[0][1]
    assert "hidden" in attrs and attrs["hidden"] is None
    assert "title" not in attrs and "draggable" not in attrs


def test_script_tags(app: Flask) -> None:
    html = render(app, "{{ toucan_script() }}")
    ((tag, attrs), (tag2, refresh)) = parse(html)
    assert tag == tag2 == "script"
    assert attrs["type"] == refresh["type"] == "module"
    assert attrs["src"] == app.config["TOUCAN_SCRIPT_URL"]
    assert "nonce" not in attrs
    assert refresh["src"] == "/toucan/static/toucan-refresh.js"
    assert refresh["data-toucan-refresh"] == "/toucan/token"
    assert refresh["data-strategy"] == "attribute"
    assert refresh["data-margin"] == "300"


def test_script_without_refresh(make_app: Callable[..., Flask]) -> None:
    app = make_app(TOUCAN_REFRESH=False)
    html = render(app, "{{ toucan_script() }}")
    assert [a["src"] for _, a in parse(html)] == [app.config["TOUCAN_SCRIPT_URL"]]


def test_script_carries_talisman_nonce(app: Flask) -> None:
    Talisman(
        app,
        force_https=False,
        content_security_policy={"script-src": "'self'"},
        content_security_policy_nonce_in=["script-src"],
    )
    toucan = app.extensions["test_toucan"]

    @app.get("/csp")
    @toucan.inject_token
    def csp() -> str:
        return render_template_string("{{ toucan_script() }}")

    response = app.test_client().get("/csp", headers={"X-User": "alice"})
    nonces = {a["nonce"] for _, a in parse(response.text)}
    assert len(nonces) == 1
    nonce = nonces.pop()
    assert nonce
    assert f"'nonce-{nonce}'" in response.headers["Content-Security-Policy"]


def test_macros_work_when_imported(app: Flask) -> None:
    html = render(
        app,
        '{% import "toucan/macros.html" as t %}{{ t.dashboard("d1", theme="light") }}'
        "{{ t.assistant() }}",
    )
    tags = parse(html)
    assert [t for t, _ in tags] == ["tc-dashboard", "tc-ai-assistant"]
    assert tags[0][1]["data-theme"] == "light"


def test_globals_work_inside_imported_macros_without_context(app: Flask) -> None:
    assert app.jinja_env.loader is not None
    app.jinja_env.loader = ChoiceLoader(
        [
            DictLoader(
                {"mine.html": "{% macro box(id) %}{{ toucan_dashboard(id) }}{% endmacro %}"}
            ),
            app.jinja_env.loader,
        ]
    )
    html = render(app, '{% import "mine.html" as m %}{{ m.box("x") }}')
    assert parse(html)[0][1]["dashboard-id"] == "x"
