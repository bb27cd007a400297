"""The refresh controller in a real Chromium, against the app on a real WSGI server."""

from __future__ import annotations

import itertools
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, redirect, render_template_string, request, session
from flask_talisman import Talisman
from playwright.sync_api import Browser, Page, sync_playwright
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

from flask_toucan import Toucan, ToucanUser
from flask_toucan.testing import FakeToucan, decode_fake_token

from .conftest import API_KEY

LIFETIME = 8  # seconds of life of each token
# TOUCAN_MIN_TOKEN_TTL: with lifetime / 4 = 2 as well, the serving margin is 2 s, and the
# controller renews in the last 1.5 to 1.9 s.
MARGIN = 2

PAGE = """<!doctype html><html><head><title>t</title>{{ toucan_script() }}</head>
<body><main id="main">{{ toucan_dashboard('sales', id='dash') }}
{{ toucan_assistant(id='chat') }}</main></body></html>"""

RECORD_EVENTS = """
window.__events = [];
window.__violations = [];
for (const name of ["toucan:token-refreshed", "toucan:token-error", "toucan:session-ended",
                    "toucan:access-revoked"]) {
  document.addEventListener(name, (e) => window.__events.push({type: name, detail: e.detail,
                                                               at: Date.now()}));
}
document.addEventListener("securitypolicyviolation", (e) =>
  window.__violations.push(e.violatedDirective + " " + e.blockedURI));
"""


def chromium_path() -> str:
    path = os.environ.get("TOUCAN_TEST_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail(
            "Chromium is needed for the browser tests: install Debian's chromium package "
            "(scripts/test.sh does it when it can) or set TOUCAN_TEST_CHROMIUM",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=chromium_path(),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
            ],
        )
        yield b
        b.close()


def leak_checked(app: Flask) -> Any:
    """WSGI middleware: fails the request if a response carries the API key."""
    inner = app.wsgi_app

    def middleware(environ: dict[str, Any], start_response: Any) -> Any:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            captured["headers"] = headers
            return start_response(status, headers, *exc)

        iterable = inner(environ, capture)
        try:
            body = b"".join(iterable)
        finally:
            if hasattr(iterable, "close"):
                iterable.close()
        assert API_KEY.encode() not in body, "the API key reached the browser"
        assert all(API_KEY not in v for _, v in captured["headers"])
        return [body]

    return middleware


class LiveServer:
    def __init__(self, app: Flask) -> None:
        app.wsgi_app = leak_checked(app)  # type: ignore[method-assign]
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Flask], LiveServer]]:
    servers: list[LiveServer] = []

    def start(app: Flask) -> LiveServer:
        servers.append(LiveServer(app))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def short_fake() -> Iterator[FakeToucan]:
    with FakeToucan(api_key=API_KEY, expires_in=LIFETIME) as fake:
        yield fake


def browser_app(fake: FakeToucan, **config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="browser-tests",
        TOUCAN_API_KEY=API_KEY,
        TOUCAN_BASE_URL=fake.url,
        TOUCAN_MIN_TOKEN_TTL=MARGIN,
        TOUCAN_MAX_RETRIES=0,
        TOUCAN_TIMEOUT=(2, 2),
        # The preview stand-ins record every auth-token value they are given.
        TOUCAN_SCRIPT_URL="/toucan/static/toucan-preview.js",
    )
    app.config.update(config)
    toucan = Toucan(app)
    app.extensions["test_toucan"] = toucan
    refreshes: list[int] = []
    app.extensions["refresh_statuses"] = refreshes

    @toucan.user_loader
    def load() -> ToucanUser | None:
        name = session.get("user")
        return ToucanUser(name, attributes={"tenant": "acme"}) if name else None

    @app.get("/login/<name>")
    def login(name: str) -> Response:
        session["user"] = name
        return redirect("/")

    @app.get("/logout")
    def logout() -> str:
        session.pop("user", None)
        return "bye"

    @app.get("/")
    @toucan.inject_token
    def index() -> str:
        return render_template_string(PAGE)

    @app.after_request
    def count(response: Response) -> Response:
        if request.path == "/toucan/token":
            refreshes.append(response.status_code)
        return response

    return app


