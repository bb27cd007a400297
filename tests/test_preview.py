from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
from flask import Flask

from examples.demo.app import create_app
from flask_toucan import ToucanUser
from flask_toucan.testing import decode_fake_token

from .markup import start_tags as tags


@pytest.fixture
def demo(monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.delenv("TOUCAN_API_KEY", raising=False)
    return create_app({"TESTING": True})


def test_preview_needs_no_api_key_and_serves_stand_ins(demo: Flask) -> None:
    assert demo.config["TOUCAN_PREVIEW"] is True
    client = demo.test_client()
    page = client.get("/")
    assert page.status_code == 200
    found = tags(page.text)
    scripts = [a["src"] for t, a in found if t == "script" and a.get("src")]
    assert "/toucan/static/toucan-preview.js" in scripts
    js = client.get("/toucan/static/toucan-preview.js")
    assert js.status_code == 200
    assert "PREVIEW" in js.text and 'customElements.define("tc-dashboard"' in js.text
    js.close()


def test_preview_tokens_carry_the_selected_user(demo: Flask) -> None:
    client = demo.test_client()
    seen = {}
    for user in ("alice", "chen"):
        client.post("/switch", data={"user": user})
        page = client.get("/")
        (dashboard,) = [a for t, a in tags(page.text) if t == "tc-dashboard"]
        (assistant,) = [a for t, a in tags(page.text) if t == "tc-ai-assistant"]
        assert dashboard["auth-token"] == assistant["auth-token"]
        seen[user] = decode_fake_token(str(dashboard["auth-token"]))
    assert seen["alice"]["sub"] == "alice"
    assert seen["alice"]["attributes"] == {"tenant": "acme", "region": "EU"}
    assert seen["chen"]["attributes"] == {"tenant": "globex", "region": "APAC"}
    assert seen["chen"]["permissions"] == {"ai": "can_query"}


def test_sign_out_leaves_no_user(demo: Flask) -> None:
    client = demo.test_client()
    client.get("/")
    client.post("/logout")
    with client.session_transaction() as session:
        assert "user" not in session
    assert client.get("/signed-out").status_code == 200


def test_preview_opens_no_socket_and_starts_no_thread(
    demo: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = demo.test_client()
    threads_before = set(threading.enumerate())
    opened: list[tuple[Any, ...]] = []
    started: list[str] = []

    class NoSocket(socket.socket):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            opened.append(args)
            raise AssertionError("preview mode opened a socket")

    def no_thread(self: threading.Thread) -> None:
        started.append(self.name)
        raise AssertionError("preview mode started a thread")

    monkeypatch.setattr(socket, "socket", NoSocket)
    monkeypatch.setattr(threading.Thread, "start", no_thread)
    for user in ("alice", "bob", "chen", "alice"):
        client.post("/switch", data={"user": user})
        page = client.get("/")
        assert page.status_code == 200
        (dashboard,) = [a for t, a in tags(page.text) if t == "tc-dashboard"]
        assert decode_fake_token(str(dashboard["auth-token"]))["sub"] == user
        refreshed = client.post(
            "/toucan/token",
            headers={"X-Toucan-Refresh": "1"},
            json={},  # the user's own token: the demo's page has no variant
        )
        assert "data-toucan-variant" not in dashboard
        assert refreshed.status_code == 200
        assert refreshed.get_json()["token"] == dashboard["auth-token"]
    with demo.app_context():
        demo.extensions["toucan"].service.get(ToucanUser("x"), force=True)
    assert opened == []
    assert started == []
    assert set(threading.enumerate()) <= threads_before
    assert demo.extensions["toucan"].service.minter().minted == 4  # alice, bob, chen, x


def test_demo_links_to_and_frames_an_embed_page(demo: Flask) -> None:
    client = demo.test_client()
    page = client.get("/")
    found = {t: a for t, a in tags(page.text) if t in ("iframe", "a")}
    assert found["iframe"]["src"] == "/toucan/dashboards/sales-overview?theme=dark"
    framed = client.get(str(found["iframe"]["src"]))
    assert framed.status_code == 200
    (dashboard,) = [a for t, a in tags(framed.text) if t == "tc-dashboard"]
    assert dashboard["data-theme"] == "dark"
    assert decode_fake_token(str(dashboard["auth-token"]))["sub"] == "alice"
    assert client.get("/toucan/dashboards/other").status_code == 404
