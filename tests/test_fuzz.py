"""A fuzz harness (hypothesis, fixed budget, derandomized) over what a browser or an
attacker can send: the refresh endpoint's bodies, headers, origins and variant
references, and the embed pages' ids and query strings.

Whatever arrives: never a 500, never an HTML error from the refresh endpoint, never a
token of another identity, never an elevated token without the page's own reference.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from flask import Flask, render_template_string, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_toucan import ToucanUser
from flask_toucan.testing import FakeToucan, decode_fake_token

from .markup import start_tags

BUDGET = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SAFE_ID = re.compile(r"^[A-Za-z0-9_.~-]{1,128}$")

junk_text = st.text(max_size=300)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | junk_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(junk_text, inner, max_size=4),
    max_leaves=12,
)
header_value = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80
)  # what a client can put on the wire (latin-1, no controls)


def fuzz_app(make_app: Callable[..., Flask]) -> Flask:
    app = make_app()
    toucan = app.extensions["test_toucan"]

    @toucan.user_loader
    def load() -> ToucanUser | None:
        name = request.headers.get("X-User")
        return ToucanUser(name, attributes={"tenant": "acme"}) if name in ("alice", "bob") else None

    @app.get("/admin")
    @toucan.inject_token(role="admin", allow=lambda: request.headers.get("X-User") == "alice")
    def admin() -> str:
        return render_template_string("{{ toucan_dashboard('ops') }}")

    return app


def mutations(reference: str) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.just(reference),
        st.builds(lambda cut: reference[:cut], st.integers(0, len(reference))),
        st.builds(lambda extra: reference + extra, junk_text),
        st.builds(lambda a, b: reference.replace(a, b), st.sampled_from("._-0aA"), junk_text),
        json_values,
    )


def test_the_refresh_endpoint_under_fuzz(make_app: Callable[..., Flask], fake: FakeToucan) -> None:
    app = fuzz_app(make_app)
    client = app.test_client()
    page = client.get("/admin", headers={"X-User": "alice"})
    reference = dict(start_tags(page.text))["tc-dashboard"]["data-toucan-variant"]
    seen: dict[str, int] = {}

    @BUDGET
    @given(
        user=st.sampled_from(["alice", "bob", None, "mallory"]),
        body=st.one_of(
            st.binary(max_size=400),
            st.builds(json.dumps, json_values).map(str.encode),
            st.builds(lambda v: json.dumps({"variant": v}).encode(), mutations(reference)),
        ),
        content_type=st.sampled_from(
            ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]
        ),
        origin=st.one_of(st.none(), st.just("http://localhost"), header_value),
        fetch_site=st.sampled_from([None, "same-origin", "cross-site", "none", "same-site"]),
        marker=st.sampled_from([None, "1", "0", ""]),
    )
    def one(
        user: str | None,
        body: bytes,
        content_type: str,
        origin: str | None,
        fetch_site: str | None,
        marker: str | None,
    ) -> None:
        headers = {
            name: value
            for name, value in (
                ("X-User", user),
                ("Origin", origin),
                ("Sec-Fetch-Site", fetch_site),
                ("X-Toucan-Refresh", marker),
                ("Content-Type", content_type or None),
            )
            if value is not None
        }
        response = client.post("/toucan/token", data=body, headers=headers)
        seen[str(response.status_code)] = seen.get(str(response.status_code), 0) + 1
        assert response.status_code < 500 or response.status_code in (502, 503), response.text
        assert response.mimetype == "application/json", response.text[:200]
        answer = response.get_json()
        assert isinstance(answer, dict)
        if response.status_code != 200:
            assert set(answer) >= {"error", "message"}
            return
        claims = decode_fake_token(answer["token"])
        assert claims["sub"] == user  # never a token of another identity
        if claims["role"] == "admin":  # elevated only through alice's genuine reference
            assert user == "alice"
            assert json.loads(body) == {"variant": reference}

    one()
    assert seen.get("200", 0) > 0 and len(seen) > 2, seen  # the fuzz reached every branch


def test_the_embed_pages_under_fuzz(make_app: Callable[..., Flask], fake: FakeToucan) -> None:
    client = make_app(TOUCAN_EMBED_PAGES=True).test_client()

    @BUDGET
    @given(
        kind=st.sampled_from(["dashboards", "charts"]),
        item=st.one_of(
            st.text(min_size=1, max_size=200),
            st.sampled_from(["..", ".", "a/b", "%2e%2e", "a%00b", "é", "x" * 129, "ok-id_1.2~"]),
        ),
        query=st.dictionaries(junk_text, junk_text, max_size=3),
        user=st.sampled_from(["alice", None]),
    )
    def one(kind: str, item: str, query: dict[str, str], user: str | None) -> None:
        from urllib.parse import quote

        headers = {"X-User": user} if user else {}
        response = client.get(
            f"/toucan/{kind}/{quote(item, safe='')}", query_string=query, headers=headers
        )
        # 308: werkzeug's own redirect of a path with "//" (an id holding "/") to its
        # merged form, before any code of ours runs.
        assert response.status_code in (200, 308, 401, 404), (item, response.status_code)
        if response.status_code == 200:
            assert SAFE_ID.match(item) and item not in (".", "..")
            element = dict(start_tags(response.text))["tc-dashboard"]
            assert element["dashboard-id" if kind == "dashboards" else "chart-id"] == item
            assert decode_fake_token(element["auth-token"])["sub"] == user

    one()