def open_page(browser: Browser, url: str) -> Page:
    context = browser.new_context()
    context.add_init_script(RECORD_EVENTS)
    page = context.new_page()
    page.goto(url + "/login/alice")
    page.wait_for_selector("tc-dashboard")
    return page


Launched = tuple[Flask, LiveServer, Page]


@pytest.fixture
def launch(
    browser: Browser, serve: Callable[[Flask], LiveServer], short_fake: FakeToucan
) -> Callable[..., Launched]:
    """Serve ``browser_app(**config)`` and open its page signed in as alice."""

    def start(**config: Any) -> Launched:
        app = browser_app(short_fake, **config)
        server = serve(app)
        return app, server, open_page(browser, server.url)

    return start


def tokens_of(page: Page, element_id: str = "dash") -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = page.evaluate("window.toucanPreview.tokens")
    return [e for e in entries if e["element"] == element_id]


def events(page: Page, kind: str) -> list[dict[str, Any]]:
    return [e for e in page.evaluate("window.__events") if e["type"] == kind]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def assert_replaced_before_expiry(history: list[dict[str, Any]]) -> None:
    values = [h["token"] for h in history]
    assert len(set(values)) == len(values), "a refresh handed back a token already used"
    for previous, following in itertools.pairwise(history):
        expires = decode_fake_token(previous["token"])["exp"]
        assert following["at"] / 1000 < expires, "a token expired before it was replaced"


def test_tokens_are_replaced_before_expiry_repeatedly(launch: Callable[..., Launched]) -> None:
    app, _, page = launch()
    wait_for(lambda: len(tokens_of(page)) >= 4, 25, "four tokens on the dashboard")
    history = tokens_of(page)
    # One request per renewal (two elements, one page): no duplicate or wasted calls.
    statuses = app.extensions["refresh_statuses"]
    assert set(statuses) == {200}
    assert len(statuses) <= len(history)
    assert_replaced_before_expiry(history)
    assert all(decode_fake_token(h["token"])["sub"] == "alice" for h in history)
    # The assistant got the same tokens as the dashboard.
    chat = [h["token"] for h in tokens_of(page, "chat")]
    assert [h["token"] for h in history][:3] == chat[:3]
    refreshed = events(page, "toucan:token-refreshed")
    assert len(refreshed) >= 3
    assert all("token" not in e["detail"] for e in refreshed)
    assert refreshed[0]["detail"]["elements"] == 2
    assert (
        page.evaluate("document.querySelector('#dash').getAttribute('auth-token')")
        == (history[-1]["token"])
    )
    page.context.close()


def test_element_added_later_is_kept_fresh(launch: Callable[..., Launched]) -> None:
    _, _, page = launch()
    page.evaluate(
        """() => { const el = document.createElement('tc-dashboard');
                   el.id = 'late'; el.setAttribute('dashboard-id', 'late');
                   document.getElementById('main').append(el); }"""
    )
    wait_for(lambda: len(tokens_of(page, "late")) >= 1, 5, "a token for the late element")
    first_dash = tokens_of(page)[-1]["token"]
    assert tokens_of(page, "late")[0]["token"] == first_dash
    wait_for(lambda: len(tokens_of(page, "late")) >= 3, 20, "refreshes of the late element")
    assert_replaced_before_expiry(tokens_of(page, "late"))
    page.context.close()


