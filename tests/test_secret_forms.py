"""Every form a secret takes in configuration, fed through every command (the real `flask`
command line, in a subprocess), the start-up logs and a rendered page: none shows it.

The forms: the API key under a misspelt key (TOUCAN_APIKEY, the very typo that makes the
key missing), a Redis password as ``?password=`` and as userinfo holding ``@``, a
TOUCAN_INSTANCES entry of the wrong shape (the key where a dict belongs), a base URL
with credentials, and `flask toucan fake --api-key`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from flask_toucan import ToucanConfigError
from flask_toucan.checks import redact_text
from flask_toucan.testing import FakeToucan

from .conftest import API_KEY
from .servers import running_fake_command
from .test_operations import flask_cli

SECRET = "pw-S3CRET-7f1e"
COMMANDS = (
    ("config",),
    ("doctor",),
    ("check",),
    ("cache", "stats"),
    ("cache", "clear", "--yes"),
    ("mcp", "tools"),
)


def forms(fake: FakeToucan) -> dict[str, dict[str, Any]]:
    good = {"TOUCAN_API_KEY": API_KEY, "TOUCAN_BASE_URL": fake.url}
    loopback = fake.url.removeprefix("http://")
    return {
        "misspelt key": {"TOUCAN_APIKEY": SECRET, "TOUCAN_BASE_URL": fake.url},
        "redis ?password=": {
            **good,
            "TOUCAN_CACHE_CONFIG": {
                "CACHE_TYPE": "RedisCache",
                "CACHE_REDIS_URL": f"redis://127.0.0.1:6379/0?password={SECRET}",
            },
        },
        "redis password with @": {
            **good,
            "TOUCAN_CACHE_CONFIG": {
                "CACHE_TYPE": "RedisCache",
                "CACHE_REDIS_URL": f"redis://:p@ss{SECRET}@127.0.0.1:6379/0",
            },
        },
        "instance of the wrong shape": {**good, "TOUCAN_INSTANCES": {"eu": SECRET}},
        "base URL with credentials": {
            "TOUCAN_API_KEY": API_KEY,
            "TOUCAN_BASE_URL": f"http://user:{SECRET}@{loopback}",
        },
        "proxy with credentials": {
            **good,
            "TOUCAN_PROXIES": {"https": f"http://user:{SECRET}@127.0.0.1:9"},
        },
    }


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_no_command_shows_a_secret_in_any_form(fake: FakeToucan, command: tuple[str, ...]) -> None:
    for name, config in forms(fake).items():
        done = flask_cli("toucan", *command, config=config)
        output = done.stdout + done.stderr
        assert SECRET not in output, f"{name}: `flask toucan {' '.join(command)}` showed it"
        assert API_KEY not in output, f"{name}: the API key was shown"
        assert "Traceback" not in output, f"{name}: {output[-2000:]}"


def test_the_misspelt_key_is_named_but_its_value_is_not(fake: FakeToucan) -> None:
    done = flask_cli("toucan", "config", config=forms(fake)["misspelt key"])
    assert done.returncode == 1
    assert "TOUCAN_APIKEY" in done.stderr and "✗ configuration:" in done.stderr
    doctor = flask_cli("toucan", "doctor", config=forms(fake)["misspelt key"])
    assert doctor.returncode == 1
    assert "TOUCAN_API_KEY instead of TOUCAN_APIKEY" in doctor.stdout + doctor.stderr


def test_a_wrong_shape_error_describes_the_type_not_the_value(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    with pytest.raises(ToucanConfigError) as caught:
        make_app(TOUCAN_INSTANCES={"eu": SECRET})
    assert SECRET not in str(caught.value)
    assert "a string of 14 characters" in str(caught.value)


def test_pages_never_carry_the_base_urls_credentials(
    make_app: Callable[..., Flask], fake: FakeToucan, caplog: pytest.LogCaptureFixture
) -> None:
    loopback = fake.url.removeprefix("http://")
    app = make_app(TOUCAN_BASE_URL=f"http://user:{SECRET}@{loopback}", TOUCAN_PREVIEW=False)
    page = app.test_client().get("/page", headers={"X-User": "alice"})
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert SECRET not in html and "user:" not in html
    assert f'server-url="{fake.url}/api"' in html
    assert f'src="{fake.url}/embed/embed.js"' in html
    fake.fail(500)
    app.extensions["toucan"].service.invalidate(app.extensions["toucan"].service.resolve(_alice()))
    app.test_client().get("/page", headers={"X-User": "alice"})
    assert all(SECRET not in record.getMessage() for record in caplog.records)


def _alice() -> Any:
    from .conftest import USERS

    return USERS["alice"]


@pytest.mark.parametrize("key", ["TOUCAN_SERVER_URL", "TOUCAN_SCRIPT_URL", "TOUCAN_MCP_URL"])
def test_a_browser_facing_url_with_credentials_is_refused(
    make_app: Callable[..., Flask], key: str
) -> None:
    with pytest.raises(ToucanConfigError, match=f"{key} must not carry credentials") as caught:
        make_app(**{key: f"https://user:{SECRET}@toucan.example/x"})
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        f"redis://:{SECRET}@host:6379/0",
        f"redis://user:{SECRET}@host",
        f"redis://:p@ss{SECRET}@host:6379",
        f"rediss://host:6379/0?password={SECRET}",
        f"redis://host/0?db=1&pass={SECRET}&x=1",
        f"https://host/api?token={SECRET}",
        f"https://host/api?access_token={SECRET}#frag",
        f"error connecting to redis://u:{SECRET}@h:1: refused",
    ],
)
def test_redact_text_removes_every_credential_form(text: str) -> None:
    shown = redact_text(text)
    assert SECRET not in shown
    assert "<hidden>" in shown


def test_fake_never_echoes_the_api_key_and_prints_what_works() -> None:
    with running_fake_command("--api-key", SECRET) as (url, output):
        pass
    assert SECRET not in output
    assert f"export TOUCAN_BASE_URL={url}" in output
    assert "export TOUCAN_API_KEY=<the --api-key you gave>" in output


def test_the_exported_base_url_is_read_from_the_environment(
    fake: FakeToucan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `flask toucan fake` says to export works: TOUCAN_BASE_URL is read from the
    environment beside TOUCAN_API_KEY."""
    done = flask_cli("toucan", "check", config={}, TOUCAN_BASE_URL=fake.url, TOUCAN_API_KEY=API_KEY)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"OK: Toucan at {fake.url} minted a token" in done.stdout
    assert len(fake.mints) == 1
