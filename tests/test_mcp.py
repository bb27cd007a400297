"""Your own AI chat: Toucan's MCP endpoint and REST API as the signed-in user.

The endpoint here is FakeToucan's: the MCP SDK's own server (Streamable HTTP) behind the
fake's Bearer check, on loopback. Nothing of the client side is mocked.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, render_template_string
from werkzeug.serving import make_server

from flask_toucan import (
    Toucan,
    ToucanAnswer,
    ToucanAuthError,
    ToucanResponseError,
    ToucanUnavailable,
    ToucanUser,
)
from flask_toucan.mcp import arguments_for
from flask_toucan.testing import FakeToucan, decode_fake_token

from .conftest import API_KEY, USERS


def toucan_of(app: Flask) -> Toucan:
    toucan: Toucan = app.extensions["test_toucan"]
    return toucan


def mcp_requests(fake: FakeToucan) -> list[Any]:
    return [r for r in fake.requests if r.path == "/api/mcp"]


def bearer_of(request: Any) -> str:
    return str(request.headers.get("Authorization", "")).partition(" ")[2]


def test_each_user_asks_with_their_own_token_and_gets_their_own_answer(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    toucan = toucan_of(app)
    with app.app_context():
        alice = toucan.ask("What sold best?", user=USERS["alice"])
        carol = toucan.ask("What sold best?", user=USERS["carol"])
    assert isinstance(alice, ToucanAnswer)
    assert "alice" in alice.text and "tenant = acme" in alice.text
    assert "carol" in carol.text and "tenant = globex" in carol.text
    assert alice.visualizations[0]["title"] != carol.visualizations[0]["title"]
    assert [(who, q) for who, q, _ in fake.questions] == [
        ("alice", "What sold best?"),
        ("carol", "What sold best?"),
    ]
    # Every MCP request carried the Bearer token minted for that user, never the key.
    by_user = {decode_fake_token(t)["sub"]: t for t in fake.tokens_issued}
    assert set(by_user) == {"alice", "carol"}
    seen = {decode_fake_token(bearer_of(r))["sub"] for r in mcp_requests(fake)}
    assert seen == {"alice", "carol"}
    for r in mcp_requests(fake):
        assert "x-api-key" not in {name.lower() for name in r.headers}
        assert API_KEY not in repr(r.headers) + r.body.decode()


def test_a_page_view_and_a_question_cost_one_mint(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    toucan = toucan_of(app)

    @app.get("/chat")
    @toucan.inject_token
    def chat() -> str:
        answer = toucan.ask("What sold best?")
        return render_template_string(
            "{{ toucan_dashboard('sales') }}<p>{{ text }}</p>"
            "{% for v in visualizations %}{{ toucan_result(v) }}{% endfor %}",
            text=answer.text,
            visualizations=answer.visualizations,
        )

    client = app.test_client()
    page = client.get("/chat", headers={"X-User": "alice"})
    assert page.status_code == 200
    assert "tc-result-renderer" in page.get_data(as_text=True)
    assert client.get("/page", headers={"X-User": "alice"}).status_code == 200
    assert len(fake.mints) == 1
    assert bearer_of(mcp_requests(fake)[0]) == fake.tokens_issued[0]


def test_thread_id_reaches_the_tool(make_app: Callable[..., Flask], fake: FakeToucan) -> None:
    app = make_app()
    toucan = toucan_of(app)
    with app.app_context():
        first = toucan.ask("Revenue by region?", user=USERS["bob"])
        assert first.thread_id
        follow = toucan.ask("And last year?", thread_id=first.thread_id, user=USERS["bob"])
    assert fake.questions[-1] == ("bob", "And last year?", first.thread_id)
    assert follow.thread_id == first.thread_id
    assert follow.envelope["schema"] == "toucan-mcp-v1"


def test_a_revoked_token_is_minted_afresh_once_and_the_question_succeeds(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    toucan = toucan_of(app)
    with app.app_context():
        toucan.ask("one", user=USERS["alice"])
        fake.revoke()
        answer = toucan.ask("two", user=USERS["alice"])
        toucan.ask("three", user=USERS["alice"])
    assert "alice" in answer.text
    assert len(fake.mints) == 2  # the revoked token was replaced once, then reused
    statuses = [r.status for r in mcp_requests(fake)]
    assert statuses.count(401) == 1


def test_an_endpoint_that_always_refuses_is_an_auth_error_without_secrets(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    toucan = toucan_of(app)
    fake.fail(401, times=10, path="/api/mcp")
    with app.app_context(), pytest.raises(ToucanAuthError) as caught:
        toucan.ask("anything", user=USERS["alice"])
    text = str(caught.value) + repr(caught.value)
    assert "TOUCAN_MCP_URL" in text
    assert API_KEY not in text
    for token in fake.tokens_issued:
        assert token not in text
    assert len(fake.mints) == 2  # the cached one, then exactly one fresh mint
    assert [r.status for r in mcp_requests(fake)] == [401, 401]


def test_a_slow_endpoint_ends_at_the_deadline_with_a_typed_error(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app(TOUCAN_MCP_DEADLINE=1)
    toucan = toucan_of(app)
    fake.fail(200, delay=4, path="/api/mcp")
    started = time.monotonic()
    with app.app_context(), pytest.raises(ToucanUnavailable) as caught:
        toucan.ask("slow?", user=USERS["alice"])
    assert time.monotonic() - started < 3
    assert "TOUCAN_MCP_DEADLINE" in str(caught.value)


def test_a_dropped_connection_is_a_typed_error(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    toucan = toucan_of(app)
    fake.fail(drop=True, times=5, path="/api/mcp")
    with app.app_context(), pytest.raises(ToucanUnavailable) as caught:
        toucan.ask("dropped?", user=USERS["alice"])
    assert "TOUCAN_MCP_URL" in str(caught.value)


def test_ask_from_an_async_view_and_outside_a_request(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    toucan = toucan_of(app)

    @app.get("/async-chat")
    async def async_chat() -> str:
        answer = await toucan.ask_async("From async?")
        return answer.text

    @app.get("/wrong")
    async def wrong() -> str:
        return toucan.ask("sync inside a loop").text

    client = app.test_client()
    page = client.get("/async-chat", headers={"X-User": "carol"})
    assert page.status_code == 200 and "carol" in page.get_data(as_text=True)
    with pytest.raises(RuntimeError, match="ask_async"):
        client.get("/wrong", headers={"X-User": "carol"})
    with app.app_context():
        outside = toucan.ask("No request here", user={"distinct_id": "dave"})
    assert "dave" in outside.text


def test_mcp_session_lists_the_tools_the_server_offers(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    toucan = toucan_of(app)

    async def tools() -> list[str]:
        async with toucan.mcp_session(user=USERS["alice"]) as session:
            listed = await session.list_tools()
            result = await session.call_tool("list_dashboards", {})
            # snake_case in SDK 2.x, camelCase in 1.x
            content = getattr(result, "structured_content", None) or result.structuredContent
            assert content == {"dashboards": ["sales", "ops"], "viewer": "alice"}
            return [tool.name for tool in listed.tools]

    with app.app_context():
        names = asyncio.run(tools())
    assert set(names) == {"ask_toucan_assistant", "list_dashboards"}


def test_an_error_inside_the_session_block_goes_out_unchanged(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    toucan = toucan_of(app)

    class Mine(Exception):
        pass

    async def body() -> None:
        async with toucan.mcp_session(user=USERS["alice"]):
            raise Mine("the app's own error")

    with app.app_context(), pytest.raises(Mine):
        asyncio.run(body())


def test_waiting_on_the_assistant_never_blocks_other_users_pages(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    toucan = toucan_of(app)

    @app.get("/ask")
    def ask() -> str:
        return toucan.ask("slow question").text

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    import requests

    base = f"http://127.0.0.1:{server.server_port}"
    try:
        for name in ("alice", "bob"):  # both tokens warm: only the question waits now
            assert requests.get(base + "/page", headers={"X-User": name}, timeout=5).ok
        fake.delay = 1.0  # every request to Toucan now takes a second
        asked: list[int] = []
        asker = threading.Thread(
            target=lambda: asked.append(
                requests.get(base + "/ask", headers={"X-User": "alice"}, timeout=10).status_code
            )
        )
        asker.start()
        time.sleep(0.5)  # alice's question is now waiting on Toucan
        started = time.monotonic()
        page = requests.get(base + "/page", headers={"X-User": "bob"}, timeout=5)
        bob_took = time.monotonic() - started
        assert asker.is_alive(), "the question should still be waiting"
        asker.join(10)
    finally:
        server.shutdown()
    assert page.ok and asked == [200]
    assert bob_took < 1.5, f"bob's page waited {bob_took:.2f}s behind alice's question"


def test_api_session_sends_the_bearer_token_and_shares_the_page_cache(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    toucan = toucan_of(app)
    client = app.test_client()
    assert client.get("/page", headers={"X-User": "alice"}).status_code == 200
    with app.app_context():
        session = toucan.api_session(user=USERS["alice"])
    answer = session.get("/api/v1/dashboards/sales")
    assert answer.status_code == 200
    assert answer.json()["viewer"] == "alice"
    assert answer.json()["attributes"] == {"tenant": "acme", "region": "EU"}
    assert len(fake.mints) == 1  # the page's token
    rest = [r for r in fake.requests if r.path.startswith("/api/v1/")]
    assert bearer_of(rest[0]) == fake.tokens_issued[0]
    assert "x-api-key" not in {name.lower() for name in rest[0].headers}
    # Revoked: one fresh mint, one retry, success.
    fake.revoke()
    again = session.get("/api/v1/dashboards/ops")
    assert again.status_code == 200 and again.json()["id"] == "ops"
    assert len(fake.mints) == 2
    assert [r.status_code for r in again.history] == [401]
    # Refused again within the window: the 401 comes back, with no second fresh mint.
    fake.fail(401, times=5, path="/api/v1/")
    refused = session.get("/api/v1/dashboards/ops")
    assert refused.status_code == 401
    assert len(fake.mints) == 2
    assert "<token hidden>" in repr(session.auth)


def test_api_session_never_sends_the_token_to_another_host(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    toucan = toucan_of(app)
    with FakeToucan() as elsewhere:
        with app.app_context():
            session = toucan.api_session(user=USERS["alice"])
        answer = session.get(elsewhere.url + "/api/v1/dashboards/sales")
    assert answer.status_code == 401
    assert "Authorization" not in elsewhere.requests[0].headers


def test_preview_mode_answers_in_process() -> None:
    app = Flask(__name__)
    app.config.update(TOUCAN_PREVIEW=True, SECRET_KEY="x")
    toucan = Toucan(app)
    with app.app_context():
        answer = toucan.ask("What sold best?", user=ToucanUser("u1", attributes={"tenant": "t"}))
    assert "u1" in answer.text and "tenant = t" in answer.text
    assert answer.visualizations[0]["series"]


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"properties": {"q": {"type": "integer"}}, "required": ["q"]}, "string: none"),
        (
            {
                "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                "required": ["a", "b"],
            },
            "['a', 'b']",
        ),
        ({"properties": {}}, "requires nothing"),
    ],
)
def test_a_tool_schema_that_does_not_fit_says_what_it_found(
    schema: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ToucanResponseError, match="ask_toucan_assistant") as caught:
        arguments_for(schema, "q?", None)
    assert problem in str(caught.value)


def test_the_question_goes_to_the_single_required_string_and_the_thread_to_its_name() -> None:
    schema = {
        "properties": {"prompt": {"type": "string"}, "thread_id": {"type": "string"}},
        "required": ["prompt"],
    }
    assert arguments_for(schema, "q?", "t-1") == {"prompt": "q?", "thread_id": "t-1"}
    with pytest.raises(ToucanResponseError, match="no thread id"):
        arguments_for({"properties": {"q": {"type": "string"}}, "required": ["q"]}, "q?", "t")


HOSTILE = {
    "title": "</script><script>window.pwned=1</script><img src=x onerror=alert(1)>",
    "series": [{"name": "<b>&'\"", "value": 1}],
}


def test_toucan_result_cannot_inject_markup(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    with app.test_request_context("/"):
        html = str(render_template_string("{{ toucan_result(v, id='r1') }}", v=HOSTILE))
    # One script holder, one element, and the only `</script>` ones we wrote.
    assert html.count("<script") == 2  # the controller module and the JSON holder
    assert html.count("</script>") == 2
    assert "<img" not in html and "<b>" not in html
    assert '<tc-result-renderer data-toucan-result id="r1">' in html
    # The JSON holder parses back to exactly the payload.
    import json
    import re

    holder = re.search(r'<script type="application/json" data-toucan-payload>(.*?)</script>', html)
    assert holder is not None
    assert json.loads(holder.group(1)) == HOSTILE


def test_toucan_result_refuses_what_is_not_json(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    with app.test_request_context("/"), pytest.raises(ValueError, match="toucan_result"):
        render_template_string("{{ toucan_result(v) }}", v={"x": float("nan")})


def test_flask_toucan_mcp_tools_lists_what_the_server_offers(fake: FakeToucan) -> None:
    from .test_operations import flask_cli

    config = {"TOUCAN_API_KEY": API_KEY, "TOUCAN_BASE_URL": fake.url}
    done = flask_cli("toucan", "mcp", "tools", "--user", "ops-1", "--attr", "tenant=acme",
                     config=config)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"2 tools at {fake.url}/api/mcp for 'ops-1':" in done.stdout
    assert "ask_toucan_assistant(question)" in done.stdout
    assert "list_dashboards()" in done.stdout
    assert API_KEY not in output and "fake." not in output
    assert bearer_of(mcp_requests(fake)[0]) == fake.tokens_issued[0]
    fake.fail(401, times=4, path="/api/mcp")
    refused = flask_cli("toucan", "mcp", "tools", config=config)
    assert refused.returncode == 1
    assert "FAILED: Toucan's MCP endpoint (TOUCAN_MCP_URL) refused" in refused.stderr


def test_an_oversized_answer_ends_in_a_typed_error(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    toucan = toucan_of(app)
    fake.fail(200, body={"junk": "x" * (9 * 1024 * 1024)}, path="/api/mcp")
    with app.app_context(), pytest.raises(ToucanResponseError, match="larger than 8 MB"):
        toucan.ask("huge?", user=USERS["alice"])


def test_the_mcp_client_honours_toucan_proxies(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    """TOUCAN_PROXIES applies to the MCP endpoint as to minting: a dead proxy is a typed
    error naming TOUCAN_MCP_URL, never a direct connection around it."""
    from .servers import free_port

    app = make_app(TOUCAN_PROXIES={"http": f"http://127.0.0.1:{free_port()}"})
    toucan = toucan_of(app)
    with app.app_context():
        # The token comes from the cache (a page view before the proxy would be needed).
        app.extensions["toucan"].service.store.put(
            app.extensions["toucan"].service.key_for(
                app.extensions["toucan"].service.resolve(USERS["alice"])
            ),
            _token_from(fake),
        )
        with pytest.raises(ToucanUnavailable, match="TOUCAN_MCP_URL"):
            toucan.ask("through a dead proxy?", user=USERS["alice"])
    assert mcp_requests(fake) == []


def _token_from(fake: FakeToucan) -> Any:
    from flask_toucan import EmbedToken

    value = fake._issue({"user": {"distinctId": "alice", "role": "explorer", "attributes": {}}})
    return EmbedToken.from_lifetime(value, 3600, time.time())


def test_ask_over_tls_with_a_private_ca(
    make_app: Callable[..., Flask], tls_fake: FakeToucan, ca_bundle: str
) -> None:
    """TOUCAN_VERIFY (a CA bundle) applies to the MCP endpoint as to minting."""
    from flask_toucan import ToucanAPIError

    trusted = make_app(TOUCAN_BASE_URL=tls_fake.url, TOUCAN_VERIFY=ca_bundle)
    with trusted.app_context():
        answer = toucan_of(trusted).ask("Over TLS?", user=USERS["alice"])
    assert "alice" in answer.text
    assert tls_fake.questions == [("alice", "Over TLS?", None)]
    untrusted = make_app(TOUCAN_BASE_URL=tls_fake.url)  # the default trust store: refused
    with untrusted.app_context(), pytest.raises(ToucanAPIError):
        toucan_of(untrusted).ask("Not trusted?", user=USERS["bob"])
    assert len(tls_fake.questions) == 1


def test_each_instance_has_its_own_mcp_endpoint(make_app: Callable[..., Flask]) -> None:
    """TOUCAN_INSTANCES: a user of the "eu" instance asks that instance's MCP endpoint, with
    a token minted by that instance's key."""
    with FakeToucan(api_key="eu-key") as eu, FakeToucan(api_key="us-key") as us:
        app = make_app(
            TOUCAN_INSTANCES={
                "eu": {"BASE_URL": eu.url, "API_KEY": "eu-key"},
                "us": {"BASE_URL": us.url, "API_KEY": "us-key", "MCP_URL": us.url + "/api/mcp"},
            }
        )
        with app.app_context():
            toucan_of(app).ask("EU?", user=ToucanUser("e1", instance="eu"))
            toucan_of(app).ask("US?", user=ToucanUser("u1", instance="us"))
        assert eu.questions == [("e1", "EU?", None)] and len(eu.mints) == 1
        assert us.questions == [("u1", "US?", None)] and len(us.mints) == 1


