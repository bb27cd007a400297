"""A user's whole life in the app: required RLS attributes, several instances, rotated keys,
and tokens prefetched at sign-in."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, render_template_string, request
from flask_login import LoginManager, UserMixin, login_user

from flask_toucan import (
    InvalidToucanUser,
    Toucan,
    ToucanConfigError,
    ToucanUnavailable,
    ToucanUser,
)
from flask_toucan.cli import toucan_cli
from flask_toucan.testing import FakeToucan, decode_fake_token

from .conftest import API_KEY
from .markup import start_tags

REFRESH = {"X-Toucan-Refresh": "1", "Sec-Fetch-Site": "same-origin"}


def wait_for(predicate: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -- required attributes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"region": "EU"}, "has no 'tenant_id' attribute, which TOUCAN_REQUIRED_ATTRIBUTES"),
        ({"tenant_id": None}, "has no 'tenant_id' attribute (or it is None)"),
        ({"tenant_id": "7"}, "'tenant_id' attribute of type str; TOUCAN_REQUIRED_ATTRIBUTES "),
        ({"tenant_id": True}, "'tenant_id' attribute of type bool; TOUCAN_REQUIRED_ATTRIBUTES "),
    ],
)
@pytest.mark.parametrize("entry", ["page", "lazy-helper", "refresh-endpoint", "prefetch"])
def test_required_attributes_fail_closed(
    make_app: Callable[..., Flask],
    fake: FakeToucan,
    caplog: pytest.LogCaptureFixture,
    attributes: dict[str, Any],
    message: str,
    entry: str,
) -> None:
    app = make_app(TOUCAN_REQUIRED_ATTRIBUTES={"tenant_id": int})
    toucan = app.extensions["test_toucan"]
    toucan.user_loader(lambda: ToucanUser("alice", attributes=attributes))
    client = app.test_client()
    if entry == "page":
        app.config["PROPAGATE_EXCEPTIONS"] = True
        with pytest.raises(InvalidToucanUser, match=re.escape(message)):
            client.get("/page")
    elif entry == "lazy-helper":
        app.config["PROPAGATE_EXCEPTIONS"] = True
        with pytest.raises(InvalidToucanUser, match=re.escape(message)):
            client.get("/lazy")
    elif entry == "refresh-endpoint":
        response = client.post("/toucan/token", headers=REFRESH)
        assert response.status_code == 500
        assert response.json["error"] == "invalid_user"
        formatter = logging.Formatter()
        assert any(message in formatter.format(r) for r in caplog.records)
    else:
        with app.test_request_context("/"):
            toucan.prefetch()  # never raises
        logged = [r.getMessage() for r in caplog.records if r.name == "flask_toucan"]
        assert any(message in m for m in logged), logged
    assert fake.requests == []


def test_required_names_only_and_placeholder_mode(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app(TOUCAN_REQUIRED_ATTRIBUTES=["tenant_id"], TOUCAN_ON_ERROR="placeholder")
    toucan = app.extensions["test_toucan"]
    toucan.user_loader(lambda: ToucanUser("alice", attributes={"region": "EU"}))
    page = app.test_client().get("/page")
    assert page.status_code == 200
    assert 'data-toucan-unavailable="dashboard"' in page.text
    assert "<tc-dashboard" not in page.text
    toucan.user_loader(lambda: ToucanUser("alice", attributes={"tenant_id": "any type"}))
    assert "<tc-dashboard" in app.test_client().get("/page").text
    assert len(fake.mints) == 1


def test_required_attributes_config_is_checked(make_app: Callable[..., Flask]) -> None:
    with pytest.raises(ToucanConfigError, match="TOUCAN_REQUIRED_ATTRIBUTES"):
        make_app(TOUCAN_REQUIRED_ATTRIBUTES={"tenant_id": list})
    with pytest.raises(ToucanConfigError, match="TOUCAN_REQUIRED_ATTRIBUTES"):
        make_app(TOUCAN_REQUIRED_ATTRIBUTES="tenant_id")


# -- several instances ---------------------------------------------------------------


@pytest.fixture
def us_fake() -> Iterator[FakeToucan]:
    with FakeToucan(api_key="us-key-" + "x" * 10) as fake:
        yield fake


@pytest.fixture
def two_instances(make_app: Callable[..., Flask], fake: FakeToucan, us_fake: FakeToucan) -> Flask:
    app = make_app(
        TOUCAN_INSTANCES={
            "eu": {"BASE_URL": fake.url, "API_KEY": API_KEY},
            "us": {
                "BASE_URL": us_fake.url,
                "API_KEY": us_fake.api_key,
                "SCRIPT_URL": us_fake.url + "/us/embed.js",
            },
        }
    )
    toucan = app.extensions["test_toucan"]

    @toucan.user_loader
    def load() -> ToucanUser | None:
        name = request.headers.get("X-User")
        region = request.headers.get("X-Region", "eu")
        return ToucanUser(name, attributes={"tenant": name}, instance=region) if name else None

    return app


def page_parts(html: str) -> tuple[str, dict[str, Any]]:
    tags = start_tags(html)
    script = next(a["src"] for t, a in tags if t == "script")
    dashboard = next(a for t, a in tags if t == "tc-dashboard")
    return str(script), dashboard


def test_each_user_is_minted_at_their_own_instance(
    two_instances: Flask, fake: FakeToucan, us_fake: FakeToucan
) -> None:
    client = two_instances.test_client()
    eu_script, eu = page_parts(client.get("/page", headers={"X-User": "anna"}).text)
    us_script, us = page_parts(
        client.get("/page", headers={"X-User": "bill", "X-Region": "us"}).text
    )
    assert eu_script == fake.url + "/embed/embed.js"
    assert us_script == us_fake.url + "/us/embed.js"
    assert eu["server-url"] == fake.url + "/api"
    assert us["server-url"] == us_fake.url + "/api"
    assert [r.json["user"]["distinctId"] for r in fake.mints] == ["anna"]
    assert [r.json["user"]["distinctId"] for r in us_fake.mints] == ["bill"]
    assert us_fake.mints[0].headers["X-Api-Key"] == us_fake.api_key
    assert "instance" not in us_fake.mints[0].json  # not part of Toucan's body
    # Refresh renews against the same instance, from the same cache entry.
    renewed = client.post("/toucan/token", headers={**REFRESH, "X-User": "bill", "X-Region": "us"})
    assert renewed.json["token"] == us["auth-token"]
    assert len(us_fake.mints) == 1 and len(fake.mints) == 1


def test_same_identity_on_two_instances_never_shares_a_token(
    two_instances: Flask, fake: FakeToucan, us_fake: FakeToucan
) -> None:
    client = two_instances.test_client()
    _, eu = page_parts(client.get("/page", headers={"X-User": "cleo"}).text)
    _, us = page_parts(client.get("/page", headers={"X-User": "cleo", "X-Region": "us"}).text)
    assert eu["auth-token"] != us["auth-token"]
    assert eu["auth-token"] in fake.tokens_issued and us["auth-token"] in us_fake.tokens_issued


def test_unknown_instance_names_the_key(two_instances: Flask) -> None:
    two_instances.config["PROPAGATE_EXCEPTIONS"] = True
    # From user data, not the config: a typed user error (placeholder mode renders it).
    with pytest.raises(InvalidToucanUser, match="'asia' is not in TOUCAN_INSTANCES"):
        two_instances.test_client().get("/page", headers={"X-User": "dee", "X-Region": "asia"})


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ({"eu": {"BASE_URL": "https://eu.example"}}, "with BASE_URL and API_KEY"),
        ({"eu": {"BASE_URL": "ftp://x", "API_KEY": "k"}}, "TOUCAN_INSTANCES['eu']"),
        ({"eu": {"BASE_URL": "http://eu.example", "API_KEY": "k"}}, "in clear"),
        ({"eu": {"BASE_URL": "https://eu.example", "API_KEY": "k", "X": 1}}, "unknown keys"),
    ],
)
def test_instances_are_checked_at_init_app(
    make_app: Callable[..., Flask], instances: dict[str, Any], message: str
) -> None:
    with pytest.raises(ToucanConfigError, match=re.escape(message)):
        make_app(TOUCAN_INSTANCES=instances)


def test_preview_covers_instances(config: dict[str, Any]) -> None:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="s",
        TOUCAN_PREVIEW=True,
        TOUCAN_API_KEY=None,
        TOUCAN_INSTANCES={
            "eu": {"BASE_URL": "https://eu.toucan.example", "API_KEY": "unused-in-preview"}
        },
    )
    toucan = Toucan(app)
    toucan.user_loader(lambda: ToucanUser("ed", instance="eu"))

    @app.get("/")
    @toucan.inject_token
    def index() -> str:
        return render_template_string("{{ toucan_script() }}{{ toucan_dashboard('d') }}")

    script, dashboard = page_parts(app.test_client().get("/").text)
    assert script.endswith("toucan-preview.js")
    assert dashboard["server-url"] == "https://eu.toucan.example/api"
    assert decode_fake_token(dashboard["auth-token"])["instance"] == "eu"


# -- keys from a secret manager ---------------------------------------------------


def test_a_rotated_key_is_picked_up_without_a_restart(
    make_app: Callable[..., Flask], fake: FakeToucan, caplog: pytest.LogCaptureFixture
) -> None:
    keys = [API_KEY]
    calls: list[int] = []

    def secret_manager() -> str:
        calls.append(1)
        return keys[-1]

    app = make_app(TOUCAN_API_KEY=secret_manager)
    assert calls == []  # checked to be callable at init_app, not called
    client = app.test_client()
    assert client.get("/page", headers={"X-User": "alice"}).status_code == 200
    rotated = "tk_live_ROTATED_" + "z" * 12
    fake.api_key = rotated  # the old key is revoked...
    keys.append(rotated)  # ...and the secret manager has the new one
    assert client.get("/page", headers={"X-User": "bob"}).status_code == 200
    assert [r.status for r in fake.requests] == [200, 401, 200]  # one failed attempt
    assert fake.requests[-1].headers["X-Api-Key"] == rotated
    # Tokens of the old key are not reused under the new one: the fingerprint moved.
    assert client.get("/page", headers={"X-User": "alice"}).status_code == 200
    assert len(fake.mints) == 3
    for record in caplog.records:
        assert rotated not in record.getMessage()


def test_key_is_reused_for_its_ttl(make_app: Callable[..., Flask], fake: FakeToucan) -> None:
    calls: list[int] = []

    def secret_manager() -> str:
        calls.append(1)
        return API_KEY

    app = make_app(TOUCAN_API_KEY=secret_manager, TOUCAN_API_KEY_TTL=300)
    client = app.test_client()
    for name in ("alice", "bob", "carol"):
        assert client.get("/page", headers={"X-User": name}).status_code == 200
    assert len(calls) == 1


def test_a_failing_secret_manager_is_a_503_naming_the_key_at_the_first_mint(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    def broken() -> str:
        raise KeyError("vault path secret/toucan not found")

    app = make_app(TOUCAN_API_KEY=broken)
    with app.app_context(), pytest.raises(ToucanUnavailable, match="TOUCAN_API_KEY callable"):
        app.extensions["test_toucan"].get_token(ToucanUser("alice"))
    assert app.test_client().get("/page", headers={"X-User": "alice"}).status_code == 503
    assert fake.requests == []
    result = app.test_cli_runner().invoke(toucan_cli, ["config"])
    assert "TOUCAN_API_KEY = '<set>'" in result.output


# -- prefetch ------------------------------------------------------------------------


def test_prefetch_mints_in_the_background_and_the_view_finds_it(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    fake.delay = 0.3
    app = make_app()
    toucan = app.extensions["test_toucan"]
    started = time.monotonic()
    with app.test_request_context("/", headers={"X-User": "alice"}):
        toucan.prefetch()
    assert time.monotonic() - started < 0.2  # did not wait for Toucan
    wait_for(lambda: len(fake.mints) == 1)
    before = len(fake.requests)
    assert app.test_client().get("/page", headers={"X-User": "alice"}).status_code == 200
    assert len(fake.requests) == before  # no upstream call during the view
    with app.test_request_context("/", headers={"X-User": "alice"}):
        toucan.prefetch()  # warm: free
    time.sleep(0.1)
    assert len(fake.requests) == before


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 503, "times": 5},
        {"status": 401},
        {"status": 200, "delay": 3},
        {"drop": True, "times": 5},
    ],
)
def test_prefetch_can_never_hurt_a_sign_in(
    make_app: Callable[..., Flask], fake: FakeToucan, fault: dict[str, Any]
) -> None:
    app = make_app(TOUCAN_PREFETCH_ON_LOGIN=True, TOUCAN_MINT_DEADLINE=2)
    login = LoginManager(app)

    class Member(UserMixin):
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    login.user_loader(Member)
    toucan = app.extensions["test_toucan"]
    toucan.user_loader(lambda: ToucanUser("alice", attributes={"tenant": "acme"}))

    @app.post("/sign-in")
    def sign_in() -> str:
        login_user(Member("alice"))
        return "welcome"

    fake.fail(**fault)
    started = time.monotonic()
    response = app.test_client().post("/sign-in")
    assert response.status_code == 200 and response.text == "welcome"
    assert time.monotonic() - started < 0.5
    wait_for(lambda: len(fake.requests) >= 1)


def test_prefetch_on_login_sees_the_new_user(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app(TOUCAN_PREFETCH_ON_LOGIN=True)
    login = LoginManager(app)
    signed_in: dict[str, str] = {}

    class Member(UserMixin):
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    login.user_loader(Member)
    toucan = app.extensions["test_toucan"]

    @toucan.user_loader
    def load() -> ToucanUser | None:
        from flask_login import current_user

        if not current_user.is_authenticated:
            return None
        signed_in["seen"] = current_user.id
        return ToucanUser(current_user.id, attributes={"tenant": "acme"})

    @app.post("/sign-in/<name>")
    def sign_in(name: str) -> str:
        toucan.current_user()  # loaded before the sign-in: nobody
        login_user(Member(name))
        return "ok"

    @app.get("/analytics")
    @toucan.inject_token
    def analytics() -> str:
        return render_template_string("{{ toucan_dashboard('d') }}")

    client = app.test_client()
    client.post("/sign-in/zoe")
    wait_for(lambda: len(fake.mints) == 1)
    assert fake.mints[0].json["user"]["distinctId"] == "zoe"
    before = len(fake.requests)
    assert client.get("/analytics").status_code == 200
    assert len(fake.requests) == before


def test_prefetch_on_login_needs_flask_login(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "flask_login", None)
    with pytest.raises(ToucanConfigError, match="TOUCAN_PREFETCH_ON_LOGIN needs Flask-Login"):
        make_app(TOUCAN_PREFETCH_ON_LOGIN=True)


# -- removed keys and service options -----------------------------------------------


def test_removed_tuning_keys_are_warned_about_with_their_replacement(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(TOUCAN_REFRESH_AHEAD=0.9, TOUCAN_LOCK_WAIT=1)
    messages = [r.getMessage() for r in caplog.records if r.name == "flask_toucan"]
    assert (
        "config key TOUCAN_REFRESH_AHEAD was removed and has no effect: pass "
        "service_options={'refresh_ahead': ...} to Toucan() or init_app()"
    ) in messages
    assert any("TOUCAN_LOCK_WAIT was removed" in m for m in messages)
    assert not any("unknown config key" in m for m in messages)
    assert app.extensions["toucan"].service.refresh_ahead == 0  # the key had no effect
    result = app.test_cli_runner().invoke(toucan_cli, ["doctor"])
    assert "✗ config key TOUCAN_REFRESH_AHEAD was removed" in result.output


def test_service_options_reach_the_service_and_a_typo_names_them(fake: FakeToucan) -> None:
    app = Flask(__name__)
    app.config.update(TOUCAN_API_KEY=API_KEY, TOUCAN_BASE_URL=fake.url)
    Toucan(app, service_options={"lock_wait": 1.5, "refresh_ahead": 0.25})
    assert app.extensions["toucan"].service.lock_wait == 1.5
    assert app.extensions["toucan"].service.refresh_ahead == 0.25
    other = Flask(__name__)
    other.config.update(TOUCAN_API_KEY=API_KEY, TOUCAN_BASE_URL=fake.url)
    with pytest.raises(ToucanConfigError, match=r"service_options: .*'lock_wiat'"):
        Toucan(other, service_options={"lock_wiat": 1.5})


@pytest.mark.parametrize(
    ("base", "allowed"),
    [
        ("http://127.0.0.1:8765", True),
        ("http://127.3.2.1", True),
        ("http://[::1]:8765", True),
        ("http://localhost:8765", True),
        ("http://127.attacker.example", False),
        ("http://127.0.0.1.nip.io", False),
        ("http://localhost.attacker.example", False),
        ("http://10.0.0.7", False),
    ],
)
def test_plain_http_is_allowed_only_to_loopback_addresses(base: str, allowed: bool) -> None:
    app = Flask(__name__)
    app.config.update(TOUCAN_API_KEY=API_KEY, TOUCAN_BASE_URL=base)
    if allowed:
        Toucan(app)
    else:
        with pytest.raises(ToucanConfigError, match="in clear"):
            Toucan(app)


@pytest.mark.parametrize("prefix", ["", "   ", "t*", "toucan:[ab]", "a?", "a\\b", "to can"])
def test_a_cache_key_prefix_that_could_reach_other_apps_keys_is_refused(prefix: str) -> None:
    app = Flask(__name__)
    app.config.update(TOUCAN_PREVIEW=True, TOUCAN_CACHE_KEY_PREFIX=prefix)
    with pytest.raises(ToucanConfigError, match="TOUCAN_CACHE_KEY_PREFIX"):
        Toucan(app)


def test_instrument_twice_counts_each_event_once(make_app: Callable[..., Flask]) -> None:
    from prometheus_client import CollectorRegistry

    from flask_toucan.metrics import instrument

    registry = CollectorRegistry()
    app = make_app()
    instrument(app, registry)
    instrument(app, registry)
    app.test_client().get("/page", headers={"X-User": "alice"})
    assert registry.get_sample_value("toucan_mints_total", {"outcome": "ok"}) == 1


@pytest.mark.parametrize(
    "cache_config",
    [
        {"CACHE_TYPE": "FileSystemCache", "CACHE_DIR": "/tmp/flask-toucan-test-fs"},
        {"CACHE_TYPE": "flask_caching.backends.FileSystemCache", "CACHE_DIR": "/tmp/x"},
    ],
)
def test_a_backend_that_would_unpickle_is_refused_at_start_up(
    cache_config: dict[str, Any],
) -> None:
    app = Flask(__name__)
    app.config.update(TOUCAN_PREVIEW=True, TOUCAN_CACHE_CONFIG=cache_config)
    with pytest.raises(ToucanConfigError, match="FileSystemCache would unpickle"):
        Toucan(app)


def test_a_loader_with_a_parameter_is_refused_at_registration() -> None:
    toucan = Toucan()

    def load(user_id: str) -> ToucanUser:  # the Flask-Login habit
        return ToucanUser(user_id)

    with pytest.raises(ToucanConfigError, match=r"take no argument, but load\(\) needs user_id"):
        toucan.user_loader(load)
    # Optional parameters and *args are fine.
    assert toucan.user_loader(lambda extra=None: None) is not None


def test_returning_the_framework_user_object_says_what_to_return(
    make_app: Callable[..., Flask],
) -> None:
    from werkzeug.local import LocalProxy

    app = make_app()
    app.config["PROPAGATE_EXCEPTIONS"] = True
    app.extensions["test_toucan"].user_loader(lambda: LocalProxy(lambda: object()))
    with pytest.raises(InvalidToucanUser, match="not current_user itself"):
        app.test_client().get("/page")
