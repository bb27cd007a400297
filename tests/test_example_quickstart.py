"""The docs' quickstart (examples/quickstart), run as a new user would: in preview mode
first, then against `flask toucan fake`, following what it prints."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from examples.quickstart.app import create_app
from flask_toucan.testing import decode_fake_token

from .markup import start_tags
from .servers import running_fake_command


def sign_in_and_open(app: Flask, user: str) -> dict[str, dict[str, Any]]:
    client = app.test_client()
    assert client.get("/").status_code == 302  # signed out: to the sign-in page
    assert client.post("/sign-in", data={"user": user}).status_code == 302
    page = client.get("/")
    assert page.status_code == 200
    tags = start_tags(page.get_data(as_text=True))
    first_script = next(attrs for tag, attrs in tags if tag == "script")
    return {**dict(tags), "script": first_script}  # the components' module comes first


def test_the_quickstart_runs_in_preview_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOUCAN_API_KEY", raising=False)
    monkeypatch.delenv("TOUCAN_BASE_URL", raising=False)
    app = create_app({"TESTING": True})
    alice = sign_in_and_open(app, "alice")
    bob = sign_in_and_open(app, "bob")
    for tags, tenant in ((alice, 1), (bob, 2)):
        assert tags["tc-dashboard"]["dashboard-id"] == "sales-overview"
        claims = decode_fake_token(tags["tc-ai-assistant"]["auth-token"])
        assert claims["attributes"] == {"tenant_id": tenant}
        assert claims["permissions"] == {"ai": "can_query"}  # the assistant can answer
    assert "toucan-preview.js" in tags["script"]["src"]


@pytest.fixture
def fake_printout() -> Iterator[str]:
    """`flask toucan fake` exactly as the quickstart says (default key): what it printed."""
    with running_fake_command() as (_, printed):
        yield printed


def test_the_quickstart_runs_against_flask_toucan_fake_as_printed(
    fake_printout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    printed = fake_printout
    exports = dict(re.findall(r"export (TOUCAN_[A-Z_]+)=(\S+)", printed))
    assert set(exports) == {"TOUCAN_BASE_URL", "TOUCAN_API_KEY"}, printed
    for name, value in exports.items():
        monkeypatch.setenv(name, value)
    app = create_app({"TESTING": True})
    assert app.config["TOUCAN_PREVIEW"] is False
    tags = sign_in_and_open(app, "alice")
    assert tags["tc-dashboard"]["server-url"] == exports["TOUCAN_BASE_URL"] + "/api"
    assert tags["script"]["src"] == exports["TOUCAN_BASE_URL"] + "/embed/embed.js"
    claims = decode_fake_token(tags["tc-dashboard"]["auth-token"])  # minted by the fake
    assert claims["sub"] == "alice" and claims["attributes"] == {"tenant_id": 1}
