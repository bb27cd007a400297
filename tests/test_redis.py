"""The shared Redis token cache, against a real redis-server."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask

from flask_toucan import ToucanUnavailable
from flask_toucan.testing import FakeToucan, decode_fake_token

from .conftest import USERS, Clock
from .markup import token_of
from .servers import RedisServer


@pytest.fixture(autouse=True)
def every_key_expires(redis_server: RedisServer) -> Iterator[None]:
    """No key flask_toucan writes ever lacks a TTL, whatever the test did."""
    yield
    r = redis_server.client()
    forever = [k for k in r.keys("*") if r.pttl(k) == -1]
    assert forever == [], f"keys without a TTL: {forever}"


@pytest.fixture
def redis_app(make_app: Callable[..., Flask], redis_server: RedisServer) -> Callable[..., Flask]:
    prefix = f"t-{uuid.uuid4().hex[:8]}:"

    def make(**overrides: Any) -> Flask:
        config: dict[str, Any] = {
            "TOUCAN_CACHE_CONFIG": {
                "CACHE_TYPE": "RedisCache",
                "CACHE_REDIS_URL": redis_server.url,
            },
            "TOUCAN_CACHE_KEY_PREFIX": prefix,
        }
        config.update(overrides)
        return make_app(**config)

    return make


def test_tokens_are_shared_between_app_instances(
    redis_app: Callable[..., Flask], redis_server: RedisServer, fake: FakeToucan, clock: Clock
) -> None:
    host_a, host_b = redis_app().test_client(), redis_app().test_client()
    a = token_of(host_a.get("/page", headers={"X-User": "alice"}).text)
    b = token_of(host_b.get("/page", headers={"X-User": "alice"}).text)
    assert a == b
    assert len(fake.mints) == 1
    prefix = host_a.application.config["TOUCAN_CACHE_KEY_PREFIX"]
    (key,) = [k for k in redis_server.client().keys(prefix + "*") if not k.endswith(b":lock")]
    # The entry carries its absolute expiry, and Redis drops it when it stops being servable.
    ttl = redis_server.client().ttl(key)
    assert 3600 - 300 - 5 <= ttl <= 3600 - 300


def test_warm_page_view_costs_no_redis_round_trip(
    redis_app: Callable[..., Flask], redis_server: RedisServer, fake: FakeToucan
) -> None:
    client = redis_app().test_client()
    client.get("/page", headers={"X-User": "alice"})
    r = redis_server.client()
    before = r.info("stats")["total_commands_processed"]
    for _ in range(50):
        assert client.get("/page", headers={"X-User": "alice"}).status_code == 200
    after = r.info("stats")["total_commands_processed"]
    assert after - before == 1  # the INFO call itself


def test_front_cache_is_bounded(redis_app: Callable[..., Flask], fake: FakeToucan) -> None:
    app = redis_app(front_cache_size=10)
    toucan = app.extensions["test_toucan"]
    with app.app_context():
        for i in range(60):
            toucan.get_token({"distinct_id": f"user-{i}"})
    front = app.extensions["toucan"].service.store.front
    assert front is not None and len(front) == 10


def test_invalidate_clears_both_levels(
    redis_app: Callable[..., Flask], redis_server: RedisServer, fake: FakeToucan
) -> None:
    app = redis_app()
    toucan = app.extensions["test_toucan"]
    with app.app_context():
        first = toucan.get_token(USERS["alice"])
        toucan.invalidate(USERS["alice"])
        second = toucan.get_token(USERS["alice"])
    assert first.value != second.value
    assert len(fake.mints) == 2


def test_concurrent_first_requests_across_instances_mint_once(
    redis_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    fake.delay = 0.3
    # Four app instances stand for four processes: each has its own in-process
    # locks and front cache, and only Redis in common.
    apps = [redis_app() for _ in range(4)]
    barrier = threading.Barrier(40)

    def hit(i: int) -> str:
        client = apps[i % 4].test_client()
        barrier.wait()
        return token_of(client.get("/page", headers={"X-User": "bob"}).text)

    with ThreadPoolExecutor(40) as pool:
        tokens = set(pool.map(hit, range(40)))
    assert len(fake.mints) == 1
    assert len(tokens) == 1


def test_steady_traffic_never_waits_on_toucan_after_warm_up(
    redis_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    delay = 0.4
    fake.expires_in = 4
    fake.delay = delay
    apps = [redis_app(TOUCAN_MIN_TOKEN_TTL=1, refresh_ahead=0.5) for _ in range(2)]
    clients = [a.test_client() for a in apps]
    clients[0].get("/page", headers={"X-User": "alice"})  # warm-up
    timings: list[float] = []
    served: list[tuple[float, str]] = []
    stop = time.monotonic() + 12  # three token lifetimes
    i = 0
    while time.monotonic() < stop:
        started = time.monotonic()
        response = clients[i % 2].get("/page", headers={"X-User": "alice"})
        timings.append(time.monotonic() - started)
        assert response.status_code == 200
        served.append((time.time(), token_of(response.text)))
        i += 1
        time.sleep(0.02)
    # Tokens rolled over several times...
    assert len({t for _, t in served}) >= 3
    assert len(fake.mints) >= 4
    # ...without any page view waiting for Toucan's injected delay.
    assert max(timings) < delay, f"slowest page view {max(timings):.3f}s"
    # Every token served still had at least TOUCAN_MIN_TOKEN_TTL (1 s) left.
    for at, token in served:
        assert decode_fake_token(token)["exp"] - at >= 1 - 0.05


def test_stale_while_error_then_typed_error(
    redis_app: Callable[..., Flask], fake: FakeToucan, clock: Clock
) -> None:
    app = redis_app(refresh_ahead=0.5, lock_timeout=1)
    client = app.test_client()
    page = client.get("/page", headers={"X-User": "alice"})
    token = token_of(page.text)
    fake.fail(503, times=1000)
    clock.advance(2000)  # past the refresh-ahead point, 1600 s left
    for _ in range(3):
        again = client.get("/page", headers={"X-User": "alice"})
        assert again.status_code == 200
        assert token_of(again.text) == token
    # The background renewal reached Toucan and failed.
    deadline = time.monotonic() + 5
    while len(fake.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r.status for r in fake.requests][:2] == [200, 503]
    clock.advance(3600 - 2000 - 299)  # 299 s left: too close to expiry to serve
    failed = client.get("/page", headers={"X-User": "alice"})
    assert failed.status_code == 503
    assert "simulated failure" not in failed.text
    with app.app_context(), pytest.raises(ToucanUnavailable):
        app.extensions["test_toucan"].get_token(USERS["alice"])


@pytest.mark.infra  # a redis-server of its own, killed and restarted
def test_redis_killed_mid_traffic_then_recovered(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    server = RedisServer().start()
    try:
        app = make_app(
            TOUCAN_CACHE_CONFIG={"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": server.url},
            front_cache_ttl=1,
        )
        client = app.test_client()
        users = ["alice", "bob", "carol"]
        statuses: list[int] = []

        def traffic(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for user in users:
                    response = client.get("/page", headers={"X-User": user})
                    statuses.append(response.status_code)
                    assert decode_fake_token(token_of(response.text))["sub"] == user
                time.sleep(0.01)

        traffic(1.0)
        assert len(fake.mints) == 3
        server.stop()
        traffic(3.0)  # Redis gone: front cache and direct mints carry the pages
        server.start()
        time.sleep(2.5)  # past the cool-down
        traffic(1.5)
        assert set(statuses) == {200}
        # Recovered: tokens are in Redis again.
        keys = [k for k in server.client().keys("toucan:*") if not k.endswith(b":lock")]
        assert len(keys) == 3
    finally:
        server.stop()
