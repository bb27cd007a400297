from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, render_template_string
from flask_wtf import CSRFProtect

from flask_toucan.testing import FakeToucan, decode_fake_token

from .conftest import Clock
from .markup import start_tags

SAME_SITE = {"X-Toucan-Refresh": "1", "Sec-Fetch-Site": "same-origin", "X-User": "alice"}


def refresh(client: Any, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
    return client.post("/toucan/token", headers=SAME_SITE if headers is None else headers, **kwargs)


def test_anonymous_is_401_json(client: Any, fake: FakeToucan) -> None:
    response = refresh(client, {"X-Toucan-Refresh": "1"})
    assert response.status_code == 401
    assert response.json["error"] == "session_ended"
    assert response.headers["Cache-Control"] == "private, no-store"
    assert fake.requests == []


@pytest.mark.parametrize(
    "headers",
    [
        {"X-User": "alice"},  # no custom header: what a cross-site form sends
        {"X-User": "alice", "X-Toucan-Refresh": "yes"},
        {"X-User": "alice", "X-Toucan-Refresh": "1", "Sec-Fetch-Site": "cross-site"},
        {"X-User": "alice", "X-Toucan-Refresh": "1", "Sec-Fetch-Site": "same-site"},
        {"X-User": "alice", "X-Toucan-Refresh": "1", "Origin": "https://evil.example"},
        {"X-User": "alice", "X-Toucan-Refresh": "1", "Origin": "null"},
    ],
)
def test_cross_site_is_403(client: Any, fake: FakeToucan, headers: dict[str, str]) -> None:
    response = refresh(client, headers)
    assert response.status_code == 403
    assert response.json["error"] == "forbidden"
    assert fake.requests == []


def test_same_origin_gets_token_with_no_store(client: Any, fake: FakeToucan, clock: Clock) -> None:
    response = refresh(client, {**SAME_SITE, "Origin": "http://localhost"})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "private, no-store"
    data = response.json
    assert set(data) == {"token", "expiresAt", "expiresIn"}
    assert data["expiresIn"] == 3600
    assert decode_fake_token(data["token"])["sub"] == "alice"


def test_token_is_for_the_server_side_user_whatever_the_body_says(
    client: Any, fake: FakeToucan
) -> None:
    hostile = {
        "user": {"distinctId": "bob", "role": "admin", "attributes": {"tenant": "globex"}},
        "distinct_id": "bob",
        "role": "admin",
        "permissions": {"database": "can_edit"},
        "variant": "not-a-signed-reference",
    }
    response = refresh(client, json=hostile)
    # A forged variant is refused outright; without it, the body is ignored.
    assert response.status_code == 403
    hostile.pop("variant")
    response = refresh(client, json=hostile)
    assert response.status_code == 200
    claims = decode_fake_token(response.json["token"])
    assert claims["sub"] == "alice"
    assert claims["role"] == "explorer"
    assert claims["attributes"] == {"tenant": "acme", "region": "EU"}
    assert claims["permissions"] is None


def test_reused_token_keeps_at_least_min_ttl(client: Any, fake: FakeToucan, clock: Clock) -> None:
    page = client.get("/page", headers={"X-User": "alice"})
    page_token = page.text.split('auth-token="')[1].split('"')[0]
    clock.advance(3600 - 400)
    reused = refresh(client).json
    assert reused["token"] == page_token
    assert reused["expiresIn"] >= 300
    clock.advance(101)  # 299 s left: too little, so a new one
    fresh = refresh(client).json
    assert fresh["token"] != page_token
    assert fresh["expiresIn"] == 3600
    assert len(fake.mints) == 2


def test_upstream_failure_is_json_503_without_vendor_body(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    client = make_app().test_client()
    fake.fail(503, body={"code": "boom", "message": "vendor internals"})
    response = refresh(client)
    assert response.status_code == 503
    assert response.json == {"error": "unavailable", "message": "analytics are unavailable"}
    assert "vendor internals" not in response.text


def components(html: str) -> list[dict[str, str | None]]:
    return [attrs for tag, attrs in start_tags(html) if tag.startswith("tc-")]


def test_signed_variant_renews_the_same_role_and_permissions(app: Flask, fake: FakeToucan) -> None:
    toucan = app.extensions["test_toucan"]

    @app.get("/ai")
    @toucan.inject_token(role="analyst", permissions={"ai": "can_query"})
    def ai() -> str:
        return render_template_string("{{ toucan_assistant() }}")

    client = app.test_client()
    variant = components(client.get("/ai", headers={"X-User": "alice"}).text)[0][
        "data-toucan-variant"
    ]
    assert variant
    response = refresh(client, json={"variant": variant})
    claims = decode_fake_token(response.json["token"])
    assert claims["role"] == "analyst"
    assert claims["permissions"] == {"ai": "can_query"}
    assert len(fake.mints) == 1  # same identity as the page: reused
    # Another user cannot use alice's reference.
    stolen = refresh(client, {**SAME_SITE, "X-User": "bob"}, json={"variant": variant})
    assert stolen.status_code == 403
    # A tampered reference is refused.
    tampered = refresh(client, json={"variant": variant[:-2] + "xx"})
    assert tampered.status_code == 403


def test_plain_pages_carry_no_variant(client: Any) -> None:
    page = components(client.get("/page", headers={"X-User": "alice"}).text)
    assert "data-toucan-variant" not in page[0]


@pytest.mark.parametrize("csrf_first", [True, False])
def test_works_with_flask_wtf_csrf_protect(
    config: dict[str, Any], fake: FakeToucan, csrf_first: bool
) -> None:
    from flask_toucan import Toucan

    from .conftest import current_test_user

    app = Flask(__name__)
    app.config.update(config, TESTING=False, WTF_CSRF_ENABLED=True)
    csrf = CSRFProtect()
    if csrf_first:
        csrf.init_app(app)
    toucan = Toucan(app)
    if not csrf_first:
        csrf.init_app(app)
    toucan.user_loader(current_test_user)

    @app.post("/form")
    def form() -> str:
        return "ok"

    client = app.test_client()
    # CSRFProtect still guards the app's own forms...
    assert client.post("/form").status_code == 400
    # ...while the refresh endpoint relies on its own defence.
    assert refresh(client).status_code == 200
    assert refresh(client, {"X-User": "alice"}).status_code == 403
