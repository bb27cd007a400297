"""Real gunicorn workers sharing Redis: one mint per identity however many processes ask."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from flask_toucan.testing import FakeToucan, decode_fake_token

from .conftest import API_KEY
from .servers import Gunicorn, RedisServer


@pytest.fixture
def gunicorn(fake: FakeToucan, redis_server: RedisServer) -> Iterator[Gunicorn]:
    server = Gunicorn(
        {
            "TEST_TOUCAN_KEY": API_KEY,
            "TEST_TOUCAN_URL": fake.url,
            "TEST_REDIS_URL": redis_server.url,
            "TEST_PREFIX": f"g-{uuid.uuid4().hex[:8]}:",
        },
        workers=4,
        threads=8,
    )
    yield server
    log = server.stop()
    r = redis_server.client()
    assert [k for k in r.keys("*") if r.pttl(k) == -1] == [], "a key without a TTL"
    assert API_KEY not in log
    assert "Traceback" not in log, log


def fire(url: str, params: list[dict[str, str]]) -> list[requests.Response]:
    barrier = threading.Barrier(len(params))
    session_local = threading.local()

    def one(p: dict[str, str]) -> requests.Response:
        session = getattr(session_local, "s", None) or requests.Session()
        session_local.s = session
        barrier.wait()
        return session.get(url, params=p, timeout=30)

    with ThreadPoolExecutor(len(params)) as pool:
        return list(pool.map(one, params))


def test_200_concurrent_first_requests_one_mint(gunicorn: Gunicorn, fake: FakeToucan) -> None:
    fake.delay = 0.3  # a mint takes a while, so the requests really overlap
    responses = fire(gunicorn.url + "/token", [{"user": "alice"}] * 200)
    assert [r.status_code for r in responses] == [200] * 200
    tokens = {r.json()["token"] for r in responses}
    assert len(tokens) == 1
    assert decode_fake_token(tokens.pop())["sub"] == "alice"
    assert len(fake.mints) == 1
    # The work really was spread over several worker processes (the kernel may hand one
    # worker a whole burst: then send more, still for the same token).
    for _ in range(10):
        if len({r.headers.get("X-Worker") for r in responses}) >= 2:
            break
        responses += fire(gunicorn.url + "/token", [{"user": "alice"}] * 50)
    assert len({r.headers.get("X-Worker") for r in responses}) >= 2
    assert len(fake.mints) == 1


def test_20_users_times_10_requests_20_mints(gunicorn: Gunicorn, fake: FakeToucan) -> None:
    fake.delay = 0.2
    params = [{"user": f"user-{i}"} for i in range(20)] * 10
    responses = fire(gunicorn.url + "/token", params)
    assert all(r.status_code == 200 for r in responses)
    for p, r in zip(params, responses, strict=True):
        claims = decode_fake_token(r.json()["token"])
        assert claims["sub"] == p["user"]
        assert claims["attributes"] == {"tenant": "t-" + p["user"]}
    assert len(fake.mints) == 20
    assert sorted(r.json["user"]["distinctId"] for r in fake.mints) == sorted(
        f"user-{i}" for i in range(20)
    )


def test_invalidate_reaches_every_worker_within_the_front_cache_ttl(
    fake: FakeToucan, redis_server: RedisServer
) -> None:
    front_ttl = 1.0
    server = Gunicorn(
        {
            "TEST_TOUCAN_KEY": API_KEY,
            "TEST_TOUCAN_URL": fake.url,
            "TEST_REDIS_URL": redis_server.url,
            "TEST_PREFIX": f"inv-{uuid.uuid4().hex[:8]}:",
            "TEST_FRONT_TTL": str(front_ttl),
        },
        workers=4,
        threads=4,
    )
    try:
        first: list[requests.Response] = []
        for _ in range(10):  # until several workers hold the token in their front caches
            first += fire(server.url + "/token", [{"user": "alice"}] * 32)
            if len({r.headers["X-Worker"] for r in first}) >= 2:
                break
        old = {r.json()["token"] for r in first}
        assert len(old) == 1
        warm_workers = {r.headers["X-Worker"] for r in first}
        assert len(warm_workers) >= 2
        requests.post(server.url + "/invalidate", params={"user": "alice"}, timeout=10)
        invalidated_at = time.monotonic()
        time.sleep(front_ttl + 0.2)
        after: list[requests.Response] = []
        for _ in range(10):  # until the workers that were warm have answered again
            after += fire(server.url + "/token", [{"user": "alice"}] * 32)
            if warm_workers <= {r.headers["X-Worker"] for r in after}:
                break
        assert time.monotonic() - invalidated_at < front_ttl + 10
        new = {r.json()["token"] for r in after}
        assert new.isdisjoint(old), "a worker kept serving the invalidated token"
        assert len(new) == 1
        assert len(warm_workers & {r.headers["X-Worker"] for r in after}) >= 2
        assert len(fake.mints) == 2
    finally:
        log = server.stop()
    assert "Traceback" not in log, log


def test_prefetch_at_sign_in_serves_every_worker(
    fake: FakeToucan, redis_server: RedisServer
) -> None:
    fake.delay = 0.2
    server = Gunicorn(
        {
            "TEST_TOUCAN_KEY": API_KEY,
            "TEST_TOUCAN_URL": fake.url,
            "TEST_REDIS_URL": redis_server.url,
            "TEST_PREFIX": f"pre-{uuid.uuid4().hex[:8]}:",
            "TEST_PREFETCH": "1",
        },
        workers=4,
        threads=4,
    )
    try:
        for n in range(3):
            session = requests.Session()
            name = f"member-{n}"
            assert session.post(server.url + "/sign-in", params={"user": name}).text == "welcome"
            deadline = time.monotonic() + 10
            while len(fake.mints) < n + 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            before = len(fake.requests)
            workers = set()
            for _ in range(24):  # a new connection each: views land on any worker
                view = requests.get(server.url + "/page", cookies=session.cookies, timeout=10)
                assert view.status_code == 200
                workers.add(view.headers["X-Worker"])
            assert len(fake.requests) == before, "a view waited on Toucan after sign-in"
            assert len(workers) >= 2
        assert len(fake.mints) == 3  # exactly one mint per sign-in
        assert [r.json["user"]["distinctId"] for r in fake.mints] == [
            "member-0",
            "member-1",
            "member-2",
        ]
    finally:
        log = server.stop()
    assert "Traceback" not in log, log


def scrape(url: str) -> dict[str, float]:
    """A real Prometheus text scrape, parsed into {'name{labels}': value}."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(requests.get(url, timeout=10).text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def test_prometheus_metrics_across_four_workers(
    fake: FakeToucan, redis_server: RedisServer, tmp_path: Any
) -> None:
    server = Gunicorn(
        {
            "TEST_TOUCAN_KEY": API_KEY,
            "TEST_TOUCAN_URL": fake.url,
            "TEST_REDIS_URL": redis_server.url,
            "TEST_PREFIX": f"prom-{uuid.uuid4().hex[:8]}:",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        },
        workers=4,
        threads=4,
    )
    try:
        views = fire(server.url + "/page", [{"user": f"u{i % 10}"} for i in range(80)])
        assert all(r.status_code == 200 for r in views)
        headers = {"X-Toucan-Refresh": "1", "Sec-Fetch-Site": "same-origin"}
        refreshed = [
            requests.post(server.url + "/toucan/token", params={"user": "u1"}, headers=headers)
            for _ in range(5)
        ] + [requests.post(server.url + "/toucan/token", headers=headers) for _ in range(3)]
        assert [r.status_code for r in refreshed] == [200] * 5 + [401] * 3
        fake.fail(503, times=1)
        assert requests.get(server.url + "/page", params={"user": "new"}).status_code == 503
        samples = scrape(server.url + "/metrics")
    finally:
        log = server.stop()
    assert "Traceback" not in log, log
    assert samples['toucan_mints_total{outcome="ok"}'] == len(fake.mints) == 10
    assert samples['toucan_mints_total{outcome="ToucanUnavailable"}'] == 1
    assert samples["toucan_mint_duration_seconds_count{}"] == 11
    served = sum(v for k, v in samples.items() if k.startswith("toucan_tokens_served_total"))
    assert served == 80 + 5
    assert samples['toucan_tokens_served_total{source="minted"}'] == 10
    assert samples['toucan_refresh_requests_total{status="200"}'] == 5
    assert samples['toucan_refresh_requests_total{status="401"}'] == 3
