"""Every upstream fault, through every entry point: a typed status, nothing cached, no leaks."""

from __future__ import annotations

import contextlib
import email.utils
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from flask_toucan import ToucanError
from flask_toucan.service import MAX_FAILURE_BACKOFF
from flask_toucan.testing import FakeToucan

from .conftest import API_KEY, USERS, Clock

RETRIES = 1
TIMEOUT = (0.5, 0.5)
VENDOR_HEADER = "X-Vendor-Trace"


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


# (id, fail() kwargs, expected status, attempts Toucan sees)
FAULTS: list[tuple[str, dict[str, Any], int, int]] = [
    ("500", {"status": 500}, 503, 1),
    ("502", {"status": 502}, 503, 1 + RETRIES),
    ("503-retry-after", {"status": 503, "retry_after": 1}, 503, 1 + RETRIES),
    ("429-retry-after-seconds", {"status": 429, "retry_after": 1}, 503, 1 + RETRIES),
    ("429-retry-after-date", {"status": 429, "retry_after": "DATE"}, 503, 1 + RETRIES),
    ("429-retry-after-too-long", {"status": 429, "retry_after": 3600}, 503, 1),
    ("400", {"status": 400}, 502, 1),
    ("401", {"status": 401}, 502, 1),
    ("403", {"status": 403}, 502, 1),
    ("404", {"status": 404}, 502, 1),
    ("200-not-json", {"status": 200, "body": "<html>oops</html>"}, 502, 1),
    ("200-no-token", {"status": 200, "body": {"expiresIn": "1h"}}, 502, 1),
    ("200-empty-token", {"status": 200, "body": {"token": "", "expiresIn": "1h"}}, 502, 1),
    ("200-token-not-string", {"status": 200, "body": {"token": ["x"], "expiresIn": "1h"}}, 502, 1),
    ("10MB-body", {"status": 200, "body": "x" * 10_000_000}, 502, 1),
    ("read-timeout", {"status": 200, "delay": 1.0}, 503, 1 + RETRIES),
    (
        "slow-drip",
        {"status": 200, "body": {"token": "t" * 40, "expiresIn": "1h"}, "drip": 0.1},
        503,
        1,
    ),
    ("dropped-connection", {"drop": True}, 503, 1 + RETRIES),
]

ENTRY_POINTS = ["page", "lazy-helper", "refresh-endpoint", "get_token"]


def call(app: Flask, entry: str) -> int:
    """The HTTP status the entry point produced (get_token: its exception's code)."""
    client = app.test_client()
    if entry == "page":
        return int(check(client.get("/page", headers={"X-User": "alice"})))
    if entry == "lazy-helper":
        return int(check(client.get("/lazy", headers={"X-User": "alice"})))
    if entry == "refresh-endpoint":
        headers = {"X-User": "alice", "X-Toucan-Refresh": "1", "Sec-Fetch-Site": "same-origin"}
        return int(check(client.post("/toucan/token", headers=headers), refresh=True))
    with app.app_context():
        try:
            app.extensions["test_toucan"].get_token(USERS["alice"])
        except ToucanError as exc:
            assert API_KEY not in str(exc) + repr(exc)
            assert "simulated" not in str(exc)
            return int(getattr(exc, "code", 500))
    return 200


def check(response: Any, refresh: bool = False) -> int:
    text = response.get_data(as_text=True)
    assert "simulated failure" not in text, "Toucan's error body reached the browser"
    assert "oops" not in text
    assert VENDOR_HEADER not in response.headers
    assert "Traceback" not in text
    if response.status_code != 200 and not refresh:
        assert response.headers.get("Retry-After") is None
    if response.status_code != 200 and refresh:
        # Our own back-off for this identity (at least 1 s, Toucan's hint capped at 60).
        assert 1 <= int(response.headers["Retry-After"]) <= 60
    return int(response.status_code)


@pytest.fixture
def fault_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(TOUCAN_MAX_RETRIES=RETRIES, TOUCAN_TIMEOUT=TIMEOUT)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize(
    ("fault", "options", "status", "attempts"), FAULTS, ids=[f[0] for f in FAULTS]
)
def test_fault_gives_typed_status_and_caches_nothing(
    fault_app: Flask,
    fake: FakeToucan,
    entry: str,
    fault: str,
    options: dict[str, Any],
    status: int,
    attempts: int,
    clock: Clock,
) -> None:
    options = dict(options)
    if options.get("retry_after") == "DATE":
        options["retry_after"] = http_date(1)
    options.setdefault("headers", {})[VENDOR_HEADER] = "vendor-internal-123"
    fake.fail(times=attempts, **options)
    started = time.monotonic()
    assert call(fault_app, entry) == status
    elapsed = time.monotonic() - started
    # The retry budget was used exactly, and the time stayed within the configured budget:
    # per attempt connect+read timeouts, plus at most the 5 s Retry-After we may honour.
    assert len(fake.requests) == attempts
    assert elapsed < attempts * sum(TIMEOUT) + (attempts - 1) * 5 + 2
    # Within the back-off the same answer comes at once, without asking Toucan again...
    assert call(fault_app, entry) == status
    assert len(fake.requests) == attempts
    # ...and no token was cached: once the back-off is over, the next call mints.
    clock.advance(MAX_FAILURE_BACKOFF)
    assert call(fault_app, entry) == 200
    assert len(fake.mints) == 1


def test_connection_refused_everywhere(make_app: Callable[..., Flask]) -> None:
    with FakeToucan(api_key=API_KEY) as gone:
        url = gone.url
    app = make_app(TOUCAN_BASE_URL=url, TOUCAN_MAX_RETRIES=RETRIES, TOUCAN_TIMEOUT=TIMEOUT)
    for entry in ENTRY_POINTS:
        assert call(app, entry) == 503


def test_redirect_to_another_host_is_not_followed(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    with FakeToucan(api_key="other") as elsewhere:
        target = elsewhere.url + "/embed/generate-token"
        app = make_app(TOUCAN_MAX_RETRIES=RETRIES)
        for entry in ENTRY_POINTS:
            fake.fail(302, headers={"Location": target})
            assert call(app, entry) == 502
        assert elsewhere.requests == [], "the API key was sent to another host"


@pytest.mark.parametrize("expires_in", [None, "soon", -5, "0s", {"h": 1}])
def test_odd_expires_in_gives_a_short_token(
    fault_app: Flask, fake: FakeToucan, expires_in: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fake.expires_in = expires_in
    for entry in ENTRY_POINTS:
        assert call(fault_app, entry) == 200
    # Assumed short (60 s): served for three quarters of that, then minted again.
    assert len(fake.mints) == 1
    assert any("expiresIn" in r.getMessage() for r in caplog.records)


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose accept queue is full, so new connections hang (a connect timeout)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    yield port
    for s in [*fillers, server]:
        s.close()


def test_connect_timeout_everywhere(make_app: Callable[..., Flask], unanswered_port: int) -> None:
    app = make_app(
        TOUCAN_BASE_URL=f"http://127.0.0.1:{unanswered_port}",
        TOUCAN_MAX_RETRIES=RETRIES,
        TOUCAN_TIMEOUT=(0.3, 5),
    )
    for entry in ENTRY_POINTS:
        started = time.monotonic()
        assert call(app, entry) == 503
        # Bounded by the connect timeout of each attempt, not by the 5 s read timeout.
        assert time.monotonic() - started < (1 + RETRIES) * 0.3 + 1.5