def test_transient_failure_is_retried_and_recovers(
    launch: Callable[..., Launched], short_fake: FakeToucan
) -> None:
    app, _, page = launch()
    short_fake.fail(503, times=1)
    wait_for(lambda: len(events(page, "toucan:token-refreshed")) >= 1, 15, "recovery")
    errors = events(page, "toucan:token-error")
    assert [e["detail"]["status"] for e in errors] == [503]
    assert [e["detail"]["attempt"] for e in errors] == [1]
    assert all(e["detail"]["expired"] is False for e in errors)
    # The server's back-off for this identity came as Retry-After, and was waited for:
    # one retry, after it, instead of a burst of early ones told the same.
    assert errors[0]["detail"]["retryIn"] >= 1000
    recovered = events(page, "toucan:token-refreshed")[0]
    assert recovered["at"] - errors[0]["at"] >= 1000
    assert app.extensions["refresh_statuses"][:2] == [503, 200]
    assert_replaced_before_expiry(tokens_of(page))
    page.context.close()


def test_network_error_is_retried(launch: Callable[..., Launched]) -> None:
    _, _, page = launch()
    page.route("**/toucan/token", lambda route: route.abort("connectionreset"), times=1)
    wait_for(lambda: len(events(page, "toucan:token-refreshed")) >= 1, 15, "recovery")
    errors = events(page, "toucan:token-error")
    assert errors and errors[0]["detail"]["status"] == 0
    page.context.close()


def test_signed_out_user_stops_the_loop(launch: Callable[..., Launched]) -> None:
    app, server, page = launch()
    page.context.request.get(server.url + "/logout")
    wait_for(lambda: bool(events(page, "toucan:session-ended")), 10, "session-ended")
    assert events(page, "toucan:session-ended")[0]["detail"] == {"status": 401}
    statuses = list(app.extensions["refresh_statuses"])
    assert statuses == [401]
    time.sleep(LIFETIME + 1)
    assert app.extensions["refresh_statuses"] == statuses, "the loop kept going after 401"
    page.context.close()


def test_remount_strategy_replaces_elements(launch: Callable[..., Launched]) -> None:
    _, _, page = launch(TOUCAN_REFRESH_STRATEGY="remount")
    first = page.evaluate(
        "() => { const d = document.querySelector('#dash'); d.__original = true;"
        " return d.getAttribute('auth-token'); }"
    )
    wait_for(lambda: len(events(page, "toucan:token-refreshed")) >= 2, 15, "two refreshes")
    state = page.evaluate(
        "() => { const d = document.querySelector('#dash');"
        " return {original: d.__original === true, token: d.getAttribute('auth-token'),"
        " history: d.tokenHistory.length, count: document.querySelectorAll('#dash').length}; }"
    )
    assert state["original"] is False
    assert state["token"] != first
    assert state["count"] == 1
    # A fresh element saw only its own token: it was created, not updated.
    assert state["history"] == 1
    assert events(page, "toucan:token-refreshed")[0]["detail"]["strategy"] == "remount"
    page.context.close()


def test_strict_csp_with_nonces_runs_the_controller(
    browser: Browser, serve: Callable[[Flask], LiveServer], short_fake: FakeToucan
) -> None:
    app = browser_app(short_fake)
    Talisman(
        app,
        force_https=False,
        content_security_policy={
            "default-src": "'self'",
            "script-src": ["'self'", "'strict-dynamic'"],
            "style-src": "'self'",
        },
        content_security_policy_nonce_in=["script-src"],
    )
    server = serve(app)
    context = browser.new_context()
    context.add_init_script(RECORD_EVENTS)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text))
    response = page.goto(server.url + "/login/alice")
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "'nonce-" in csp and "'strict-dynamic'" in csp
    wait_for(lambda: len(events(page, "toucan:token-refreshed")) >= 1, 15, "a refresh under CSP")
    assert page.evaluate("window.__violations") == []
    assert not [m for m in console if "Content Security Policy" in m]
    context.close()


