"""Operations: `flask toucan` doctor, config, cache, fake; start-up and debug warnings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, render_template_string

from flask_toucan.cli import toucan_cli
from flask_toucan.testing import FakeToucan

from .conftest import API_KEY, Clock
from .servers import ROOT, RedisServer, free_port


def flask_cli(*args: str, config: dict[str, Any], **env: str) -> subprocess.CompletedProcess[str]:
    """`flask --app tests.cli_apps:create_app ...` in a real subprocess."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TOUCAN_")}
    environ.update(TEST_APP_CONFIG=json.dumps(config), **env)
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "tests.cli_apps:create_app", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def doctor(config: dict[str, Any], **env: str) -> tuple[int, list[str]]:
    done = flask_cli("toucan", "doctor", config=config, **env)
    output = done.stdout + done.stderr
    assert API_KEY not in output
    assert "fake." not in output  # no token
    lines = [line for line in done.stdout.splitlines() if line[:2] in ("✓ ", "✗ ")]
    assert lines, output
    return done.returncode, lines


def failed(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("✗")]


@pytest.fixture
def good(fake: FakeToucan) -> dict[str, Any]:
    return {"TOUCAN_API_KEY": API_KEY, "TOUCAN_BASE_URL": fake.url, "TOUCAN_TIMEOUT": [2, 2]}


def test_doctor_all_well(good: dict[str, Any], fake: FakeToucan) -> None:
    code, lines = doctor(good)
    assert code == 0, lines
    assert failed(lines) == []
    text = "\n".join(lines)
    for expected in (
        "DNS:",
        "TCP:",
        "token endpoint",
        "clock",
        "cache backend",
        "refresh endpoint",
    ):
        assert expected in text
    assert len(fake.mints) == 1  # the throw-away token


def test_doctor_catches_a_typo(fake: FakeToucan) -> None:
    code, lines = doctor({"TOUCAN_PREVEIW": True})
    assert code == 1
    # Loading the app raised; doctor reports that error as a ✗ line, with the typo named.
    (line,) = failed(lines)
    assert "TOUCAN_API_KEY is not set" in line
    assert "TOUCAN_PREVIEW instead of TOUCAN_PREVEIW" in line


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("refused", "TCP: cannot connect"),
        ("wrong-key", "check TOUCAN_API_KEY"),
        ("extra-api", "check TOUCAN_TOKEN_PATH"),
        ("plain-http", "TOUCAN_ALLOW_HTTP"),
        ("header-drip", "TOUCAN_MINT_DEADLINE"),
        ("dead-proxy", "TOUCAN_PROXIES"),
        ("no-secret-key", "SECRET_KEY is not set"),
        ("redis-down", "check TOUCAN_CACHE_CONFIG"),
    ],
)
def test_doctor_names_the_fix(
    good: dict[str, Any], fake: FakeToucan, change: str, expected: str
) -> None:
    config, env = dict(good), {}
    if change == "refused":
        config["TOUCAN_BASE_URL"] = f"http://127.0.0.1:{free_port()}"
    elif change == "wrong-key":
        config["TOUCAN_API_KEY"] = "tk_wrong"
    elif change == "extra-api":
        config["TOUCAN_BASE_URL"] = fake.url + "/api"
    elif change == "plain-http":
        config["TOUCAN_BASE_URL"] = "http://toucan.example.com"
    elif change == "header-drip":
        fake.fail(200, header_drip=0.3, times=5)
        config["TOUCAN_MINT_DEADLINE"] = 1
    elif change == "dead-proxy":
        config["TOUCAN_PROXIES"] = {"http": f"http://127.0.0.1:{free_port()}"}
    elif change == "no-secret-key":
        env["TEST_APP_VARIANT"] = "1"
    elif change == "redis-down":
        url = f"redis://127.0.0.1:{free_port()}/0"
        config["TOUCAN_CACHE_CONFIG"] = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": url}
    code, lines = doctor(config, **env)
    assert code == 1
    assert any(expected in line for line in failed(lines)), lines


def test_doctor_private_ca(tls_fake: FakeToucan, ca_bundle: str) -> None:
    config = {"TOUCAN_API_KEY": API_KEY, "TOUCAN_BASE_URL": tls_fake.url}
    code, lines = doctor(config)
    assert code == 1
    assert any("TLS:" in line and "TOUCAN_VERIFY" in line for line in failed(lines))
    code, lines = doctor({**config, "TOUCAN_VERIFY": ca_bundle})
    assert code == 0, lines
    assert tls_fake.mints  # the key was sent only once the certificate was trusted


