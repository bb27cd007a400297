from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, g, render_template_string
from flask_caching import Cache

from flask_toucan import (
    EmbedToken,
    Toucan,
    ToucanConfigError,
    ToucanUser,
    ToucanUserRequired,
)
from flask_toucan.cache import FrontCache, TokenStore
from flask_toucan.service import FAILURE_BACKOFF
from flask_toucan.testing import FakeToucan, decode_fake_token

from .conftest import API_KEY, USERS, Clock


def claims_of(html: str) -> dict[str, Any]:
    token = html.split('auth-token="')[1].split('"')[0]
    return decode_fake_token(token)


# -- init and config ---------------------------------------------------------


def test_defaults_are_visible_in_app_config(app: Flask, fake: FakeToucan) -> None:
    c = app.config
    assert c["TOUCAN_TOKEN_PATH"] == "/embed/generate-token"
    assert c["TOUCAN_SERVER_URL"] == fake.url + "/api"
    assert c["TOUCAN_SCRIPT_URL"] == fake.url + "/embed/embed.js"
    assert c["TOUCAN_DEFAULT_ROLE"] == "explorer"
    assert c["TOUCAN_MIN_TOKEN_TTL"] == 300
    assert c["TOUCAN_CACHE_KEY_PREFIX"] == "toucan:"
    assert c["TOUCAN_URL_PREFIX"] == "/toucan"
    assert c["TOUCAN_REFRESH"] is True
    assert c["TOUCAN_PREVIEW"] is False
    assert c["TOUCAN_CACHE_CONFIG"] is None


def test_default_base_url() -> None:
    app = Flask(__name__)
    app.config["TOUCAN_API_KEY"] = API_KEY
    Toucan(app)
    assert app.config["TOUCAN_BASE_URL"] == "https://toucanai.cloud"
    assert app.config["TOUCAN_SERVER_URL"] == "https://toucanai.cloud/api"
    assert app.config["TOUCAN_SCRIPT_URL"] == "https://toucanai.cloud/embed/embed.js"
    assert app.config["TOUCAN_TIMEOUT"] == (3.05, 10)
    assert app.config["TOUCAN_MAX_RETRIES"] == 2


def test_missing_api_key_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOUCAN_API_KEY", raising=False)
    app = Flask(__name__)
    with pytest.raises(ToucanConfigError, match="TOUCAN_API_KEY is not set") as info:
        Toucan(app)
    assert isinstance(info.value, RuntimeError)


def test_api_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCAN_API_KEY", API_KEY)
    app = Flask(__name__)
    Toucan(app)
    assert app.config["TOUCAN_API_KEY"] == API_KEY


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("TOUCAN_BASE_URL", "toucanai.cloud", "TOUCAN_BASE_URL must be an http"),
        ("TOUCAN_TOKEN_PATH", "embed/generate-token", "TOUCAN_TOKEN_PATH must start with '/'"),
        ("TOUCAN_TIMEOUT", (1, 2, 3), "TOUCAN_TIMEOUT must be a positive"),
        ("TOUCAN_TIMEOUT", -1, "TOUCAN_TIMEOUT must be a positive"),
        ("TOUCAN_MAX_RETRIES", "2", "TOUCAN_MAX_RETRIES must be an integer"),
        ("TOUCAN_MIN_TOKEN_TTL", -5, "TOUCAN_MIN_TOKEN_TTL must be an integer >= 0"),
        ("TOUCAN_CACHE_CONFIG", "redis://", "TOUCAN_CACHE_CONFIG must be a dict in Flask-Caching"),
        (
            "TOUCAN_CACHE_CONFIG",
            {"CACHE_TYPE": "NoSuchCache"},
            "TOUCAN_CACHE_CONFIG could not be used",
        ),
        ("TOUCAN_URL_PREFIX", "toucan", "TOUCAN_URL_PREFIX must start with '/'"),
        ("TOUCAN_REFRESH", "yes", "TOUCAN_REFRESH must be True or False"),
        ("TOUCAN_PREVIEW", 1, "TOUCAN_PREVIEW must be True or False"),
        ("TOUCAN_DEFAULT_ROLE", "", "TOUCAN_DEFAULT_ROLE must be a non-empty string"),
        ("TOUCAN_API_KEY", 12345, "TOUCAN_API_KEY must be a non-empty one-line string"),
        ("TOUCAN_REFRESH_STRATEGY", "poll", "TOUCAN_REFRESH_STRATEGY must be one of"),
    ],
)
def test_bad_config_names_the_key(key: str, value: object, message: str) -> None:
    app = Flask(__name__)
    app.config.update(TOUCAN_API_KEY=API_KEY)
    app.config[key] = value
    with pytest.raises(ToucanConfigError, match=message.replace("(", r"\(")):
        Toucan(app)


