"""flask_toucan behaves like a Flask extension: it leaves the host app's own Flask-Caching
alone, costs nothing on routes that do not use it, has one CLI registration, exempts
nothing behind the app's back, and loads its optional parts only when they are used."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from flask import Flask, render_template_string
from flask_caching import Cache
from flask_talisman import Talisman

import flask_toucan
from flask_toucan import Toucan, ToucanConfigError, ToucanUser
from flask_toucan.cli import NOT_SET_UP
from flask_toucan.testing import FakeToucan

from .conftest import API_KEY
from .servers import RedisServer

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(flask_toucan.__file__).resolve().parent


# -- the host app's Flask-Caching is left alone ------------------------------------------

FRAGMENT_PAGE = "{% cache 300, 'sidebar' %}sidebar rendered at {{ n }}{% endcache %}"


@pytest.mark.parametrize("backend", ["SimpleCache", "RedisCache"])
def test_the_host_apps_cache_and_fragments_are_left_alone(
    config: dict[str, Any], fake: FakeToucan, redis_server: RedisServer, backend: str
) -> None:
    app = Flask(__name__)
    app.config.update(config, CACHE_TYPE=backend)
    host_db = 5
    host_url = f"redis://127.0.0.1:{redis_server.port}/{host_db}"
    if backend == "RedisCache":
        app.config["CACHE_REDIS_URL"] = host_url
    host_cache = Cache(app)
    before = dict(app.extensions["cache"])
    fragment_cache = app.jinja_env._template_fragment_cache  # type: ignore[attr-defined]
    # flask_toucan's own store, described in the documented form without a URL: it must
    # not borrow the app's CACHE_REDIS_URL (db 5) for it.
    app.config["TOUCAN_CACHE_CONFIG"] = (
        {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_PORT": redis_server.port}
        if backend == "RedisCache"
        else None
    )
    toucan = Toucan(app)
    toucan.user_loader(lambda: ToucanUser("alice", attributes={"tenant": 1}))

    @app.get("/page")
    @toucan.inject_token
    def page() -> str:
        return render_template_string(FRAGMENT_PAGE + "{{ toucan_dashboard('d') }}", n=1)

    assert dict(app.extensions["cache"]) == before  # no second entry, the same objects
    assert app.jinja_env._template_fragment_cache is fragment_cache  # type: ignore[attr-defined]
    client = app.test_client()
    first = client.get("/page").text
    assert "sidebar rendered at 1" in first
    with app.app_context():
        # The fragment went to the app's cache, where the app's Cache reads it.
        assert "sidebar rendered at 1" in host_cache.get("_template_fragment_cache_sidebar")
    if backend == "RedisCache":
        import redis

        host = redis.Redis.from_url(host_url)
        assert host.keys("*_template_fragment_cache_sidebar")
        assert not host.keys("toucan:*")  # no token in the app's database
        ours = app.extensions["toucan"].service.store.backend.client
        kwargs = ours.connection_pool.connection_kwargs
        assert kwargs.get("db", 0) == 0  # never CACHE_REDIS_URL's db 5
        assert redis_server.client().keys("toucan:*")  # our token, in our store
        redis_server.client().delete(*redis_server.client().keys("toucan:*"))
        host.flushdb()


def test_no_flask_caching_backend_is_subclassed() -> None:
    from cachelib import BaseCache as CachelibBase
    from flask_caching.backends.base import BaseCache as FlaskCachingBase

    import flask_toucan.cache as store_module

    for value in vars(store_module).values():
        if isinstance(value, type) and value.__module__ == store_module.__name__:
            assert not issubclass(value, (CachelibBase, FlaskCachingBase)), value


# -- a plain route costs one cheap check --------------------------------------------------


def _package_calls(action: Callable[[], Any]) -> list[tuple[str, str, str]]:
    """(caller module or "-", module, function) of every call into flask_toucan."""
    calls: list[tuple[str, str, str]] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event != "call":
            return
        path = frame.f_code.co_filename
        if not path.startswith(str(PACKAGE)):
            return
        caller = frame.f_back.f_code.co_filename if frame.f_back else ""
        calls.append(
            (
                Path(caller).stem if caller.startswith(str(PACKAGE)) else "-",
                Path(path).stem,
                frame.f_code.co_name,
            )
        )

    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.setprofile(None)
    return calls


def test_a_plain_route_runs_one_cheap_check(app: Flask) -> None:
    client = app.test_client()
    client.get("/plain")
    calls = _package_calls(lambda: client.get("/plain"))
    assert calls == [("-", "context", "after_request")]


# -- the path of a warm page view and of a refresh (docs/guides/architecture.md) ----------

#: The layers, top down: a call may only go to a module of a lower layer (or its own).
LAYERS = {
    "views": 6,
    "context": 5,
    "markup": 4,
    "service": 4,
    "client": 3,
    "preview": 3,
    "cache": 3,
    "identity": 1,
    "tokens": 1,
}


def _path(calls: list[tuple[str, str, str]]) -> tuple[list[str], list[tuple[str, str]]]:
    modules: list[str] = []
    for _, module, _ in calls:
        if module not in modules:
            modules.append(module)
    transitions = [(a, b) for a, b, _ in calls if a not in ("-", b)]
    return modules, transitions


def test_a_warm_page_view_enters_the_documented_modules_going_down(app: Flask) -> None:
    client = app.test_client()
    alice = {"X-User": "alice"}
    client.get("/page", headers=alice)
    calls = _package_calls(lambda: client.get("/page", headers=alice))
    modules, transitions = _path(calls)
    # What architecture.md says, measured.
    assert modules == [
        "context", "identity", "service", "client", "cache", "tokens", "markup",
    ]  # fmt: skip
    entered_from_outside = [(b, n) for a, b, n in calls if a == "-"]
    assert [b for b, _ in entered_from_outside if b not in ("identity", "tokens")] == [
        "context",  # the decorated view
        "context",  # toucan_script()
        "context",  # toucan_dashboard()
        "context",  # toucan_token.expires_in
        "context",  # the after_request hook
    ]
    climbs = [(a, b) for a, b in transitions if LAYERS[a] < LAYERS[b]]
    assert climbs == []


def test_a_refresh_enters_the_documented_modules_going_down(app: Flask) -> None:
    client = app.test_client()
    headers = {"X-User": "alice", "X-Toucan-Refresh": "1", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/toucan/token", headers=headers).status_code == 200
    calls = _package_calls(lambda: client.post("/toucan/token", headers=headers))
    modules, transitions = _path(calls)
    assert modules == ["views", "context", "identity", "service", "client", "cache", "tokens"]
    climbs = [(a, b) for a, b in transitions if LAYERS[a] < LAYERS[b]]
    assert climbs == []
    # The views call the request side; nothing calls back up into the views.
    assert ("context", "views") not in transitions


# -- the CLI: one registration, a clear line where flask_toucan is not set up -------------

PLAIN_APP = "tests.cli_apps:create_plain_app"


def _flask(*args: str, app: str = PLAIN_APP) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TOUCAN_")}
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", app, *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "command",
    [
        ("config",),
        ("check",),
        ("doctor",),
        ("cache", "stats"),
        ("cache", "clear", "--yes"),
        ("mcp", "tools"),
    ],
    ids=" ".join,
)
def test_each_command_on_an_app_without_flask_toucan_says_so(command: tuple[str, ...]) -> None:
    done = _flask("toucan", *command)
    assert done.returncode == 1
    output = (done.stdout + done.stderr).strip()
    assert output.removeprefix("✗ ") == NOT_SET_UP, output
    assert "Traceback" not in output


def test_init_app_does_not_import_the_cli_and_registers_no_command() -> None:
    script = textwrap.dedent(
        """
        import sys
        from flask import Flask
        from flask_toucan import Toucan
        app = Flask("x")
        app.config["TOUCAN_PREVIEW"] = True
        Toucan(app)
        assert "flask_toucan.cli" not in sys.modules, "init_app imported the CLI"
        assert "toucan" not in app.cli.commands, "init_app registered the CLI"
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "ok", done.stderr