def test_doctor_reports_skew_in_process(
    good: dict[str, Any], fake: FakeToucan, clock: Clock
) -> None:
    from flask_toucan.doctor import run_checks

    app = Flask(__name__)
    app.config.update(good)
    from flask_toucan import Toucan

    Toucan(app)
    with app.app_context():
        lines = list(run_checks(app))
    bad = [line for ok, line in lines if not ok]
    assert any("clock" in line and "NTP" in line for line in bad), lines


def test_config_without_the_key_names_it_without_a_traceback() -> None:
    done = flask_cli("toucan", "config", config={"TOUCAN_BASE_URL": "https://toucanai.cloud"})
    assert done.returncode == 1
    assert done.stderr.startswith("✗ configuration: TOUCAN_API_KEY is not set"), done.stderr
    assert "Traceback" not in done.stderr


# -- cache stats and clear ------------------------------------------------------------


def test_cache_stats_and_clear(
    make_app: Callable[..., Flask], fake: FakeToucan, redis_server: RedisServer
) -> None:
    config: dict[str, Any] = {
        "TOUCAN_CACHE_KEY_PREFIX": f"ops-{free_port()}:",
        "TOUCAN_CACHE_CONFIG": {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": redis_server.url},
    }
    app = make_app(**config)
    client = app.test_client()
    for name in ("alice", "bob", "carol"):
        client.get("/page", headers={"X-User": name})
    runner = app.test_cli_runner()
    stats = runner.invoke(toucan_cli, ["cache", "stats"])
    assert "tokens: 3" in stats.output, stats.output
    # One identity: exactly it.
    one = runner.invoke(
        toucan_cli, ["cache", "clear", "--user", "carol", "--role", "viewer",
              "--attr", 'tenant="globex"', "--yes"]
    )  # fmt: skip
    assert one.exit_code == 0, one.output
    assert "tokens: 2" in runner.invoke(toucan_cli, ["cache", "stats"]).output
    # Everything, after confirming.
    refused = runner.invoke(toucan_cli, ["cache", "clear"], input="n\n")
    assert refused.exit_code == 1
    assert "tokens: 2" in runner.invoke(toucan_cli, ["cache", "stats"]).output
    cleared = runner.invoke(toucan_cli, ["cache", "clear"], input="y\n")
    assert "deleted 2 keys" in cleared.output
    assert "tokens: 0" in runner.invoke(toucan_cli, ["cache", "stats"]).output
    client.get("/page", headers={"X-User": "alice"})
    assert len(fake.mints) == 4  # alice minted again after the clear


def test_cache_clear_user_forgets_every_token_of_that_user_and_counts_them(
    redis_server: RedisServer, fake: FakeToucan
) -> None:
    """`flask toucan cache clear --user ID` in a subprocess: every token of that distinct
    id (any attributes, role, permissions), the exact count, and 0 for a stranger."""
    prefix = f"cu-{free_port()}:"
    config = {
        "TOUCAN_API_KEY": API_KEY,
        "TOUCAN_BASE_URL": fake.url,
        "TOUCAN_CACHE_KEY_PREFIX": prefix,
        "TOUCAN_CACHE_CONFIG": {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": redis_server.url},
    }
    for extra in ([], ["--attr", "tenant=1"], ["--attr", "tenant=2", "--role", "viewer"]):
        assert flask_cli("toucan", "check", "--user", "u-1", *extra, config=config).returncode == 0
    assert flask_cli("toucan", "check", "--user", "u-2", config=config).returncode == 0
    # A token minted with permissions (inject_token(permissions=...)) is u-1's too.
    app = Flask(__name__)
    app.config.update(config)
    from flask_toucan import Toucan, ToucanUser

    toucan = Toucan(app)
    with app.app_context():
        toucan.get_token(ToucanUser("u-1", permissions={"dashboard": "can_view"}))
    stats = flask_cli("toucan", "cache", "stats", config=config)
    assert "tokens: 5" in stats.stdout, stats.stdout + stats.stderr
    done = flask_cli("toucan", "cache", "clear", "--user", "u-1", "--yes", config=config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "forgot 4 tokens of 'u-1'" in done.stdout
    assert "tokens: 1" in flask_cli("toucan", "cache", "stats", config=config).stdout
    nobody = flask_cli("toucan", "cache", "clear", "--user", "nobody", "--yes", config=config)
    assert "forgot 0 tokens of 'nobody'" in nobody.stdout
    exact = flask_cli("toucan", "cache", "clear", "--user", "u-2", "--attr", "x=1", "--yes",
                      config=config)  # fmt: skip
    assert "forgot 0 tokens of 'u-2'" in exact.stdout  # not that identity: nothing
    exact = flask_cli("toucan", "cache", "clear", "--user", "u-2", "--role", "explorer", "--yes",
                      config=config)  # fmt: skip
    assert "forgot 1 token of 'u-2'" in exact.stdout


def test_the_cache_commands_say_when_the_tokens_live_in_each_worker(fake: FakeToucan) -> None:
    config = {"TOUCAN_API_KEY": API_KEY, "TOUCAN_BASE_URL": fake.url}
    stats = flask_cli("toucan", "cache", "stats", config=config)
    assert "in-process" in stats.stdout and "cannot reach" in stats.stdout
    assert "tokens: 0" not in stats.stdout
    cleared = flask_cli("toucan", "cache", "clear", "--user", "u-1", "--yes", config=config)
    assert cleared.returncode == 1
    assert "in-process" in cleared.stderr and "TOUCAN_CACHE_CONFIG" in cleared.stderr


# -- fake ------------------------------------------------------------------------------


def test_fake_command_serves_tokens_and_a_stand_in_script(fake_command: str) -> None:
    import requests

    script = requests.get(fake_command + "/embed/embed.js", timeout=5)
    assert script.status_code == 200
    assert script.headers["Access-Control-Allow-Origin"] == "*"
    assert "customElements.define" in script.text
    token = requests.post(
        fake_command + "/embed/generate-token",
        json={"user": {"distinctId": "u", "role": "explorer", "attributes": {}}},
        headers={"x-api-key": "cli-fake-key"},
        timeout=5,
    ).json()
    assert token["expiresIn"] == "5m"


# -- start-up and debug-mode warnings ------------------------------------------------


def test_unknown_keys_are_warned_at_start_up(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    make_app(TOUCAN_MIN_TOKEN_TL=60, TOUCAN_SOMETHING_ELSE=1)
    messages = [r.getMessage() for r in caplog.records if r.name == "flask_toucan"]
    assert "unknown config key TOUCAN_MIN_TOKEN_TL; did you mean TOUCAN_MIN_TOKEN_TTL?" in messages
    assert "unknown config key TOUCAN_SOMETHING_ELSE" in messages


def debug_app(make_app: Callable[..., Flask], debug: bool) -> Flask:
    app = make_app(DEBUG=debug)
    app.debug = debug
    return app


@pytest.mark.parametrize("debug", [True, False])
def test_debug_warnings(
    make_app: Callable[..., Flask],
    fake: FakeToucan,
    caplog: pytest.LogCaptureFixture,
    debug: bool,
) -> None:
    app = debug_app(make_app, debug)
    toucan = app.extensions["test_toucan"]

    @app.get("/no-script")
    def no_script() -> str:
        return render_template_string("<main>{{ toucan_dashboard('d') }}</main>")

    @app.get("/unused")
    @toucan.inject_token
    def unused() -> str:
        return "<p>no component here</p>"

    @app.get("/fine")
    @toucan.inject_token
    def fine() -> str:
        return render_template_string("{{ toucan_script() }}{{ toucan_dashboard('d') }}")

    client = app.test_client()
    for path in ("/no-script", "/unused", "/fine"):
        assert client.get(path, headers={"X-User": "alice"}).status_code == 200
    messages = [r.getMessage() for r in caplog.records if r.name == "flask_toucan"]
    blank = [m for m in messages if "no Toucan script" in m]
    wasted = [m for m in messages if "never used the token" in m]
    if debug:
        assert len(blank) == 1 and "no_script" in blank[0]
        assert len(wasted) == 1 and "unused" in wasted[0]
    else:
        assert blank == wasted == []


@pytest.mark.parametrize(
    "cache_config",
    [
        {"CACHE_TYPE": "RedisCach"},  # a typo
        {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": "127.0.0.1:6379"},  # no scheme
    ],
)
@pytest.mark.parametrize("command", ["doctor", "config"])
def test_a_broken_cache_config_is_a_line_not_a_traceback(
    command: str, cache_config: dict[str, Any]
) -> None:
    config = {"TOUCAN_PREVIEW": True, "TOUCAN_CACHE_CONFIG": cache_config}
    result = flask_cli("toucan", command, config=config)
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert "✗" in output and "TOUCAN_CACHE_CONFIG" in output
    if command == "doctor":
        assert result.returncode == 1


def test_cache_clear_leaves_other_applications_keys_alone(
    make_app: Callable[..., Flask], fake: FakeToucan, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    planted = {
        "session:abc": "s",
        "celery-task-meta-1": "c",
        "app:cart:42": "a",
        "tenant-config:1": "t",
        "t" + "0" * 63: "not 64 hex characters after the prefix",
        "t" + "f" * 64 + ":other": "ours in shape, but not a lease",
    }
    for key, value in planted.items():
        r.set(key, value)
    try:
        app = make_app(
            TOUCAN_CACHE_KEY_PREFIX="t",  # a short prefix other keys also start with
            TOUCAN_CACHE_CONFIG={"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": redis_server.url},
        )
        app.test_client().get("/page", headers={"X-User": "alice"})
        runner = app.test_cli_runner()
        assert "tokens: 1" in runner.invoke(toucan_cli, ["cache", "stats"]).output
        cleared = runner.invoke(toucan_cli, ["cache", "clear", "--yes"])
        assert "deleted 1 keys" in cleared.output, cleared.output
        for key, value in planted.items():
            assert r.get(key) == value.encode(), key
    finally:
        r.delete(*planted)


@pytest.mark.parametrize("prefix", ["", "t*", "t?", "[t]"])
def test_a_hostile_prefix_is_refused_by_the_real_command_and_deletes_nothing(
    redis_server: RedisServer, prefix: str
) -> None:
    """`flask toucan cache clear --yes` in a subprocess, as a user runs it, with the
    prefixes that once deleted a whole Redis database or another app's keys."""
    r = redis_server.client()
    planted = {"session:abc": "s", "celery-task-meta-1": "c", "tenant-config:1": "t"}
    for key, value in planted.items():
        r.set(key, value)
    try:
        config = {
            "TOUCAN_API_KEY": API_KEY,
            "TOUCAN_CACHE_KEY_PREFIX": prefix,
            "TOUCAN_CACHE_CONFIG": {
                "CACHE_TYPE": "RedisCache",
                "CACHE_REDIS_URL": redis_server.url,
            },
        }
        done = flask_cli("toucan", "cache", "clear", "--yes", config=config)
        assert done.returncode == 1
        assert "TOUCAN_CACHE_KEY_PREFIX" in done.stderr + done.stdout
        assert "Traceback" not in done.stderr
        for key, value in planted.items():
            assert r.get(key) == value.encode(), key
    finally:
        r.delete(*planted)


def test_the_real_cache_clear_deletes_only_flask_toucans_keys(
    redis_server: RedisServer, fake: FakeToucan
) -> None:
    r = redis_server.client()
    planted = {"session:abc": "s", "celery-task-meta-1": "c", "tk:cart:42": "a"}
    for key, value in planted.items():
        r.set(key, value)
    config = {
        "TOUCAN_API_KEY": API_KEY,
        "TOUCAN_BASE_URL": fake.url,
        "TOUCAN_CACHE_KEY_PREFIX": "tk:",
        "TOUCAN_CACHE_CONFIG": {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": redis_server.url},
    }
    try:
        assert flask_cli("toucan", "check", "--user", "u1", config=config).returncode == 0
        stats = flask_cli("toucan", "cache", "stats", config=config)
        assert "tokens: 1" in stats.stdout, stats.stdout + stats.stderr
        cleared = flask_cli("toucan", "cache", "clear", "--yes", config=config)
        assert "deleted 1 keys" in cleared.stdout, cleared.stdout + cleared.stderr
        for key, value in planted.items():
            assert r.get(key) == value.encode(), key
    finally:
        r.delete(*planted)


def test_doctor_reports_a_missing_user_loader(fake: FakeToucan) -> None:
    config = {"TOUCAN_API_KEY": API_KEY, "TOUCAN_BASE_URL": fake.url}
    code, lines = doctor(config, TEST_APP_NO_LOADER="1")
    assert code == 1
    assert any(line.startswith("✗ no @toucan.user_loader") for line in lines), lines
    code, lines = doctor(config)
    assert "✓ a @toucan.user_loader is registered" in lines


def test_preview_with_a_key_is_pointed_out(
    fake: FakeToucan, caplog: pytest.LogCaptureFixture
) -> None:
    config = {"TOUCAN_API_KEY": API_KEY, "TOUCAN_PREVIEW": True}
    code, lines = doctor(config)
    assert code == 1
    assert any("TOUCAN_PREVIEW is on while TOUCAN_API_KEY is set" in line for line in lines)
    app = Flask(__name__)
    app.config.update(config)
    from flask_toucan import Toucan

    Toucan(app)
    assert "TOUCAN_PREVIEW is on while TOUCAN_API_KEY is set" in caplog.text


@pytest.mark.parametrize("debug", [True, False])
def test_an_assistant_without_the_ai_permission_is_pointed_out_once(
    make_app: Callable[..., Flask],
    fake: FakeToucan,
    caplog: pytest.LogCaptureFixture,
    debug: bool,
) -> None:
    app = debug_app(make_app, debug)
    toucan = app.extensions["test_toucan"]

    @app.get("/bare")
    def bare() -> str:
        return render_template_string("{{ toucan_script() }}{{ toucan_assistant() }}")

    @app.get("/granted")
    @toucan.inject_token(permissions={"ai": "can_query"}, allow=lambda: True)
    def granted() -> str:
        return render_template_string("{{ toucan_script() }}{{ toucan_assistant() }}")

    client = app.test_client()
    assert client.get("/granted", headers={"X-User": "alice"}).status_code == 200
    assert not [r for r in caplog.records if "can_query" in r.getMessage()]
    for _ in range(3):
        assert client.get("/bare", headers={"X-User": "alice"}).status_code == 200
    warned = [r.getMessage() for r in caplog.records if "can_query" in r.getMessage()]
    if debug:
        assert len(warned) == 1, warned
        assert "bare" in warned[0] and 'permissions={"ai": "can_query"}' in warned[0]
    else:
        assert warned == []


@pytest.mark.parametrize(
    ("blocked", "code", "extra"),
    [
        (
            "redis",
            "from flask import Flask\nfrom flask_toucan import Toucan\napp = Flask(__name__)\n"
            "app.config.update(TOUCAN_PREVIEW=True, TOUCAN_CACHE_CONFIG={'CACHE_TYPE': "
            "'RedisCache', 'CACHE_REDIS_URL': 'redis://127.0.0.1:6379/0'})\nToucan(app)",
            "flask-toucan[redis]",
        ),
        ("prometheus_client", "import flask_toucan.metrics", "flask-toucan[prometheus]"),
        ("mcp", "import flask_toucan.mcp", "flask-toucan[mcp]"),
        (
            "mcp",
            "from flask import Flask\nfrom flask_toucan import Toucan, ToucanUser\n"
            "app = Flask(__name__)\napp.config.update(TOUCAN_PREVIEW=True)\nt = Toucan(app)\n"
            "with app.app_context():\n    t.ask('q?', user=ToucanUser('u'))",
            "flask-toucan[mcp]",
        ),
    ],
)
def test_a_missing_optional_package_names_the_extra(blocked: str, code: str, extra: str) -> None:
    """As on a machine without the extra: the import of ``blocked`` fails."""
    script = f"import sys\nsys.modules[{blocked!r}] = None\n" + code
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert extra in done.stderr, done.stderr[-1500:]


def test_an_https_url_on_a_plain_http_server_is_named_as_such(fake: FakeToucan) -> None:
    """Not "a certificate problem": the server speaks http where the URL says https."""
    config = {"TOUCAN_API_KEY": API_KEY, "TOUCAN_BASE_URL": fake.url.replace("http:", "https:")}
    code, lines = doctor(config)
    assert code == 1
    tls = [line for line in lines if line.startswith("✗ TLS")]
    assert tls and "answers in plain HTTP, not TLS" in tls[0], lines
    assert "certificate" not in tls[0]
    check = flask_cli("toucan", "check", config=config)
    assert "answers in plain HTTP, not TLS" in check.stderr, check.stderr
