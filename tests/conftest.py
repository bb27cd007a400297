from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from flask import Flask, render_template_string, request
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from flask_toucan import Toucan, ToucanUser, signals, tokens
from flask_toucan.testing import FakeToucan

from .servers import RedisServer, running_fake_command

# Distinctive, so a leak anywhere is found by a plain substring search.
API_KEY = "tk_live_SECRET_9f8e7d6c5b4a"

USERS = {
    "alice": ToucanUser("alice", attributes={"tenant": "acme", "region": "EU"}),
    "bob": ToucanUser("bob", attributes={"tenant": "acme", "region": "US"}),
    "carol": ToucanUser("carol", role="viewer", attributes={"tenant": "globex"}),
}


#: Modules every test of which runs extra infrastructure: Chromium, gunicorn workers,
#: Redis Sentinel or Cluster, memcached, load and benchmark runs.
INFRA_MODULES = frozenset(
    {"test_browser", "test_gunicorn", "test_load", "test_benchmarks", "test_redis_topologies",
     "test_memcached"}
)  # fmt: skip
#: Fixtures that start a server of their own (a private redis-server, a proxy) or a
#: browser. (A FakeToucan over TLS is not one: it runs in the test's process, and TLS is
#: what differs most between library versions.)
INFRA_FIXTURES = frozenset({"browser", "redis_server", "memcached", "proxy", "serve"})
#: Modules that need the agent frameworks (extra ``agents``, which pins MCP SDK 1.x).
AGENT_MODULES = frozenset({"test_agents"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the infrastructure tier ``infra``: `scripts/test.sh --quick` and the
    lowest-versions run leave it out (``-m "not infra"``); the full run has everything."""
    for item in items:
        module = item.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
        fixtures = set(getattr(item, "fixturenames", ()))
        if module in INFRA_MODULES or fixtures & INFRA_FIXTURES:
            item.add_marker(pytest.mark.infra)
        if module in AGENT_MODULES:
            item.add_marker(pytest.mark.agents)


class Clock:
    """A clock tests move by hand; flask_toucan reads it through tokens.now()."""

    def __init__(self, start: float = 1_900_000_000.0) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(tokens, "_clock", c)
    return c


class LeakCheckingClient(FlaskClient):
    """A test client that fails on any response carrying the API key."""

    def open(self, *args: Any, **kwargs: Any) -> TestResponse:
        response = super().open(*args, **kwargs)
        assert_no_secret(response.get_data(as_text=True), "response body")
        for name, value in response.headers.items():
            assert_no_secret(f"{name}: {value}", "response header")
        return response


def assert_no_secret(text: str, where: str) -> None:
    assert API_KEY not in text, f"the API key leaked into a {where}"


class _RecordAll(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def no_secret_in_responses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test: any Flask test client, on any app, fails on a response with the API key."""
    monkeypatch.setattr(Flask, "test_client_class", LeakCheckingClient)


@pytest.fixture(autouse=True)
def no_secret_in_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[_RecordAll]:
    """Every test: nothing logged at any level, by any logger, and no signal argument,
    holds the API key or a token."""
    issued: list[str] = []
    original_issue = FakeToucan._issue

    def recording_issue(self: FakeToucan, payload: dict[str, Any]) -> str:
        token = original_issue(self, payload)
        issued.append(token)
        return token

    monkeypatch.setattr(FakeToucan, "_issue", recording_issue)
    sent: list[tuple[str, dict[str, Any]]] = []

    def record_signal(name: str) -> Callable[..., None]:
        def receiver(sender: Any, **kwargs: Any) -> None:
            sent.append((name, kwargs))

        return receiver

    receivers = {
        signal: record_signal(signal.name)
        for signal in (
            signals.token_minted,
            signals.mint_failed,
            signals.token_served,
            signals.token_refreshed,
        )
    }
    for signal, receiver in receivers.items():
        signal.connect(receiver)
    handler = _RecordAll()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for signal, receiver in receivers.items():
            signal.disconnect(receiver)
    for name, kwargs in sent:
        text = repr(kwargs)
        assert_no_secret(text, f"signal {name}")
        for token in issued:
            assert token not in text, f"a token leaked into the signal {name}"
    formatter = logging.Formatter()
    for record in handler.records:
        text = formatter.format(record)
        assert_no_secret(text, f"log record of {record.name}")
        for token in issued:
            assert token not in text, f"a token leaked into a log record of {record.name}"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for the session (the system one is left alone)."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A private certificate authority (trustme)."""
    return trustme.CA()


@pytest.fixture
def tls_fake(ca: trustme.CA) -> Iterator[FakeToucan]:
    """A FakeToucan over real TLS, its certificate signed by ``ca``."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    with FakeToucan(api_key=API_KEY, ssl_context=context) as fake:
        yield fake


@pytest.fixture
def ca_bundle(ca: trustme.CA, tmp_path: Path) -> str:
    """``ca``'s certificate as a CA bundle file (TOUCAN_VERIFY, REQUESTS_CA_BUNDLE)."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def fake() -> Iterator[FakeToucan]:
    with FakeToucan(api_key=API_KEY) as f:
        yield f


@pytest.fixture
def config(fake: FakeToucan) -> dict[str, Any]:
    return {
        "TESTING": True,
        "SECRET_KEY": "test",
        "TOUCAN_API_KEY": API_KEY,
        "TOUCAN_BASE_URL": fake.url,
        "TOUCAN_TIMEOUT": (2, 2),
        "TOUCAN_MAX_RETRIES": 0,
    }


def current_test_user() -> ToucanUser | None:
    name = request.headers.get("X-User")
    return USERS.get(name) if name else None


@pytest.fixture
def make_app(config: dict[str, Any]) -> Callable[..., Flask]:
    def make(**overrides: Any) -> Flask:
        """An app with ``overrides`` in its config; lower-case names are TokenService
        options (refresh-ahead is off unless asked for: the tests that count mints with
        a moving clock would see background renewals)."""
        options = {"refresh_ahead": 0.0}
        options.update({k: overrides.pop(k) for k in list(overrides) if not k.isupper()})
        app = Flask(__name__)
        app.config.update(config)
        app.config.update(overrides)
        toucan = Toucan(app, service_options=options)
        toucan.user_loader(current_test_user)
        app.extensions["test_toucan"] = toucan

        @app.get("/page")
        @toucan.inject_token
        def page() -> str:
            return render_template_string(
                "{{ toucan_script() }}{{ toucan_dashboard('sales') }}"
                "<p id=exp>{{ toucan_token.expires_in }}</p>"
            )

        @app.get("/lazy")
        def lazy() -> str:
            return render_template_string("{{ toucan_dashboard('sales', theme='dark') }}")

        @app.get("/plain")
        def plain() -> str:
            return "no token here"

        return app

    return make


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def toucan(app: Flask) -> Toucan:
    t = app.extensions["test_toucan"]
    assert isinstance(t, Toucan)
    return t


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def fake_command() -> Iterator[str]:
    """`flask toucan fake` running in a real subprocess; yields its URL."""
    with running_fake_command("--api-key", "cli-fake-key", "--expires-in", "5m") as (url, said):
        assert f"FakeToucan listening on {url}" in said
        yield url