def test_the_entry_point_is_the_one_registration() -> None:
    done = _flask("toucan", "config", app="tests.cli_apps:create_app")
    # Found through the flask.commands entry point alone (init_app adds nothing).
    assert done.returncode in (0, 1) and "No such command" not in done.stderr


# -- CSP on embed pages with Flask-Talisman, in both orders --------------------------------


def _talisman(app: Flask) -> None:
    Talisman(
        app,
        force_https=False,
        content_security_policy={"default-src": "'self'", "frame-ancestors": "'none'"},
    )


def test_talisman_after_toucan_keeps_our_frame_ancestors(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app(TOUCAN_EMBED_PAGES=True, TOUCAN_EMBED_FRAME_ANCESTORS="https://a.example")
    _talisman(app)
    page = app.test_client().get("/toucan/dashboards/sales", headers={"X-User": "alice"})
    csp = page.headers["Content-Security-Policy"]
    assert csp == "default-src 'self'; frame-ancestors https://a.example"
    assert "X-Frame-Options" not in page.headers


def test_talisman_before_toucan_is_refused_with_the_fix(config: dict[str, Any]) -> None:
    app = Flask(__name__)
    app.config.update(config, TOUCAN_EMBED_PAGES=True)
    _talisman(app)
    with pytest.raises(ToucanConfigError, match=r"TOUCAN_EMBED_PAGES.*before Talisman\(app\)"):
        Toucan(app)
    # Without embed pages, the order does not matter.
    other = Flask(__name__)
    other.config.update(config)
    _talisman(other)
    Toucan(other)


# -- optional parts cost nothing when unused --------------------------------------------

HEAVY = ("mcp", "httpx2", "httpx", "uvicorn", "flask_toucan.testing", "flask_toucan.mcp")


def _loaded_heavy() -> str:
    return (
        "import sys; heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{HEAVY!r} or m in {HEAVY!r}); print(heavy)"
    )


def test_an_app_that_never_asks_loads_no_mcp_code() -> None:
    script = (
        textwrap.dedent(
            """
        from flask import Flask, render_template_string
        from flask_toucan import Toucan, ToucanUser
        app = Flask("x")
        app.config.update(TOUCAN_PREVIEW=True, SECRET_KEY="s")
        toucan = Toucan(app)
        toucan.user_loader(lambda: ToucanUser("u"))

        @app.get("/")
        @toucan.inject_token
        def index():
            return render_template_string("{{ toucan_script() }}{{ toucan_dashboard('d') }}")

        assert "tc-dashboard" in app.test_client().get("/").text
        """
        )
        + _loaded_heavy()
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_a_pytest_session_that_does_not_use_fake_toucan_loads_no_server(tmp_path: Path) -> None:
    (tmp_path / "test_plain.py").write_text(
        "def test_nothing_heavy():\n"
        f"    {_loaded_heavy().replace('; print(heavy)', '')}\n"
        "    assert heavy == [], heavy\n"
    )
    # Our plugin alone, as the entry point loads it (other packages' plugins may import
    # what they like: their cost is not ours to measure).
    alone = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-p", "flask_toucan.pytest_plugin", str(tmp_path / "test_plain.py")],
        cwd=tmp_path,
        env=alone,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # ...and the plugin is there: its fixture is offered.
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "--fixtures", "-p", "no:cacheprovider",
         str(tmp_path / "test_plain.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert "fake_toucan" in listed.stdout


def test_an_app_cache_adapter_uses_only_public_methods(
    config: dict[str, Any], fake: FakeToucan
) -> None:
    class Recording(Cache):
        seen: ClassVar[list[str]] = []

        def get(self, *args: Any, **kwargs: Any) -> Any:
            self.seen.append("get")
            return super().get(*args, **kwargs)

        def set(self, *args: Any, **kwargs: Any) -> Any:
            self.seen.append("set")
            return super().set(*args, **kwargs)

    app = Flask(__name__)
    app.config.update(config, CACHE_TYPE="SimpleCache")
    cache = Recording(app)
    toucan = Toucan(app, cache=cache)
    toucan.user_loader(lambda: ToucanUser("alice"))
    with app.test_request_context():
        assert toucan.get_token().value == toucan.get_token().value
    assert "set" in Recording.seen and "get" in Recording.seen
    assert len(fake.mints) == 1
    assert API_KEY not in repr(app.extensions["toucan"])