def test_demo_screenshot_shows_refreshed_token(
    browser: Browser, serve: Callable[[Flask], LiveServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples.demo.app import create_app

    monkeypatch.delenv("TOUCAN_API_KEY", raising=False)
    demo = create_app({"TOUCAN_MIN_TOKEN_TTL": MARGIN}, token_lifetime=LIFETIME)
    server = serve(demo)
    context = browser.new_context(viewport={"width": 1200, "height": 700})
    context.add_init_script(RECORD_EVENTS)
    page = context.new_page()
    page.goto(server.url + "/")
    with page.expect_navigation():
        page.select_option("#user-switcher", "chen")
    wait_for(lambda: len(events(page, "toucan:token-refreshed")) >= 1, 15, "a refresh")
    dash = page.locator("#dashboard")
    text = dash.evaluate("el => el.shadowRoot.textContent")
    assert "PREVIEW" in text and "chen" in text and "globex" in text
    assert dash.evaluate("el => el.tokenHistory.length") >= 2
    assert "Tokens received 2" in text
    assert "expired" not in text
    out = Path(os.environ.get("TOUCAN_TEST_ARTIFACTS", "test-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    shot = out / "demo-refreshed.png"
    page.screenshot(path=str(shot))
    assert 0 < shot.stat().st_size < 500_000
    context.close()


def chart_labels(page: Page) -> dict[str, Any]:
    return dict(
        page.locator("#dashboard").evaluate(
            """el => ({
                caption: el.shadowRoot.querySelector('figcaption').textContent,
                legend: el.shadowRoot.querySelector('.legend').textContent,
                values: [...el.shadowRoot.querySelectorAll('svg text.value')]
                            .map(t => t.textContent),
                answer: document.querySelector('#assistant').shadowRoot
                            .querySelector('.a').textContent,
            })"""
        )
    )


def test_demo_charts_follow_the_users_attributes(
    browser: Browser, serve: Callable[[Flask], LiveServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples.demo.app import create_app

    monkeypatch.delenv("TOUCAN_API_KEY", raising=False)
    server = serve(create_app())
    page = browser.new_context(viewport={"width": 420, "height": 900}).new_page()
    page.goto(server.url + "/")
    page.wait_for_selector("#dashboard")
    seen = {}
    for user in ("alice", "chen", "bob"):
        if user != "alice":
            with page.expect_navigation():
                page.select_option("#user-switcher", user)
        wait_for(lambda: bool(page.evaluate("window.toucanPreview.tokens.length")), 5, "tokens")
        seen[user] = chart_labels(page)
    assert "acme" in seen["alice"]["caption"] and "globex" in seen["chen"]["caption"]
    assert seen["alice"]["legend"].split() == ["acme", "·", "EU"]
    assert seen["chen"]["legend"].split() == ["globex", "·", "APAC"]
    assert seen["bob"]["legend"].split() == ["acme", "·", "US"]  # only the US region
    assert seen["alice"]["values"] != seen["chen"]["values"]  # another tenant, other numbers
    assert "globex in APAC" in seen["chen"]["answer"]
    # Readable at 420 px: nothing overflows the card horizontally.
    overflow = page.locator("#dashboard").evaluate("el => el.scrollWidth - el.clientWidth")
    assert overflow <= 1
    page.context.close()


def test_late_timer_after_sleep_renews_at_once(
    browser: Browser, serve: Callable[[Flask], LiveServer], short_fake: FakeToucan
) -> None:
    app = browser_app(short_fake)
    server = serve(app)
    context = browser.new_context()
    context.add_init_script(RECORD_EVENTS)
    page = context.new_page()
    page.clock.install()
    page.goto(server.url + "/login/alice")
    page.wait_for_selector("tc-dashboard")
    # "Close the lid": the page's timers stop while real time (and the token) runs on.
    page.clock.pause_at((page.evaluate("Date.now()") + 100) / 1000)  # seconds
    time.sleep(LIFETIME - MARGIN + 1.5)
    assert app.extensions["refresh_statuses"] == [], "a timer fired while asleep"
    first = tokens_of(page)[-1]["token"]
    # "Open the lid": time jumps ahead, the overdue timer fires once, late.
    page.clock.fast_forward(LIFETIME * 1000)
    page.clock.resume()
    wait_for(lambda: tokens_of(page)[-1]["token"] != first, 3, "an immediate renewal")
    assert app.extensions["refresh_statuses"][0] == 200
    context.close()


def test_revoked_variant_stops_while_the_rest_renews(
    browser: Browser, serve: Callable[[Flask], LiveServer], short_fake: FakeToucan
) -> None:
    admins = {"alice"}
    app = browser_app(short_fake)
    toucan = app.extensions["test_toucan"]

    @app.get("/mixed")
    @toucan.inject_token
    def mixed() -> str:
        return render_template_string(
            "<!doctype html><html><head>{{ toucan_script() }}</head><body>"
            "{{ toucan_dashboard('sales', id='dash') }}<div id=admin></div></body></html>"
        )

    @app.get("/admin-fragment")
    @toucan.inject_token(role="admin", allow=lambda: session.get("user") in admins)
    def admin_fragment() -> str:
        return render_template_string("{{ toucan_assistant(id='chat') }}")

    server = serve(app)
    page = open_page(browser, server.url)
    page.goto(server.url + "/mixed")
    page.wait_for_selector("#dash")
    # The admin element arrives as a fragment (htmx-style), with its own variant.
    page.evaluate(
        """async (url) => { const html = await (await fetch(url)).text();
                            document.getElementById('admin').innerHTML = html; }""",
        server.url + "/admin-fragment",
    )
    page.wait_for_selector("#chat[data-toucan-variant]")
    admins.clear()  # demoted with the page open
    wait_for(lambda: bool(events(page, "toucan:access-revoked")), 15, "access-revoked")
    revoked = events(page, "toucan:access-revoked")
    assert revoked[0]["detail"] == {"code": "access_revoked", "elements": 1}
    assert not events(page, "toucan:session-ended")
    chat_tokens = len(tokens_of(page, "chat"))
    dash_before = len(tokens_of(page))
    # The plain dashboard keeps renewing; the revoked assistant does not.
    wait_for(lambda: len(tokens_of(page)) >= dash_before + 2, 20, "two more dashboard tokens")
    assert len(tokens_of(page, "chat")) == chat_tokens
    assert len(events(page, "toucan:access-revoked")) == 1
    roles = {decode_fake_token(h["token"])["role"] for h in tokens_of(page)}
    assert roles == {"explorer"}
    # Signing out still ends everything, with its own event.
    page.context.request.get(server.url + "/logout")
    wait_for(lambda: bool(events(page, "toucan:session-ended")), 15, "session-ended")
    assert events(page, "toucan:session-ended")[0]["detail"] == {"status": 401}
    page.context.close()


def test_variant_renews_until_its_max_age_from_render_then_stops(
    browser: Browser,
    serve: Callable[[Flask], LiveServer],
    short_fake: FakeToucan,
) -> None:
    # A variant lives 14 s from render here instead of a day; a token is renewed every
    # ~6 s: renewals work until then, and the element is then told to reload.
    app = browser_app(short_fake, TOUCAN_VARIANT_MAX_AGE=14)
    toucan = app.extensions["test_toucan"]

    @app.get("/admin")
    @toucan.inject_token(role="admin", allow=lambda: True)
    def admin() -> str:
        return render_template_string(
            "<!doctype html><html><head>{{ toucan_script() }}</head><body>"
            "{{ toucan_assistant(id='chat') }}</body></html>"
        )

    server = serve(app)
    page = open_page(browser, server.url)
    page.goto(server.url + "/admin")
    page.wait_for_selector("#chat[data-toucan-variant]")
    wait_for(lambda: bool(events(page, "toucan:access-revoked")), 40, "the variant's end")
    revoked = events(page, "toucan:access-revoked")
    assert revoked[0]["detail"]["code"] == "variant_expired"
    history = tokens_of(page, "chat")
    assert len(history) >= 2  # renewed at least once before the end
    assert {decode_fake_token(h["token"])["role"] for h in history} == {"admin"}
    assert 200 in app.extensions["refresh_statuses"]
    page.context.close()


def test_origin_refusal_keeps_the_elements_and_names_the_fix(
    launch: Callable[..., Launched],
) -> None:
    _, _, page = launch()
    messages: list[str] = []
    page.on("console", lambda m: messages.append(m.text) if m.type == "error" else None)
    # What a mis-set proxy looks like from the browser: the endpoint refuses the origin.
    page.route(
        "**/toucan/token",
        lambda route: route.fulfill(
            status=403,
            content_type="application/json",
            body='{"error": "origin_refused", "code": "origin_refused", "message": "x"}',
        ),
    )
    # (Checking the page's events also lets Playwright run the route handler.)
    wait_for(lambda: bool(events(page, "toucan:token-error")), 15, "an error")
    ours = [m for m in messages if m.startswith("flask_toucan:")]
    assert len(ours) == 1
    assert "ProxyFix" in ours[0] and "TOUCAN_TRUSTED_ORIGINS" in ours[0]
    assert not events(page, "toucan:session-ended")
    assert page.evaluate("document.querySelectorAll('tc-dashboard').length") == 1
    errors = events(page, "toucan:token-error")
    assert errors[-1]["detail"]["code"] == "origin_refused"
    page.context.close()


def test_embed_page_in_an_iframe_is_kept_fresh(
    browser: Browser, serve: Callable[[Flask], LiveServer], short_fake: FakeToucan
) -> None:
    app = browser_app(short_fake, TOUCAN_EMBED_PAGES=["sales"])

    @app.get("/help-centre")
    def help_centre() -> str:
        return render_template_string(
            "<!doctype html><h1>Help centre</h1><iframe id=embed style='width:800px;"
            "height:500px' src=\"{{ url_for('toucan.dashboard_page', dashboard_id='sales',"
            " theme='dark') }}\"></iframe>"
        )

    server = serve(app)
    page = open_page(browser, server.url)
    page.goto(server.url + "/help-centre")
    frame = page.frame_locator("#embed")
    frame.locator("tc-dashboard").wait_for()
    inner = next(f for f in page.frames if "/toucan/dashboards/sales" in f.url)

    def framed_tokens() -> list[dict[str, Any]]:
        return list(inner.evaluate("window.toucanPreview ? window.toucanPreview.tokens : []"))

    wait_for(lambda: len(framed_tokens()) >= 1, 10, "a token in the framed dashboard")
    first = framed_tokens()[0]["token"]
    assert decode_fake_token(first)["sub"] == "alice"
    assert inner.evaluate("document.querySelector('tc-dashboard').dataset.theme") == "dark"
    # The refresh controller runs inside the frame and renews before expiry.
    wait_for(lambda: len(framed_tokens()) >= 3, 25, "renewals in the frame")
    assert_replaced_before_expiry(framed_tokens())
    assert set(app.extensions["refresh_statuses"]) == {200}
    page.context.close()


def test_an_app_pointed_at_flask_toucan_fake_renders_stand_ins(
    browser: Browser, serve: Callable[[Flask], LiveServer], fake_command: str
) -> None:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="x", TOUCAN_API_KEY="cli-fake-key", TOUCAN_BASE_URL=fake_command)
    toucan = Toucan(app)
    toucan.user_loader(lambda: ToucanUser("dana", attributes={"tenant": "acme"}))

    @app.get("/")
    @toucan.inject_token
    def index() -> str:
        return render_template_string(PAGE)

    server = serve(app)
    page = browser.new_context().new_page()
    page.goto(server.url + "/")
    # The script came from the fake (another origin, allowed by its CORS header).
    wait_for(
        lambda: bool(page.evaluate("window.toucanPreview && window.toucanPreview.tokens.length")),
        10,
        "the stand-in components",
    )
    token = page.evaluate("window.toucanPreview.tokens[0].token")
    assert decode_fake_token(token)["sub"] == "dana"
    shown = page.evaluate("document.querySelector('tc-dashboard').shadowRoot.textContent")
    # Preview mode is off here: the stand-ins say they come from the fake.
    assert "FAKE TOUCAN" in shown and "PREVIEW" not in shown
    assert "served by FakeToucan" in shown
    page.context.close()