def test_a_403_is_an_auth_error_at_once_without_a_fresh_mint(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    """Toucan answers 403 NO_ACTIVE_SUBSCRIPTION without the MCP plan: minting again
    cannot cure it."""
    app = make_app()
    toucan = toucan_of(app)
    fake.fail(403, body={"code": "NO_ACTIVE_SUBSCRIPTION", "message": "x"}, path="/api/mcp")
    with app.app_context(), pytest.raises(ToucanAuthError, match="HTTP 403") as caught:
        toucan.ask("anything", user=USERS["alice"])
    assert "NO_ACTIVE_SUBSCRIPTION" in str(caught.value)  # our wording, naming the cause
    assert len(fake.mints) == 1


def test_fakes_mcp_endpoint_without_the_sdk_names_the_extra() -> None:
    """The token endpoint works without the `mcp` extra; its MCP endpoint says what to install."""
    import subprocess
    import sys

    from .servers import ROOT

    script = """
import sys
sys.modules["mcp"] = None
import requests
from flask_toucan.testing import FakeToucan
with FakeToucan(api_key="k") as fake:
    token = requests.post(fake.url + "/embed/generate-token", headers={"x-api-key": "k"},
        json={"user": {"distinctId": "u", "role": "explorer", "attributes": {}}}).json()["token"]
    answer = requests.post(fake.mcp_url, headers={"Authorization": "Bearer " + token}, json={})
    print(answer.status_code, answer.json()["message"])
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.startswith("501 ") and "flask-toucan[mcp]" in done.stdout
