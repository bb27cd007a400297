"""The Flask-Login + RLS + two instances example, driven as a user would."""

from __future__ import annotations

import socket
import threading

import pytest
from flask import Flask

from examples.flask_login_rls.app import create_app
from flask_toucan.testing import decode_fake_token

from .markup import start_tags


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.delenv("TOUCAN_EU_API_KEY", raising=False)
    monkeypatch.delenv("TOUCAN_US_API_KEY", raising=False)
    return create_app({"TESTING": True})


def sign_in(client: object, email: str, password: str = "demo") -> object:
    return client.post(  # type: ignore[attr-defined]
        "/sign-in", data={"email": email, "password": password}, follow_redirects=True
    )


def components(html: str) -> dict[str, dict[str, str | None]]:
    return {t: a for t, a in start_tags(html) if t.startswith("tc-")}


def test_signed_out_users_are_sent_to_sign_in(example: Flask) -> None:
    client = example.test_client()
    response = client.get("/analytics")
    assert response.status_code == 302 and "/sign-in" in response.headers["Location"]
    assert client.post("/toucan/token", headers={"X-Toucan-Refresh": "1"}).status_code == 401


def test_wrong_password_is_refused(example: Flask) -> None:
    page = sign_in(example.test_client(), "alice@acme.example", "nope")
    assert "wrong password" in page.text  # type: ignore[attr-defined]
    assert "tc-dashboard" not in page.text  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("email", "tenant_id", "instance"),
    [("alice@acme.example", 1, "eu"), ("chen@globex.example", 2, "us")],
)
def test_each_tenant_sees_its_own_instance_and_attributes(
    example: Flask, email: str, tenant_id: int, instance: str
) -> None:
    client = example.test_client()
    page = sign_in(client, email)
    found = components(page.text)  # type: ignore[attr-defined]
    dashboard, assistant = found["tc-dashboard"], found["tc-ai-assistant"]
    claims = decode_fake_token(str(dashboard["auth-token"]))
    assert claims["sub"] == email
    assert claims["attributes"] == {"tenant_id": tenant_id}
    assert claims["instance"] == instance
    assert claims["permissions"] == {"ai": "can_query"}
    assert dashboard["server-url"] == f"https://{instance}.toucan.example/api"
    assert assistant["auth-token"] == dashboard["auth-token"]


def test_sign_in_prefetches_so_the_page_mints_nothing(
    example: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = example.extensions["toucan"].service
    client = example.test_client()
    client.post("/sign-in", data={"email": "bob@acme.example", "password": "demo"})
    minted_at_sign_in = state.minter("eu").minted
    assert minted_at_sign_in == 1  # preview mode mints in process at once
    page = client.get("/analytics")
    assert page.status_code == 200
    # The user's own token (assistant permission included, from the loader) was prefetched:
    # the page and its refresh reuse it.
    renewed = client.post(
        "/toucan/token", headers={"X-Toucan-Refresh": "1", "Sec-Fetch-Site": "same-origin"}
    )
    assert decode_fake_token(renewed.json["token"])["sub"] == "bob@acme.example"
    assert decode_fake_token(renewed.json["token"])["permissions"] == {"ai": "can_query"}
    assert state.minter("eu").minted == 1


def test_the_example_opens_no_socket_and_no_thread(
    example: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the preview example touched the network or a thread")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(threading.Thread, "start", refuse)
    page = sign_in(example.test_client(), "chen@globex.example")
    assert "tc-dashboard" in page.text  # type: ignore[attr-defined]


def test_a_user_without_tenant_gets_no_token(example: Flask) -> None:
    from examples.flask_login_rls.app import ACCOUNTS, Account
    from flask_toucan import InvalidToucanUser

    ACCOUNTS["nobody@example.com"] = Account("nobody@example.com", "Nobody", None)
    try:
        client = example.test_client()
        # Signing in still works (the prefetch fails closed, quietly)...
        signed_in = client.post(
            "/sign-in", data={"email": "nobody@example.com", "password": "demo"}
        )
        assert signed_in.status_code == 302
        # ...but no token is minted for a user without a tenant.
        example.config["PROPAGATE_EXCEPTIONS"] = True
        with pytest.raises(InvalidToucanUser, match="no 'tenant_id' attribute"):
            client.get("/analytics")
        assert example.extensions["toucan"].service.minter(None).minted == 0
    finally:
        del ACCOUNTS["nobody@example.com"]
