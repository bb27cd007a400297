"""examples/own_chat: a chat box whose questions go to Toucan's assistant as the
signed-in user, in preview mode, against FakeToucan, and in a real Chromium."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser

from examples.own_chat.app import create_app, toucan
from examples.own_chat.llm_tools import ToolRunner, chat_turn
from flask_toucan import ToucanUser
from flask_toucan.testing import FakeToucan, decode_fake_token

from .conftest import API_KEY
from .test_browser import LiveServer, browser, chromium_path  # noqa: F401 - the fixture

__all__ = ["chromium_path"]


@pytest.fixture
def preview_app(monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.delenv("TOUCAN_API_KEY", raising=False)
    return create_app({"TESTING": True})


def ask(client: Any, account: str, question: str) -> str:
    """Ask as ``account``: signing in (again) starts a new conversation."""
    with client.session_transaction() as session:
        signed_in = session.get("_user_id") == account
    if not signed_in:
        client.post("/sign-in", data={"account": account})
    page = client.post("/", data={"question": question})
    assert page.status_code == 200
    return str(page.get_data(as_text=True))


def test_each_account_gets_answers_scoped_to_its_tenant(preview_app: Flask) -> None:
    alice = ask(preview_app.test_client(), "alice", "What sold best?")
    chen = ask(preview_app.test_client(), "chen", "What sold best?")
    assert "tenant = acme" in alice and "globex" not in alice
    assert "tenant = globex" in chen and "acme" not in chen
    assert '<tc-result-renderer data-toucan-result id="result-1">' in alice


def test_a_follow_up_continues_the_thread_against_fake_toucan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FakeToucan(api_key=API_KEY) as fake:
        monkeypatch.setenv("TOUCAN_API_KEY", API_KEY)
        app = create_app({"TESTING": True, "TOUCAN_BASE_URL": fake.url})
        client = app.test_client()
        ask(client, "chen", "Revenue by region?")
        ask(client, "chen", "And last year?")
    (first_user, _, first_thread), (second_user, _, second_thread) = fake.questions
    assert first_user == second_user == "chen"
    assert first_thread is None  # a new conversation...
    assert second_thread is not None  # ...continued with the thread Toucan answered with
    assert len(fake.mints) == 1


def test_the_tools_reach_an_llm_and_its_tool_calls_run_as_the_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}

    async def model(tools: list[dict[str, Any]], run: ToolRunner) -> str:
        # Stands in for an LLM that decides to call Toucan's assistant.
        seen["tools"] = {t["name"]: t for t in tools}
        envelope = await run("ask_toucan_assistant", {"question": "Top region?"})
        return str(envelope["answer"])

    with FakeToucan(api_key=API_KEY) as fake:
        monkeypatch.setenv("TOUCAN_API_KEY", API_KEY)
        app = create_app({"TESTING": True, "TOUCAN_BASE_URL": fake.url})
        with app.app_context():
            user = ToucanUser("chen", attributes={"tenant": "globex"})
            text = asyncio.run(chat_turn(toucan, model, user))
        assert decode_fake_token(fake.tokens_issued[0])["sub"] == "chen"
    assert "ask_toucan_assistant" in seen["tools"]
    assert seen["tools"]["ask_toucan_assistant"]["input_schema"]["required"] == ["question"]
    assert "chen" in text and "globex" in text


@pytest.fixture
def live_preview(preview_app: Flask) -> Iterator[LiveServer]:
    server = LiveServer(preview_app)
    yield server
    server.stop()


def test_asking_in_chromium_renders_the_stand_in_chart(
    browser: Browser,  # noqa: F811 - the fixture
    live_preview: LiveServer,
) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(live_preview.url + "/sign-in")
    page.click("#as-alice")
    page.fill("#question", "What sold best? <img src=x onerror=window.pwned=1>")
    page.click("#ask")
    page.wait_for_selector("#answer")
    result = page.locator("#result-1")
    result.wait_for()
    page.wait_for_function(
        "() => { const r = document.querySelector('#result-1');"
        " return r && r.payload && r.shadowRoot && r.shadowRoot.querySelector('svg rect'); }"
    )
    title = page.evaluate(
        "document.querySelector('#result-1').shadowRoot.querySelector('h3').textContent"
    )
    bars = page.evaluate(
        "document.querySelector('#result-1').shadowRoot.querySelectorAll('rect').length"
    )
    pwned = page.evaluate("window.pwned === undefined")
    page.close()
    assert "tenant = acme" in title and "<img" in title  # the payload shown as text
    assert bars == 4
    assert pwned, "a payload ran script"
    assert errors == []
