"""A failure stays where it happened: a raising signal receiver, a failing secret manager,
a failing or slow Toucan for one identity, a user changing within a request, app code
raising on the refresh endpoint, a role nobody gave. Each through the public API."""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from flask import Flask, render_template_string, request
from flask_login import LoginManager, UserMixin, login_user, logout_user

from flask_toucan import Toucan, ToucanUser, signals
from flask_toucan.service import FAILURE_BACKOFF
from flask_toucan.testing import FakeToucan, decode_fake_token

from .conftest import API_KEY, Clock
from .markup import token_of
from .servers import Gunicorn, RedisServer

REFRESH = {"X-Toucan-Refresh": "1", "Sec-Fetch-Site": "same-origin"}


# -- 1. a raising signal receiver ------------------------------------------------------


def test_a_raising_token_minted_receiver_neither_discards_the_token_nor_mints_again(
    make_app: Callable[..., Flask], fake: FakeToucan, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("a metrics bug")

    signals.token_minted.connect(broken)
    try:
        client = make_app().test_client()
        pages = [client.get("/page", headers={"X-User": "alice"}) for _ in range(10)]
    finally:
        signals.token_minted.disconnect(broken)
    assert [p.status_code for p in pages] == [200] * 10
    assert len({token_of(p.text) for p in pages}) == 1
    assert len(fake.mints) == 1
    assert any("token-minted signal raised" in r.getMessage() for r in caplog.records)


def test_a_raising_token_served_receiver_does_not_break_the_page(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("a metrics bug")

    signals.token_served.connect(broken)
    try:
        client = make_app().test_client()
        assert client.get("/page", headers={"X-User": "alice"}).status_code == 200
        assert client.post("/toucan/token", headers={"X-User": "alice", **REFRESH}).json
    finally:
        signals.token_served.disconnect(broken)
    assert len(fake.mints) == 1


# -- 2. a failing secret manager ---------------------------------------------------------


def test_a_failing_secret_manager_does_not_take_warm_pages_down(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    calls: list[float] = []

    def vault() -> str:
        calls.append(time.monotonic())
        if len(calls) > 1:
            raise ConnectionError("the secret manager is down")
        return API_KEY

    # A TTL of 0: the key is due again at every use, the worst case.
    app = make_app(TOUCAN_API_KEY=vault, TOUCAN_API_KEY_TTL=0, TOUCAN_ON_ERROR="placeholder")
    client = app.test_client()
    first = client.get("/page", headers={"X-User": "alice"})
    assert first.status_code == 200
    pages = [client.get("/page", headers={"X-User": "alice"}) for _ in range(20)]
    assert [p.status_code for p in pages] == [200] * 20
    assert {token_of(p.text) for p in pages} == {token_of(first.text)}
    assert len(calls) <= 3
    # A user with no token yet is minted with the last key the manager gave.
    assert "auth-token" in client.get("/page", headers={"X-User": "bob"}).text
    assert len(calls) <= 3
    assert len(fake.mints) == 2


def test_a_slow_secret_manager_never_holds_up_other_users(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    released = threading.Event()
    calls: list[int] = []

    def vault() -> str:
        calls.append(1)
        if len(calls) > 1:
            released.wait(5)  # a secret manager that hangs
        return API_KEY

    app = make_app(TOUCAN_API_KEY=vault)
    client = app.test_client()
    assert client.get("/page", headers={"X-User": "bob"}).status_code == 200
    fake.fail(401, times=1)  # Toucan refuses the key: a fresh one is asked for, and hangs
    toucan = app.extensions["test_toucan"]
    stuck = threading.Thread(
        target=lambda: _quietly(lambda: _mint_for(app, toucan, "carol")), daemon=True
    )
    stuck.start()
    time.sleep(0.3)
    try:
        assert len(calls) == 2  # carol's mint is waiting on the secret manager
        started = time.monotonic()
        for _ in range(5):  # bob's warm views
            assert client.get("/page", headers={"X-User": "bob"}).status_code == 200
        # alice's first view mints with the last key, without waiting on the vault
        assert client.get("/page", headers={"X-User": "alice"}).status_code == 200
        assert time.monotonic() - started < 1.0
    finally:
        released.set()
        stuck.join(10)
    assert len(calls) == 2


def _mint_for(app: Flask, toucan: Toucan, name: str) -> None:
    with app.app_context():
        toucan.get_token(ToucanUser(name), force=True)


def _quietly(job: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):
        job()


# -- 3. a failing Toucan, one identity ----------------------------------------------------


def test_waiters_for_a_failing_mint_get_its_error_without_minting_again(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    fake.fail(503, times=1000, delay=0.5)  # slow and failing
    app = make_app()

    def refresh(_: int) -> int:
        client = app.test_client()
        return client.post("/toucan/token", headers={"X-User": "alice", **REFRESH}).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(refresh, range(24)))
    assert statuses == [503] * 24
    # One upstream attempt for the burst (MAX_RETRIES = 0 here), not one per waiter.
    assert len(fake.requests) == 1


def test_a_failure_is_remembered_for_the_back_off_then_tried_again(
    make_app: Callable[..., Flask], fake: FakeToucan, clock: Clock
) -> None:
    fake.fail(503, times=1)
    client = make_app().test_client()
    for _ in range(5):
        answer = client.post("/toucan/token", headers={"X-User": "alice", **REFRESH})
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "1"  # the controller waits the back-off
    assert len(fake.requests) == 1
    # Another identity is not held back by alice's failure.
    assert client.get("/page", headers={"X-User": "bob"}).status_code == 200
    clock.advance(FAILURE_BACKOFF)
    assert client.get("/page", headers={"X-User": "alice"}).status_code == 200
    assert len(fake.mints) == 2


def test_retry_after_lengthens_the_back_off(
    make_app: Callable[..., Flask], fake: FakeToucan, clock: Clock
) -> None:
    fake.fail(429, times=1, retry_after=30)
    client = make_app().test_client()
    assert client.get("/page", headers={"X-User": "alice"}).status_code == 503
    clock.advance(20)
    assert client.get("/page", headers={"X-User": "alice"}).status_code == 503
    assert len(fake.requests) == 1
    clock.advance(11)
    assert client.get("/page", headers={"X-User": "alice"}).status_code == 200


@pytest.fixture
def outage_server(fake: FakeToucan, redis_server: RedisServer) -> Iterator[Gunicorn]:
    server = Gunicorn(
        {
            "TEST_TOUCAN_KEY": API_KEY,
            "TEST_TOUCAN_URL": fake.url,
            "TEST_REDIS_URL": redis_server.url,
            "TEST_PREFIX": f"out-{uuid.uuid4().hex[:8]}:",
            "TEST_MAX_RETRIES": "2",
        },
        workers=1,
        threads=4,
    )
    yield server
    server.stop()


def test_a_refresh_burst_during_an_outage_costs_one_attempt_per_back_off(
    outage_server: Gunicorn, fake: FakeToucan
) -> None:
    url = outage_server.url
    session = requests.Session()

    def warm_view() -> float:
        started = time.monotonic()
        response = session.get(url + "/page?user=bob", timeout=30)
        assert response.status_code == 200
        return time.monotonic() - started

    warm_view()  # bob's token is cached
    quiet = [warm_view() for _ in range(15)]

    fake.fail(503, times=100_000, delay=0.3)  # Toucan down, each answer slow
    stop = threading.Event()
    answers: list[int] = []

    def hammer() -> None:
        own = requests.Session()
        while not stop.is_set():
            r = own.post(url + "/toucan/token?user=alice", headers=REFRESH, timeout=30)
            answers.append(r.status_code)

    hammers = [threading.Thread(target=hammer, daemon=True) for _ in range(6)]
    started = time.monotonic()
    for t in hammers:
        t.start()
    time.sleep(0.5)
    loaded = [warm_view() for _ in range(15)]
    stop.set()
    for t in hammers:
        t.join(30)
    elapsed = time.monotonic() - started
    ratio = statistics.median(loaded) / statistics.median(quiet)
    print(
        f"\nwarm view during a refresh burst: median {statistics.median(loaded) * 1000:.1f} ms "
        f"vs {statistics.median(quiet) * 1000:.1f} ms quiet (x{ratio:.1f}); "
        f"{len(answers)} refreshes, {len(fake.requests)} upstream requests in {elapsed:.1f} s"
    )
    assert answers and set(answers) == {503}
    # One attempt (3 requests: MAX_RETRIES = 2) per back-off window, and the window
    # starts when an attempt ends, so there are at most elapsed / (1 s + 0.9 s) + 1.
    attempts = len(fake.requests) / 3
    assert attempts <= elapsed / (FAILURE_BACKOFF + 0.9) + 1, (attempts, elapsed)
    # The burst holds no thread for long: bob's warm views stay warm (a ratio, never
    # an absolute time: this machine's speed is what it is).
    assert ratio < 10, ratio


# -- 4. the user changes within a request -------------------------------------------------


class Member(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


@pytest.fixture
def login_app(fake: FakeToucan) -> Flask:
    from flask_login import current_user

    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TOUCAN_API_KEY=API_KEY, TOUCAN_BASE_URL=fake.url)
    login = LoginManager(app)
    login.user_loader(Member)
    toucan = Toucan(app)

    @toucan.user_loader
    def load() -> ToucanUser | None:
        if not current_user.is_authenticated:
            return None
        return ToucanUser(current_user.id, attributes={"tenant": "t-" + current_user.id})

    @app.post("/sign-in")
    def sign_in() -> str:
        login_user(Member(request.args["user"]))
        return "ok"

    @app.get("/sign-out-then-render")
    @toucan.inject_token
    def sign_out_then_render() -> str:
        logout_user()
        return render_template_string("{{ toucan_dashboard('d') }}")

    @app.get("/switch-then-render")
    @toucan.inject_token
    def switch_then_render() -> str:
        login_user(Member("bob"))
        return render_template_string("{{ toucan_dashboard('d') }}")

    return app


def test_logout_within_a_decorated_view_renders_no_token_of_the_previous_user(
    login_app: Flask, fake: FakeToucan
) -> None:
    client = login_app.test_client()
    client.post("/sign-in?user=alice")
    response = client.get("/sign-out-then-render")
    assert response.status_code == 401
    assert fake.tokens_issued  # alice's token was minted by the decorator...
    for token in fake.tokens_issued:
        assert token not in response.text  # ...and is not on the page


def test_login_as_another_user_within_a_view_renders_that_users_token(
    login_app: Flask, fake: FakeToucan
) -> None:
    client = login_app.test_client()
    client.post("/sign-in?user=alice")
    response = client.get("/switch-then-render")
    assert response.status_code == 200
    assert decode_fake_token(token_of(response.text))["sub"] == "bob"


# -- 5. request-time errors keep to the contracts -------------------------------------------


def test_an_unknown_instance_from_user_data_renders_placeholders(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app(TOUCAN_ON_ERROR="placeholder")
    toucan = app.extensions["test_toucan"]
    toucan.user_loader(lambda: ToucanUser("dee", instance="asia"))
    client = app.test_client()
    page = client.get("/page")
    assert page.status_code == 200
    assert 'data-toucan-unavailable="dashboard"' in page.text
    refresh = client.post("/toucan/token", headers=REFRESH)
    assert refresh.status_code == 500
    assert refresh.json == {"error": "invalid_user", "message": "analytics are unavailable"}
    assert fake.requests == []


@pytest.mark.parametrize("where", ["allow", "loader"])
def test_app_code_raising_on_the_refresh_endpoint_still_answers_json(
    make_app: Callable[..., Flask], fake: FakeToucan, where: str
) -> None:
    app = make_app()
    toucan = app.extensions["test_toucan"]
    state = {"raise": False}

    def allow() -> bool:
        if state["raise"] and where == "allow":
            raise LookupError("the roles table is down")
        return True

    @app.get("/admin")
    @toucan.inject_token(role="admin", allow=allow)
    def admin() -> str:
        return render_template_string("{{ toucan_dashboard('d') }}")

    client = app.test_client()
    page = client.get("/admin", headers={"X-User": "alice"})
    reference = page.text.split('data-toucan-variant="')[1].split('"')[0]
    state["raise"] = True
    if where == "loader":

        def broken_loader() -> ToucanUser:
            raise LookupError("the users table is down")

        toucan.user_loader(broken_loader)
    response = client.post(
        "/toucan/token", headers={"X-User": "alice", **REFRESH}, json={"variant": reference}
    )
    assert response.status_code == 500
    assert response.mimetype == "application/json"
    assert response.json == {"error": "internal_error", "message": "analytics are unavailable"}


# -- 6. TOUCAN_DEFAULT_ROLE wherever no role was given ------------------------------------------


@pytest.mark.parametrize(
    "loaded", [ToucanUser("u-1"), {"distinct_id": "u-1"}], ids=["ToucanUser", "mapping"]
)
def test_default_role_reaches_toucan_for_users_without_a_role(
    make_app: Callable[..., Flask], fake: FakeToucan, loaded: Any
) -> None:
    app = make_app(TOUCAN_DEFAULT_ROLE="viewer")
    app.extensions["test_toucan"].user_loader(lambda: loaded)
    assert app.test_client().get("/page").status_code == 200
    assert fake.mints[0].json["user"]["role"] == "viewer"
    with app.app_context():
        app.extensions["test_toucan"].get_token(ToucanUser("u-2"))
    assert fake.mints[1].json["user"]["role"] == "viewer"
    # A role given is kept.
    with app.app_context():
        app.extensions["test_toucan"].get_token(ToucanUser("u-3", role="explorer"))
    assert fake.mints[2].json["user"]["role"] == "explorer"
