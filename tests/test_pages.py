"""Ready-made embed pages (TOUCAN_EMBED_PAGES)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, render_template_string, url_for
from flask_talisman import Talisman
from jinja2 import DictLoader

from flask_toucan.testing import FakeToucan, decode_fake_token

from .markup import start_tags

ALICE = {"X-User": "alice"}


def tags(html: str) -> dict[str, dict[str, Any]]:
    return {t: a for t, a in start_tags(html)}


@pytest.mark.parametrize(
    "path", ["/toucan/dashboards/sales", "/toucan/charts/c1", "/toucan/assistant"]
)
def test_off_by_default(make_app: Callable[..., Flask], fake: FakeToucan, path: str) -> None:
    assert make_app().test_client().get(path, headers=ALICE).status_code == 404
    assert fake.requests == []


def test_every_page_with_true(make_app: Callable[..., Flask], fake: FakeToucan) -> None:
    client = make_app(TOUCAN_EMBED_PAGES=True).test_client()
    dashboard = client.get("/toucan/dashboards/sales", headers=ALICE)
    assert dashboard.status_code == 200
    found = tags(dashboard.text)
    assert found["tc-dashboard"]["dashboard-id"] == "sales"
    assert decode_fake_token(found["tc-dashboard"]["auth-token"])["sub"] == "alice"
    assert "toucan-refresh.js" in dashboard.text  # the controller: it works for hours
    assert dashboard.headers["Cache-Control"] == "private, no-store"
    assert "Cookie" in dashboard.headers["Vary"]
    assert dashboard.headers["Content-Security-Policy"] == "frame-ancestors 'self'"
    chart = tags(client.get("/toucan/charts/c1", headers=ALICE).text)
    assert chart["tc-dashboard"]["chart-id"] == "c1"
    assistant = tags(client.get("/toucan/assistant", headers=ALICE).text)
    assert "tc-ai-assistant" in assistant
    assert len(fake.mints) == 1  # one token for alice, reused


def test_no_user_is_401(make_app: Callable[..., Flask], fake: FakeToucan) -> None:
    client = make_app(TOUCAN_EMBED_PAGES=True).test_client()
    for path in ("/toucan/dashboards/sales", "/toucan/assistant"):
        assert client.get(path).status_code == 401
    assert fake.requests == []


def test_a_list_allows_only_its_ids(make_app: Callable[..., Flask], fake: FakeToucan) -> None:
    client = make_app(TOUCAN_EMBED_PAGES=["sales", "c1"]).test_client()
    assert client.get("/toucan/dashboards/sales", headers=ALICE).status_code == 200
    assert client.get("/toucan/charts/c1", headers=ALICE).status_code == 200
    mints = len(fake.requests)
    denied = client.get("/toucan/dashboards/payroll", headers=ALICE)
    unknown = client.get("/toucan/no-such-route/x", headers=ALICE)
    assert denied.status_code == unknown.status_code == 404
    assert denied.text == client.get("/toucan/dashboards/zzz", headers=ALICE).text
    assert client.get("/toucan/assistant", headers=ALICE).status_code == 404
    assert len(fake.requests) == mints  # no upstream call for what is not allowed


def test_the_callable_decides_per_user(make_app: Callable[..., Flask], fake: FakeToucan) -> None:
    from flask import request

    seen: list[tuple[str, str | None]] = []

    def allow(kind: str, item_id: str | None) -> bool:
        seen.append((kind, item_id))
        return request.headers.get("X-User") == "alice" or kind == "assistant"

    client = make_app(TOUCAN_EMBED_PAGES=allow).test_client()
    assert client.get("/toucan/dashboards/sales", headers=ALICE).status_code == 200
    assert client.get("/toucan/charts/c9", headers={"X-User": "bob"}).status_code == 404
    assert client.get("/toucan/assistant", headers={"X-User": "bob"}).status_code == 200
    assert seen == [("dashboard", "sales"), ("chart", "c9"), ("assistant", None)]
    assert [r.json["user"]["distinctId"] for r in fake.mints] == ["alice", "bob"]


@pytest.mark.parametrize(
    ("theme", "expected"),
    [
        ("dark", "dark"),
        ("light", "light"),
        ("purple", None),
        ('dark" onload="alert(1)', None),
        ("<script>alert(1)</script>", None),
    ],
)
def test_theme_is_honoured_or_ignored_never_echoed(
    make_app: Callable[..., Flask], fake: FakeToucan, theme: str, expected: str | None
) -> None:
    client = make_app(TOUCAN_EMBED_PAGES=True).test_client()
    page = client.get("/toucan/dashboards/sales", headers=ALICE, query_string={"theme": theme})
    assert page.status_code == 200
    assert tags(page.text)["tc-dashboard"].get("data-theme") == expected
    if expected is None:
        assert theme not in page.text and "alert(1)" not in page.text


@pytest.mark.parametrize(
    "item_id", ['x"><script>alert(1)<', "..", ".", "a%00b", "a%0Ab", "x" * 129, "a b"]
)
def test_ids_outside_the_safe_alphabet_are_404(
    make_app: Callable[..., Flask], fake: FakeToucan, item_id: str
) -> None:
    client = make_app(TOUCAN_EMBED_PAGES=True).test_client()
    page = client.get(f"/toucan/dashboards/{item_id}", headers=ALICE)
    assert page.status_code == 404
    assert "<script>alert(1)" not in page.text
    assert fake.requests == []  # Toucan was not asked


def test_ids_in_the_safe_alphabet_are_served(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    client = make_app(TOUCAN_EMBED_PAGES=True).test_client()
    page = client.get("/toucan/dashboards/sales-2024_Q1.v2~eu", headers=ALICE)
    assert page.status_code == 200
    assert tags(page.text)["tc-dashboard"]["dashboard-id"] == "sales-2024_Q1.v2~eu"


def test_templates_can_be_overridden(make_app: Callable[..., Flask], fake: FakeToucan) -> None:
    app = make_app(TOUCAN_EMBED_PAGES=True, TOUCAN_EMBED_LAYOUT="base.html")
    app.jinja_loader = DictLoader(
        {
            "base.html": "<html><head>{% block head %}{% endblock %}</head>"
            "<body><nav>Acme Portal</nav>{% block content %}{% endblock %}</body></html>"
        }
    )
    page = app.test_client().get("/toucan/dashboards/sales", headers=ALICE).text
    assert "<nav>Acme Portal</nav>" in page and "tc-dashboard" in page
    assert "toucan-refresh.js" in page
    # An app's own toucan/embed.html wins over the shipped one.
    app.jinja_loader.mapping["toucan/embed.html"] = "custom {{ kind }} {{ item_id }}"
    app.jinja_env.cache = {}
    assert app.test_client().get("/toucan/charts/c2", headers=ALICE).text == "custom chart c2"


def test_frame_ancestors_setting(make_app: Callable[..., Flask], fake: FakeToucan) -> None:
    app = make_app(
        TOUCAN_EMBED_PAGES=True,
        TOUCAN_EMBED_FRAME_ANCESTORS="'self' https://help.example.com",
    )
    page = app.test_client().get("/toucan/dashboards/sales", headers=ALICE)
    assert page.headers["Content-Security-Policy"] == (
        "frame-ancestors 'self' https://help.example.com"
    )
    # Only on embed pages.
    assert "Content-Security-Policy" not in app.test_client().get("/page", headers=ALICE).headers


def test_frame_ancestors_merges_with_flask_talisman(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app(TOUCAN_EMBED_PAGES=True, TOUCAN_EMBED_FRAME_ANCESTORS="'self' https://a.example")
    Talisman(
        app,
        force_https=False,
        content_security_policy={
            "default-src": "'self'",
            "script-src": "'self'",
            "frame-ancestors": "'none'",
        },
        content_security_policy_nonce_in=["script-src"],
    )
    page = app.test_client().get("/toucan/dashboards/sales", headers=ALICE)
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp  # the app's policy is kept...
    assert "script-src 'self' 'nonce-" in csp
    assert csp.count("frame-ancestors") == 1  # ...with our frame-ancestors in it
    assert csp.endswith("frame-ancestors 'self' https://a.example")
    assert "X-Frame-Options" not in page.headers
    nonce = csp.split("'nonce-")[1].split("'")[0]
    scripts = [a for t, a in start_tags(page.text) if t == "script"]
    assert scripts and all(a["nonce"] == nonce for a in scripts)
    # Other pages keep Talisman's headers untouched.
    other = app.test_client().get("/page", headers=ALICE)
    assert "frame-ancestors 'none'" in other.headers["Content-Security-Policy"]
    assert other.headers["X-Frame-Options"] == "SAMEORIGIN"


def test_placeholder_and_required_attributes_apply(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app(
        TOUCAN_EMBED_PAGES=True,
        TOUCAN_ON_ERROR="placeholder",
        TOUCAN_REQUIRED_ATTRIBUTES=["tenant"],
    )
    client = app.test_client()
    fake.fail(503)
    down = client.get("/toucan/dashboards/sales", headers=ALICE)
    assert down.status_code == 200 and 'data-toucan-unavailable="dashboard"' in down.text
    assert down.headers["Cache-Control"] == "private, no-store"
    app.extensions["test_toucan"].user_loader(lambda: {"distinct_id": "no-tenant"})
    fake.reset()
    missing = client.get("/toucan/dashboards/sales", headers=ALICE)
    assert 'data-toucan-unavailable="dashboard"' in missing.text
    assert fake.requests == []


def test_url_for_works_in_templates(make_app: Callable[..., Flask], fake: FakeToucan) -> None:
    app = make_app(TOUCAN_EMBED_PAGES=True)
    with app.test_request_context():
        assert url_for("toucan.dashboard_page", dashboard_id="sales") == "/toucan/dashboards/sales"
        assert url_for("toucan.chart_page", chart_id="c1") == "/toucan/charts/c1"
        assert url_for("toucan.assistant_page") == "/toucan/assistant"
        html = render_template_string(
            "<iframe src=\"{{ url_for('toucan.dashboard_page', dashboard_id='sales') }}\">"
        )
    assert html == '<iframe src="/toucan/dashboards/sales">'


def test_every_csp_header_the_app_set_is_kept_with_frame_ancestors_merged(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app(TOUCAN_EMBED_PAGES=True)

    @app.after_request
    def two_policies(response: Any) -> Any:
        response.headers.add("Content-Security-Policy", "default-src 'self'; frame-ancestors *")
        response.headers.add("Content-Security-Policy", "script-src 'none'")
        return response

    page = app.test_client().get("/toucan/dashboards/sales", headers=ALICE)
    assert page.headers.getlist("Content-Security-Policy") == [
        "default-src 'self'; frame-ancestors 'self'",
        "script-src 'none'; frame-ancestors 'self'",
    ]
