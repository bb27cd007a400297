"""examples/own_chat: a chat on a pydantic-ai agent with Toucan's tools as the signed-in
user, with the offline stand-in model (no LLM, no key): in preview mode, against
FakeToucan, and in a real Chromium."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, Page
from werkzeug.serving import make_server

from examples.own_chat import app as example
from flask_toucan.testing import FakeToucan, decode_fake_token

from .conftest import API_KEY
from .servers import free_port
from .test_browser import browser, chromium_path  # noqa: F401 - the fixture

__all__ = ["chromium_path"]

ROOT = Path(__file__).resolve().parent.parent
STREAM = {"Accept": "application/x-ndjson"}


@pytest.fixture
def preview_app(monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.delenv("TOUCAN_API_KEY", raising=False)
    monkeypatch.delenv("CHAT_MODEL", raising=False)
    return example.create_app({"TESTING": True})


@pytest.fixture
def fake_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Flask, FakeToucan]]:
    monkeypatch.delenv("CHAT_MODEL", raising=False)
    with FakeToucan(api_key=API_KEY) as fake:
        monkeypatch.setenv("TOUCAN_API_KEY", API_KEY)
        yield example.create_app({"TESTING": True, "TOUCAN_BASE_URL": fake.url}), fake


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


class Chat:
    """A signed-in test client, with the CSRF token of its session."""

    def __init__(self, app: Flask, account: str) -> None:
        self.client = app.test_client()
        token = csrf_of(self.client.get("/sign-in").text)
        signed = self.client.post("/sign-in", data={"account": account, "csrf_token": token})
        assert signed.status_code == 302
        self.token = csrf_of(self.client.get("/").text)

    def ask(self, question: str) -> list[dict[str, Any]]:
        """Ask with the page's JavaScript would: the answer's events, in order."""
        answer = self.client.post(
            "/ask", data={"question": question, "csrf_token": self.token}, headers=STREAM
        )
        assert answer.status_code == 200, answer.text
        assert answer.mimetype == "application/x-ndjson"
        assert answer.headers["Cache-Control"] == "no-store"
        return [json.loads(line) for line in answer.text.splitlines()]

    def post(self, path: str, **data: str) -> Any:
        return self.client.post(path, data={**data, "csrf_token": self.token})

    def page(self) -> str:
        return str(self.client.get("/").text)


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


def done(events: list[dict[str, Any]]) -> dict[str, Any]:
    (last,) = [e for e in events if e["event"] == "done"]
    return last


# -- the agent chooses between Toucan's tool and the app's own ---------------------------


def test_in_preview_each_tenant_gets_its_own_answer_and_the_app_tool_its_orders(
    preview_app: Flask,
) -> None:
    alice, chen = Chat(preview_app, "alice"), Chat(preview_app, "chen")
    a = alice.ask("What sold best?")
    c = chen.ask("What sold best?")
    assert "tenant = acme" in done(a)["answer_html"] and "globex" not in done(a)["answer_html"]
    assert "tenant = globex" in done(c)["answer_html"] and "acme" not in done(c)["answer_html"]
    assert "<tc-result-renderer data-toucan-result>" in done(a)["results_html"]
    assert "(tenant = acme)" in done(a)["results_html"]
    # The text streamed as it came, before the sanitized whole.
    assert kinds(a)[0] == "status" and "delta" in kinds(a) and kinds(a)[-1] == "done"
    orders = alice.ask("Which orders are still open?")
    assert "A-1001" in done(orders)["answer_html"] and "G-2001" not in done(orders)["answer_html"]
    assert done(orders)["results_html"].strip() == ""


def test_against_fake_toucan_the_follow_up_continues_toucans_thread(
    fake_app: tuple[Flask, FakeToucan],
) -> None:
    app, fake = fake_app
    chen = Chat(app, "chen")
    first = chen.ask("Revenue by region?")
    second = chen.ask("And last year?")
    (u1, q1, thread1), (u2, q2, thread2) = fake.questions
    assert (u1, q1, u2, q2) == ("chen", "Revenue by region?", "chen", "And last year?")
    assert thread1 is None
    assert thread2 is not None and thread2.startswith("thread-")
    # Toucan's progress notifications reached the stream, before the answer's text.
    for events in (first, second):
        progress = [e["text"] for e in events if e["event"] == "progress"]
        assert progress == ["reading the question", "querying the data", "drawing the chart"]
        assert kinds(events).index("progress") < kinds(events).index("delta")
    # Toucan was asked with chen's own token only, and no token or key is in the stream.
    assert {decode_fake_token(t)["sub"] for t in fake.tokens_issued} == {"chen"}
    stream = json.dumps(first + second)
    assert API_KEY not in stream
    assert all(token not in stream for token in fake.tokens_issued)


def test_history_is_per_user_survives_a_reload_and_new_conversation_clears_it(
    preview_app: Flask,
) -> None:
    alice, chen = Chat(preview_app, "alice"), Chat(preview_app, "chen")
    alice.ask("What sold best?")
    alice.ask("Which orders are open?")
    page = alice.page()
    assert page.count('class="turn"') == 2 and "A-1001" in page
    assert "What sold best?" not in chen.page()  # never another user's history
    again = Chat(preview_app, "alice")  # a new session of the same user: still there
    assert again.page().count('class="turn"') == 2
    assert alice.post("/new").status_code == 302
    assert alice.page().count('class="turn"') == 0


def test_without_javascript_the_form_post_works(preview_app: Flask) -> None:
    alice = Chat(preview_app, "alice")
    answered = alice.post("/ask", question="What sold best?")
    assert answered.status_code == 302 and answered.location.endswith("/#latest")
    page = alice.page()
    assert "<strong>Stand-in answer</strong>" in page and "<tc-result-renderer" in page


# -- forms, limits and failures -----------------------------------------------------------


def test_every_post_needs_its_csrf_token(preview_app: Flask) -> None:
    client = preview_app.test_client()
    assert client.post("/sign-in", data={"account": "alice"}).status_code == 400
    alice = Chat(preview_app, "alice")
    for path, data in (("/ask", {"question": "q"}), ("/new", {}), ("/sign-out", {})):
        assert alice.client.post(path, data=data).status_code == 400, path
        assert alice.client.post(path, data=data, headers=STREAM).status_code == 400, path


def test_a_question_over_4_kb_gets_a_clear_message(preview_app: Flask) -> None:
    alice = Chat(preview_app, "alice")
    long = "x" * 5000
    streamed = alice.client.post(
        "/ask", data={"question": long, "csrf_token": alice.token}, headers=STREAM
    )
    assert streamed.status_code == 413
    assert streamed.json == {"error": "Questions are limited to 4 KB: please shorten it."}
    page = alice.post("/ask", question=long)
    assert page.status_code == 413
    assert "Questions are limited to 4 KB: please shorten it." in page.text


@pytest.mark.parametrize("how", ["unreachable", "mcp-503"])
def test_toucan_down_is_a_chat_message_with_a_retry(
    monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.delenv("CHAT_MODEL", raising=False)
    monkeypatch.setenv("TOUCAN_API_KEY", API_KEY)
    with FakeToucan(api_key=API_KEY) as fake:
        base = f"http://127.0.0.1:{free_port()}" if how == "unreachable" else fake.url
        app = example.create_app(
            {"TESTING": True, "TOUCAN_BASE_URL": base, "TOUCAN_MINT_DEADLINE": 2}
        )
        if how == "mcp-503":
            fake.fail(503, times=50, path="/api/mcp")
        alice = Chat(app, "alice")
        events = alice.ask("What sold best?")
        assert kinds(events)[-1] == "error"
        assert "Toucan" in events[-1]["text"] and "Traceback" not in events[-1]["text"]
        page = alice.page()
        assert 'role="alert"' in page and ">Retry</button>" in page
        no_js = alice.post("/ask", question="Again?")
        assert no_js.status_code == 302  # the error is a turn of the chat, not a 500


def test_markdown_is_rendered_and_sanitized() -> None:
    hostile = (
        "**bold** <script>window.pwned=1</script> [click](javascript:alert(1)) "
        '<img src=x onerror="window.pwned=1"> [ok](https://toucanai.cloud)'
    )
    html = str(example.answer_html(hostile))
    assert "<strong>bold</strong>" in html
    # Raw HTML is text, never markup; a javascript: link is never a link.
    assert "<script" not in html and "<img" not in html and 'href="javascript' not in html
    assert "&lt;script&gt;" in html
    assert 'href="https://toucanai.cloud"' in html and 'rel="noopener noreferrer nofollow"' in html


def test_the_readme_command_serves_the_chat_with_no_key() -> None:
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("TOUCAN_", "CHAT_MODEL"))}
    server = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "examples.own_chat.app", "run",
         "--port", str(port)],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        import requests

        deadline = time.monotonic() + 30
        while True:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/sign-in", timeout=2)
                break
            except requests.ConnectionError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "the chat did not start"
                time.sleep(0.2)
        assert answer.status_code == 200 and 'id="as-alice"' in answer.text
        assert "Content-Security-Policy" in answer.headers
    finally:
        server.terminate()
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()


# -- in Chromium -----------------------------------------------------------------------------


class Server:
    """The example served on loopback, its streamed answers unbuffered."""

    def __init__(self, app: Flask) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


#: Records, in the page, when a progress line and the answer's text first appear.
WATCH = """
window.__seen = [];
new MutationObserver(() => {
  const latest = document.getElementById("latest");
  if (!latest) return;
  if (latest.querySelector(".steps li.progress") && !window.__seen.includes("progress"))
    window.__seen.push("progress");
  const answer = latest.querySelector(".answer");
  if (answer && answer.textContent.trim() && !window.__seen.includes("answer"))
    window.__seen.push("answer");
}).observe(document, { childList: true, subtree: true, characterData: true });
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__violations.push(e.violatedDirective));
"""


def open_chat(browser: Browser, url: str, account: str) -> Page:  # noqa: F811
    context = browser.new_context()
    context.add_init_script(WATCH)
    page = context.new_page()
    page.goto(url + "/sign-in")
    page.click(f"#as-{account}")
    page.wait_for_selector("#ask-form")
    return page


def ask_in(page: Page, question: str, turns: int) -> None:
    page.fill("#question", question)
    page.evaluate("() => { window.__seen = []; }")
    page.click("#ask")
    # Functions, not expression strings: the page's CSP forbids eval.
    page.wait_for_function(
        f"() => document.querySelectorAll('.turn').length === {turns}"
        " && !!document.querySelector('#latest .answer strong')"
        " || !!document.querySelector('#latest .error')"
    )
    assert page.locator("#latest .error").count() == 0, page.inner_text("#latest")


def charts(page: Page) -> list[str]:
    page.wait_for_function(
        "() => [...document.querySelectorAll('tc-result-renderer')].every("
        "r => r.shadowRoot && r.shadowRoot.querySelector('h3'))"
    )
    return list(
        page.evaluate(
            "() => [...document.querySelectorAll('tc-result-renderer')].map("
            "r => r.shadowRoot.querySelector('h3').textContent)"
        )
    )


def test_two_tenants_hold_two_turn_conversations_in_chromium(
    browser: Browser,  # noqa: F811 - the fixture
    fake_app: tuple[Flask, FakeToucan],
) -> None:
    app, fake = fake_app
    server = Server(app)
    try:
        pages = {name: open_chat(browser, server.url, name) for name in ("alice", "chen")}
        for page in pages.values():
            ask_in(page, "What sold best?", 1)
            assert page.evaluate("() => window.__seen") == ["progress", "answer"]
            ask_in(page, "And by region?", 2)
        for name, tenant, other in (("alice", "acme", "globex"), ("chen", "globex", "acme")):
            page = pages[name]
            text = page.inner_text("#conversation")
            assert f"tenant = {tenant}" in text and other not in text
            titles = charts(page)
            assert len(titles) == 2 and all(f"(tenant = {tenant})" in t for t in titles)
            # The history survives a reload...
            page.reload()
            assert page.locator(".turn").count() == 2
            assert all(f"(tenant = {tenant})" in t for t in charts(page))
            assert page.evaluate("() => window.__violations") == []
        # ...the second turn of each carried Toucan's thread id...
        threads: dict[str, list[str | None]] = {}
        for who, _, thread in fake.questions:
            threads.setdefault(who, []).append(thread)
        assert set(threads) == {"alice", "chen"}
        for who, (first, second) in threads.items():
            assert first is None and second is not None, who
        # ...and "New conversation" clears it.
        pages["alice"].click("#new-conversation")
        pages["alice"].wait_for_load_state()
        assert pages["alice"].locator(".turn").count() == 0
        assert pages["chen"].locator(".turn").count() == 2
    finally:
        server.stop()


def test_a_hostile_answer_renders_inert_under_the_csp(
    browser: Browser,  # noqa: F811 - the fixture
    preview_app: Flask,
) -> None:
    hostile = (
        "Top: <script>window.pwned = 'script'</script>"
        "[details](javascript:window.pwned='link') "
        "<img src=x onerror=\"window.pwned='img'\"> "
        "<a href=\"javascript:window.pwned='raw-link'\">raw</a>"
    )
    with preview_app.app_context():
        # As if Toucan's assistant had answered it: stored the way a turn is.
        example.conversations().add_turn(
            "alice",
            {"question": "q", "answer": hostile, "visualizations": [{"title": "<b>t</b>"}]},
        )
    server = Server(preview_app)
    try:
        page = open_chat(browser, server.url, "alice")
        page.wait_for_selector(".turn .answer")
        for link in page.locator(".turn .answer a").all():
            link.click()
        page.wait_for_timeout(300)
        assert page.evaluate("() => window.pwned") is None
        # In the DOM: no script, no image, no javascript: link; the hostile markup is text.
        assert page.locator(".turn .answer script, .turn .answer img").count() == 0
        hrefs = page.evaluate(
            "() => [...document.querySelectorAll('.turn .answer a')].map(a => a.href)"
        )
        assert all(not h.startswith("javascript") for h in hrefs), hrefs
        assert "<script>window.pwned" in page.inner_text(".turn .answer")
        title = page.evaluate("() => document.querySelector('tc-result-renderer').payload.title")
        assert title == "<b>t</b>"
        csp = page.request.get(server.url + "/sign-in").headers["content-security-policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp.split("style-src")[0]
    finally:
        server.stop()