def test_bad_api_key_value_is_not_echoed() -> None:
    app = Flask(__name__)
    app.config["TOUCAN_API_KEY"] = API_KEY + "\nX"
    with pytest.raises(ToucanConfigError) as info:
        Toucan(app)
    assert API_KEY not in str(info.value)
    assert f"(got a string of {len(API_KEY) + 2} characters)" in str(info.value)


def test_second_init_app_on_same_app_raises(app: Flask) -> None:
    with pytest.raises(RuntimeError, match="already initialised"):
        Toucan().init_app(app)


def test_factory_pattern_and_two_apps(config: dict[str, Any], fake: FakeToucan) -> None:
    toucan = Toucan()

    @toucan.user_loader
    def load() -> ToucanUser:
        return ToucanUser("same-user")

    apps = []
    for prefix in ("/a", "/b"):
        app = Flask(__name__)
        app.config.update(config, TOUCAN_URL_PREFIX=prefix)
        toucan.init_app(app)

        @app.get("/")
        @toucan.inject_token
        def index() -> str:
            return render_template_string("{{ toucan_dashboard('d') }}")

        apps.append(app)
    for app in apps:
        assert app.test_client().get("/").status_code == 200
    # Each app has its own cache: one mint each.
    assert len(fake.mints) == 2
    assert {r.rule for r in apps[1].url_map.iter_rules() if r.endpoint == "toucan.static"} == {
        "/b/static/<path:filename>"
    }


def test_not_initialised_message(app: Flask) -> None:
    other = Toucan()
    with app.app_context(), pytest.raises(RuntimeError, match=r"did you forget toucan\.init_app"):
        other.get_token(ToucanUser("u"))


def test_no_user_loader_message(config: dict[str, Any]) -> None:
    app = Flask(__name__)
    app.config.update(config)
    toucan = Toucan(app)

    @app.get("/")
    @toucan.inject_token
    def index() -> str:
        return "x"

    app.config["PROPAGATE_EXCEPTIONS"] = True
    with pytest.raises(ToucanConfigError, match=r"@toucan\.user_loader"):
        app.test_client().get("/")


def test_user_loader_returns_function_unchanged() -> None:
    toucan = Toucan()

    def load() -> None:
        return None

    assert toucan.user_loader(load) is load


# -- page flow ---------------------------------------------------------------


def test_two_page_views_one_mint(client: Any, fake: FakeToucan) -> None:
    first = client.get("/page", headers={"X-User": "alice"})
    second = client.get("/page", headers={"X-User": "alice"})
    assert first.status_code == second.status_code == 200
    assert len(fake.mints) == 1
    assert claims_of(first.text)["sub"] == "alice"
    assert claims_of(first.text) == claims_of(second.text)


def test_different_users_and_attributes_get_new_mints(
    app: Flask, client: Any, fake: FakeToucan
) -> None:
    client.get("/page", headers={"X-User": "alice"})
    client.get("/page", headers={"X-User": "bob"})  # same tenant, other region
    client.get("/page", headers={"X-User": "carol"})  # other role
    assert len(fake.mints) == 3
    assert [r.json["user"]["distinctId"] for r in fake.mints] == ["alice", "bob", "carol"]
    assert fake.mints[2].json["user"]["role"] == "viewer"


