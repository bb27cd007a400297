"""Signals: what each one carries, and that it never carries a secret."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from flask_toucan import current_token, signals
from flask_toucan.identity import derive_key, identity_digest
from flask_toucan.testing import FakeToucan

from .conftest import USERS, Clock

REFRESH = {"X-Toucan-Refresh": "1", "Sec-Fetch-Site": "same-origin", "X-User": "alice"}


@pytest.fixture
def received() -> Iterator[list[tuple[str, Any, dict[str, Any]]]]:
    seen: list[tuple[str, Any, dict[str, Any]]] = []
    hooks = []
    for signal in (
        signals.token_minted,
        signals.mint_failed,
        signals.token_served,
        signals.token_refreshed,
    ):

        def receiver(sender: Any, _name: str = signal.name, **kwargs: Any) -> None:
            seen.append((_name, sender, kwargs))

        signal.connect(receiver)
        hooks.append((signal, receiver))
    yield seen
    for signal, receiver in hooks:
        signal.disconnect(receiver)


def named(seen: list[tuple[str, Any, dict[str, Any]]], name: str) -> list[dict[str, Any]]:
    return [kwargs for n, _, kwargs in seen if n == f"toucan-{name}"]


def test_a_page_view_mints_then_serves(
    app: Flask, fake: FakeToucan, clock: Clock, received: list[Any]
) -> None:
    client = app.test_client()
    client.get("/page", headers={"X-User": "alice"})
    client.get("/page", headers={"X-User": "alice"})
    (minted,) = named(received, "token-minted")
    alice = USERS["alice"].replace(role="explorer")
    # Keyed with the app's SECRET_KEY: stable across processes, not a plain hash.
    assert minted["identity"] == identity_digest(
        alice, derive_key(app.secret_key, "signal-identity")
    )
    assert minted["identity"] != identity_digest(alice, derive_key("guess", "signal-identity"))
    assert minted["instance"] is None
    assert minted["lifetime"] == 3600
    assert 0 <= minted["duration"] < 5
    served = named(received, "token-served")
    assert [s["source"] for s in served] == ["minted", "shared"]  # default backend: shared
    assert all(s["identity"] == minted["identity"] for s in served)
    assert all(sender is app for _, sender, _ in received)


def test_request_front_and_stale_sources(
    make_app: Callable[..., Flask],
    redis_server: Any,
    fake: FakeToucan,
    clock: Clock,
    received: list[Any],
) -> None:
    app = make_app(
        TOUCAN_CACHE_CONFIG={"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": redis_server.url},
        TOUCAN_CACHE_KEY_PREFIX="signals:",
        refresh_ahead=0.5,
    )
    toucan = app.extensions["test_toucan"]
    with app.test_request_context("/", headers={"X-User": "alice"}):
        assert current_token.expires_in > 0  # the page token, minted
        toucan.get_token()  # the request's token again
    with app.test_request_context("/", headers={"X-User": "alice"}):
        toucan.get_token()  # from this process's front cache
    clock.advance(2000)  # past the refresh-ahead point
    with app.test_request_context("/", headers={"X-User": "alice"}):
        toucan.get_token()
    sources = [s["source"] for s in named(received, "token-served")]
    assert sources == ["minted", "request", "front", "stale"]
    redis_server.client().delete(*redis_server.client().keys("signals:*"))


def test_mint_failed_names_the_error_class(
    app: Flask, fake: FakeToucan, received: list[Any]
) -> None:
    fake.fail(503)
    assert app.test_client().get("/page", headers={"X-User": "alice"}).status_code == 503
    (failed,) = named(received, "mint-failed")
    assert failed["error"] == "ToucanUnavailable"
    alice = USERS["alice"].replace(role="explorer")
    assert failed["identity"] == identity_digest(
        alice, derive_key(app.secret_key, "signal-identity")
    )
    assert named(received, "token-minted") == []


def test_token_refreshed_carries_status_and_code(
    app: Flask, fake: FakeToucan, received: list[Any]
) -> None:
    client = app.test_client()
    client.post("/toucan/token", headers=REFRESH)
    client.post("/toucan/token", headers={"X-Toucan-Refresh": "1"})
    client.post("/toucan/token", headers={**REFRESH, "Sec-Fetch-Site": "cross-site"})
    refreshed = named(received, "token-refreshed")
    assert refreshed == [
        {"status": 200, "code": None},
        {"status": 401, "code": "session_ended"},
        {"status": 403, "code": "origin_refused"},
    ]