def test_attribute_change_for_same_user_mints_new_token(
    make_app: Callable[..., Flask], fake: FakeToucan, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    client = app.test_client()
    html = client.get("/page", headers={"X-User": "alice"}).text
    monkeypatch.setitem(
        USERS, "alice", ToucanUser("alice", attributes={"tenant": "acme", "region": "US"})
    )
    html2 = client.get("/page", headers={"X-User": "alice"}).text
    assert len(fake.mints) == 2
    assert claims_of(html)["attributes"]["region"] == "EU"
    assert claims_of(html2)["attributes"]["region"] == "US"


def test_attribute_order_does_not_matter(
    make_app: Callable[..., Flask], fake: FakeToucan, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    client = app.test_client()
    monkeypatch.setitem(USERS, "x", ToucanUser("x", attributes={"a": 1, "b": 2}))
    client.get("/page", headers={"X-User": "x"})
    monkeypatch.setitem(USERS, "x", ToucanUser("x", attributes={"b": 2, "a": 1}))
    client.get("/page", headers={"X-User": "x"})
    assert len(fake.mints) == 1


def test_role_and_permissions_variants_mint_separately(app: Flask, fake: FakeToucan) -> None:
    toucan = app.extensions["test_toucan"]

    @app.get("/assistant")
    @toucan.inject_token(permissions={"ai": "can_query"}, allow=lambda: True)
    def assistant() -> str:
        return render_template_string("{{ toucan_assistant() }}")

    @app.get("/editor")
    @toucan.inject_token(role="editor", allow=lambda: True)
    def editor() -> str:
        return render_template_string("{{ toucan_dashboard('d') }}")

    client = app.test_client()
    plain = client.get("/page", headers={"X-User": "alice"}).text
    ai = client.get("/assistant", headers={"X-User": "alice"}).text
    ed = client.get("/editor", headers={"X-User": "alice"}).text
    client.get("/assistant", headers={"X-User": "alice"})
    assert len(fake.mints) == 3
    assert claims_of(plain)["permissions"] is None
    assert claims_of(ai)["permissions"] == {"ai": "can_query"}
    assert fake.mints[1].json["permissions"] == {"ai": "can_query"}
    assert claims_of(ed)["role"] == "editor"
    assert claims_of(ed)["attributes"] == {"tenant": "acme", "region": "EU"}


def test_no_user_is_401(client: Any, fake: FakeToucan) -> None:
    response = client.get("/page")
    assert response.status_code == 401
    assert len(fake.requests) == 0


def test_user_required_is_werkzeug_401() -> None:
    assert ToucanUserRequired().code == 401


def test_loader_called_once_per_request(app: Flask) -> None:
    toucan = app.extensions["test_toucan"]
    calls: list[int] = []

    @toucan.user_loader
    def load() -> ToucanUser:
        calls.append(1)
        return USERS["alice"]

    @app.get("/many")
    @toucan.inject_token
    def many() -> str:
        return render_template_string(
            "{{ toucan_dashboard('a') }}{{ toucan_chart('b') }}{{ toucan_assistant() }}"
            "{{ toucan_token().expires_in }}"
        )

    app.test_client().get("/many")
    assert len(calls) == 1


def test_loader_may_return_a_mapping(app: Flask, fake: FakeToucan) -> None:
    toucan = app.extensions["test_toucan"]
    toucan.user_loader(lambda: {"distinctId": "m1", "attributes": {"plan": "pro"}})
    html = app.test_client().get("/page").text
    assert claims_of(html) == {
        **claims_of(html),
        "sub": "m1",
        "role": "explorer",
        "attributes": {"plan": "pro"},
    }


def test_default_role_is_used(make_app: Callable[..., Flask]) -> None:
    app = make_app(TOUCAN_DEFAULT_ROLE="viewer")
    app.extensions["test_toucan"].user_loader(lambda: {"distinct_id": "m1"})
    assert claims_of(app.test_client().get("/page").text)["role"] == "viewer"


def test_current_token_is_a_local_proxy_in_python_and_templates(app: Flask) -> None:
    from werkzeug.local import LocalProxy

    from flask_toucan import current_token

    assert isinstance(current_token, LocalProxy)
    toucan = app.extensions["test_toucan"]
    seen: list[Any] = []

    @app.get("/ctx")
    @toucan.inject_token
    def ctx() -> str:
        token = current_token._get_current_object()  # type: ignore[attr-defined]
        seen.append((token, current_token.expires_in, dict(vars(g))))
        return render_template_string(
            "{{ toucan_token }}|{{ toucan_token.value }}|{{ toucan_token().value }}|"
            '<tc-dashboard auth-token="{{ toucan_token }}">'
        )

    text = app.test_client().get("/ctx", headers={"X-User": "alice"}).text
    token, expires_in, names = seen[0]
    assert isinstance(token, EmbedToken)
    assert 3500 <= expires_in <= 3600
    # Bare, in an autoescaped template, it is the token itself: never a stand-in text.
    value = token.value
    assert text == f'{value}|{value}|{value}|<tc-dashboard auth-token="{value}">'
    # Only prefixed names in g: the app's own names are left alone.
    assert names and all(name.startswith("_toucan_") for name in names), names


def test_current_token_bare_outside_autoescape_says_what_to_write(app: Flask) -> None:
    toucan = app.extensions["test_toucan"]

    @app.get("/text")
    @toucan.inject_token
    def text_view() -> str:
        from flask_toucan import current_token

        return str(current_token)

    app.testing = False
    response = app.test_client().get("/text", headers={"X-User": "alice"})
    assert response.status_code == 500
    with app.test_request_context(headers={"X-User": "alice"}):
        from flask_toucan import current_token

        with pytest.raises(TypeError, match=r"toucan_token\.value"):
            str(current_token)
        assert "<hidden>" in repr(current_token)


def test_decorator_keeps_signature_and_name(app: Flask) -> None:
    toucan = app.extensions["test_toucan"]

    def view(slug: str) -> str:
        """Doc."""
        return slug

    wrapped = toucan.inject_token(view)
    assert wrapped.__name__ == "view"
    assert wrapped.__doc__ == "Doc."
    assert wrapped.__wrapped__ is view  # type: ignore[attr-defined]


# -- cache headers -----------------------------------------------------------


def test_no_store_on_token_bearing_responses(client: Any) -> None:
    for path in ("/page", "/lazy"):
        response = client.get(path, headers={"X-User": "alice"})
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "private, no-store"
        assert "Cookie" in response.headers["Vary"]
    plain = client.get("/plain", headers={"X-User": "alice"})
    assert "Cache-Control" not in plain.headers


def test_no_store_overrides_a_public_cache_header(app: Flask) -> None:
    toucan = app.extensions["test_toucan"]

    @app.get("/cached")
    @toucan.inject_token
    def cached() -> Any:
        response = app.make_response(render_template_string("{{ toucan_dashboard('d') }}"))
        response.headers["Cache-Control"] = "public, max-age=600"
        return response

    response = app.test_client().get("/cached", headers={"X-User": "alice"})
    assert response.headers["Cache-Control"] == "private, no-store"


# -- lazy helpers, get_token, invalidate ------------------------------------


def test_lazy_helper_mints_for_current_user(client: Any, fake: FakeToucan) -> None:
    html = client.get("/lazy", headers={"X-User": "bob"}).text
    assert claims_of(html)["sub"] == "bob"
    assert 'data-theme="dark"' in html
    assert client.get("/lazy").status_code == 401


def test_get_token_and_invalidate(app: Flask, fake: FakeToucan, clock: Clock) -> None:
    toucan = app.extensions["test_toucan"]
    with app.app_context():
        a = toucan.get_token(USERS["alice"])
        b = toucan.get_token(
            {"distinct_id": "alice", "attributes": {"region": "EU", "tenant": "acme"}}
        )
        assert a == b
        assert len(fake.mints) == 1
        forced = toucan.get_token(USERS["alice"], force=True)
        assert forced.value != a.value
        assert len(fake.mints) == 2
        toucan.invalidate(USERS["alice"])
        fresh = toucan.get_token(USERS["alice"])
        assert fresh.value not in (a.value, forced.value)
        assert len(fake.mints) == 3
        with pytest.raises(ToucanUserRequired):
            toucan.get_token()


def test_get_token_without_app_context_is_clear(toucan: Toucan) -> None:
    with pytest.raises(RuntimeError, match="application context"):
        toucan.get_token(USERS["alice"])


def test_near_expiry_token_is_never_served(client: Any, fake: FakeToucan, clock: Clock) -> None:
    first = claims_of(client.get("/page", headers={"X-User": "alice"}).text)
    clock.advance(3600 - 301)  # 301 s left: still servable
    again = client.get("/page", headers={"X-User": "alice"})
    assert claims_of(again.text) == first
    assert int(again.text.split("<p id=exp>")[1].split("<")[0]) >= 300
    clock.advance(2)  # 299 s left: must be replaced
    third = client.get("/page", headers={"X-User": "alice"})
    assert claims_of(third.text)["iat"] > first["iat"]
    assert len(fake.mints) == 2
    assert int(third.text.split("<p id=exp>")[1].split("<")[0]) == 3600


def test_short_lived_tokens_keep_a_quarter_of_their_life_as_margin(
    make_app: Callable[..., Flask], fake: FakeToucan, clock: Clock
) -> None:
    fake.expires_in = "2m"  # below TOUCAN_MIN_TOKEN_TTL: the margin is 120 / 4 = 30 s
    client = make_app().test_client()
    for _ in range(3):
        assert client.get("/page", headers={"X-User": "alice"}).status_code == 200
    assert len(fake.mints) == 1
    clock.advance(89)  # 31 s left: still served
    client.get("/page", headers={"X-User": "alice"})
    assert len(fake.mints) == 1
    clock.advance(2)  # 29 s left: inside the margin
    client.get("/page", headers={"X-User": "alice"})
    assert len(fake.mints) == 2


def test_tokens_too_short_to_cache_are_used_once_with_one_warning(
    make_app: Callable[..., Flask], fake: FakeToucan, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    fake.expires_in = "1s"
    client = make_app().test_client()
    for _ in range(3):
        assert client.get("/page", headers={"X-User": "alice"}).status_code == 200
    assert len(fake.mints) == 3
    warnings = [r for r in caplog.records if "too little to cache" in r.getMessage()]
    assert [r.levelname for r in warnings] == ["WARNING", "DEBUG", "DEBUG"]


def test_concurrent_first_requests_mint_once(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    fake.delay = 0.2
    app = make_app()
    statuses: list[int] = []

    def hit() -> None:
        statuses.append(app.test_client().get("/page", headers={"X-User": "alice"}).status_code)

    threads = [threading.Thread(target=hit) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 16
    assert len(fake.mints) == 1


# -- cache backends ----------------------------------------------------------


def test_app_provided_cache_is_used(config: dict[str, Any], fake: FakeToucan) -> None:
    app = Flask(__name__)
    app.config.update(config)
    cache = Cache(config={"CACHE_TYPE": "SimpleCache"})
    toucan = Toucan(app, cache=cache)
    cache.init_app(app)  # after Toucan: must still work
    toucan.user_loader(lambda: USERS["alice"])

    @app.get("/")
    @toucan.inject_token
    def index() -> str:
        return render_template_string("{{ toucan_dashboard('d') }}")

    app.test_client().get("/")
    with app.app_context():
        keys = list(app.extensions["cache"][cache]._cache)
    assert len(keys) == 1 and keys[0].startswith("toucan:")


class ExplodingBackend:
    def __init__(self) -> None:
        self.calls = 0

    def get(self, key: str) -> Any:
        self.calls += 1
        raise ConnectionError("backend down")

    def set(self, key: str, value: Any, timeout: int | None = None) -> Any:
        self.calls += 1
        raise ConnectionError("backend down")

    def delete(self, key: str) -> Any:
        raise ConnectionError("backend down")

    def add(self, key: str, value: Any, timeout: int | None = None) -> Any:
        self.calls += 1
        raise ConnectionError("backend down")


def test_backend_failure_is_logged_and_bypassed(
    app: Flask, fake: FakeToucan, caplog: pytest.LogCaptureFixture
) -> None:
    state = app.extensions["toucan"].service
    backend = ExplodingBackend()
    state.store = TokenStore(backend, min_ttl=300, front=FrontCache(size=10, ttl=30))
    client = app.test_client()
    for _ in range(3):
        assert client.get("/page", headers={"X-User": "alice"}).status_code == 200
    # The first failure starts a cool-down: the backend is not hammered...
    assert backend.calls == 1
    # ...and the in-process front cache keeps serving the token minted meanwhile.
    assert len(fake.mints) == 1
    messages = [r.getMessage() for r in caplog.records if r.name == "flask_toucan"]
    assert sum("token cache" in m for m in messages) == 1


def test_cache_config_dict_is_honoured(make_app: Callable[..., Flask], fake: FakeToucan) -> None:
    app = make_app(
        TOUCAN_CACHE_CONFIG={"CACHE_TYPE": "NullCache", "CACHE_NO_NULL_WARNING": True},
        front_cache_ttl=0,
    )
    client = app.test_client()
    client.get("/page", headers={"X-User": "alice"})
    client.get("/page", headers={"X-User": "alice"})
    assert len(fake.mints) == 2


def test_default_backend_stays_bounded(make_app: Callable[..., Flask], clock: Clock) -> None:
    app = make_app(TOUCAN_PREVIEW=True, TOUCAN_CACHE_CONFIG={"CACHE_THRESHOLD": 100})
    state = app.extensions["toucan"].service
    with app.app_context():
        for i in range(1000):
            state.get(ToucanUser(f"u{i}"))
        backend = state.store.backend
        assert 90 <= len(backend) <= 100
        # The in-process default does not sit behind a second in-process copy.
        assert state.store.front is None
        # The newest identities are still cached: no new mint for them.
        for i in range(950, 1000):
            assert state.get(ToucanUser(f"u{i}"))[1] == "shared"
    assert state.minter().minted == 1000


# -- placeholder mode, async views, loader mistakes --------------------------


def test_placeholder_mode_renders_the_page_without_components(
    make_app: Callable[..., Flask], fake: FakeToucan, clock: Clock
) -> None:
    app = make_app(TOUCAN_ON_ERROR="placeholder")
    client = app.test_client()
    for path in ("/page", "/lazy"):
        clock.advance(FAILURE_BACKOFF)  # past the back-off of the previous failure
        fake.fail(503, times=1)
        response = client.get(path, headers={"X-User": "alice"})
        assert response.status_code == 200
        assert "<tc-dashboard" not in response.text
        assert 'data-toucan-unavailable="dashboard"' in response.text
        assert "Analytics are unavailable right now" in response.text
        assert "simulated failure" not in response.text
        assert response.headers["Cache-Control"] == "private, no-store"
    # One attempt per page view: the helpers did not ask Toucan again.
    assert len(fake.requests) == 2
    # Healthy again: real components once the back-off is over, nothing cached meanwhile.
    clock.advance(FAILURE_BACKOFF)
    assert "<tc-dashboard" in client.get("/page", headers={"X-User": "alice"}).text


def test_placeholder_keeps_layout_attributes_escaped(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app(TOUCAN_ON_ERROR="placeholder")
    fake.fail(503)
    with app.test_request_context(headers={"X-User": "alice"}):
        html = render_template_string(
            "{{ toucan_assistant(id='chat', style='height:\"1\"', title='dropped') }}"
        )
    assert 'data-toucan-unavailable="assistant"' in html
    assert 'id="chat"' in html and 'style="height:&#34;1&#34;"' in html
    assert "dropped" not in html


def test_default_mode_still_raises(make_app: Callable[..., Flask], fake: FakeToucan) -> None:
    fake.fail(503)
    assert make_app().test_client().get("/page", headers={"X-User": "alice"}).status_code == 503


def test_async_views_are_supported(make_app: Callable[..., Flask], fake: FakeToucan) -> None:
    app = make_app()
    toucan = app.extensions["test_toucan"]

    @app.get("/async")
    @toucan.inject_token
    async def async_page() -> str:
        return render_template_string("{{ toucan_dashboard('d') }}")

    response = app.test_client().get("/async", headers={"X-User": "bob"})
    assert response.status_code == 200
    assert claims_of(response.text)["sub"] == "bob"
    assert response.headers["Cache-Control"] == "private, no-store"
    assert app.test_client().get("/async").status_code == 401


def deep(levels: int, kind: type = dict) -> object:
    value: object = "leaf"
    for _ in range(levels):
        value = {"x": value} if kind is dict else [value]
    return value


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (42, "got int"),
        ({"distinct_id": "u", "attributes": {"when": object()}}, "attributes['when'] is of type"),
        ({"distinct_id": "u", "attributes": {"blob": "x" * 40_000}}, "more than 32768"),
        ({"id": "u"}, "unknown user field"),
        (ToucanUser, "got type"),
        # What cannot be canonical JSON: a typed error naming the field, never a 500 from
        # deep inside (UnicodeEncodeError, RecursionError, ValueError).
        ({"distinct_id": "u\ud800"}, "ToucanUser.distinct_id holds a lone surrogate"),
        ({"distinct_id": "u", "role": "\udfff"}, "ToucanUser.role holds a lone surrogate"),
        ({"distinct_id": "u", "attributes": {"t": "x\ud83d"}}, "attributes['t'] holds a lone"),
        ({"distinct_id": "u", "attributes": {"\ud800": 1}}, "a key of attributes holds a lone"),
        ({"distinct_id": "u", "attributes": {"n": float("nan")}}, "attributes['n'] is nan"),
        ({"distinct_id": "u", "attributes": {"n": float("-inf")}}, "attributes['n'] is -inf"),
        ({"distinct_id": "u", "attributes": {1: "x"}}, "has a key of type int"),
        ({"distinct_id": "u", "permissions": {"x": [float("inf")]}}, "permissions['x'][0] is inf"),
        ({"distinct_id": "u", "attributes": {"d": deep(500)}}, "nested more than 16 levels"),
        ({"distinct_id": "u", "attributes": {"d": deep(5000, list)}}, "nested more than 16"),
    ],
)
def test_loader_mistakes_give_a_clear_error(
    make_app: Callable[..., Flask], fake: FakeToucan, returned: object, message: str
) -> None:
    from flask_toucan import InvalidToucanUser

    app = make_app()
    app.config["PROPAGATE_EXCEPTIONS"] = True
    app.extensions["test_toucan"].user_loader(lambda: returned)
    with pytest.raises(InvalidToucanUser, match=re.escape(message)):
        app.test_client().get("/page")
    app.config["PROPAGATE_EXCEPTIONS"] = False
    for path in ("/page", "/lazy"):
        assert app.test_client().get(path).status_code == 500  # the typed error's page
    refresh = app.test_client().post("/toucan/token", headers={"X-Toucan-Refresh": "1"})
    assert refresh.status_code == 500
    assert fake.requests == []
