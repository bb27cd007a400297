from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from flask_toucan.cli import toucan_cli
from flask_toucan.testing import FakeToucan, decode_fake_token

from .conftest import API_KEY, Clock


def test_config_command_hides_the_key(app: Flask) -> None:
    result = app.test_cli_runner().invoke(toucan_cli, ["config"])
    assert result.exit_code == 0, result.output
    assert API_KEY not in result.output
    assert "TOUCAN_API_KEY = '<set>'" in result.output
    assert "TOUCAN_MIN_TOKEN_TTL = 300" in result.output


def test_check_mints_for_the_given_user(app: Flask, fake: FakeToucan, clock: Clock) -> None:
    result = app.test_cli_runner().invoke(
        toucan_cli, ["check", "--user", "u-1", "--attr", "tenant_id=7", "--attr", "region=EU"]
    )
    assert result.exit_code == 0, result.output
    assert "OK:" in result.output and "expires in 3600 s" in result.output
    assert API_KEY not in result.output
    assert fake.tokens_issued[0] not in result.output
    claims = decode_fake_token(fake.tokens_issued[0])
    assert claims["sub"] == "u-1"
    assert claims["attributes"] == {"tenant_id": 7, "region": "EU"}


def test_check_reports_failures_without_secrets(app: Flask, fake: FakeToucan) -> None:
    fake.fail(401, body=f"bad key {API_KEY}")
    result = app.test_cli_runner().invoke(toucan_cli, ["check"])
    assert result.exit_code == 1
    host = fake.url.removeprefix("http://")
    assert f"FAILED: Toucan at {host} refused the API key (401); check TOUCAN_API_KEY" in (
        result.output
    )
    assert API_KEY not in result.output


def test_check_rejects_bad_attributes(app: Flask) -> None:
    result = app.test_cli_runner().invoke(toucan_cli, ["check", "--attr", "novalue"])
    assert result.exit_code == 2
    assert "is not NAME=VALUE" in result.output


REDIS_PASSWORD = "s3cr3t-redis-pw"


@pytest.mark.parametrize(
    "cache_config",
    [
        {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0"},
        {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": f"rediss://u:{REDIS_PASSWORD}@h:1/0"},
        {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_PASSWORD": REDIS_PASSWORD},
        {"CACHE_TYPE": "RedisSentinelCache", "CACHE_REDIS_SENTINEL_PASSWORD": REDIS_PASSWORD},
        {"CACHE_TYPE": "RedisCache", "CACHE_OPTIONS": {"password": REDIS_PASSWORD}},
    ],
)
def test_config_and_repr_redact_cache_secrets(
    make_app: Callable[..., Flask], cache_config: dict[str, Any]
) -> None:
    app = make_app(TOUCAN_CACHE_CONFIG=cache_config)
    result = app.test_cli_runner().invoke(toucan_cli, ["config"])
    assert result.exit_code == 0, result.output
    assert "TOUCAN_CACHE_CONFIG" in result.output
    assert REDIS_PASSWORD not in result.output
    assert REDIS_PASSWORD not in repr(app.extensions["toucan"].service.settings)
    assert "<hidden>" in result.output


def test_cache_config_errors_are_redacted(make_app: Callable[..., Flask]) -> None:
    from flask_toucan import ToucanConfigError

    with pytest.raises(ToucanConfigError) as info:
        make_app(
            TOUCAN_CACHE_CONFIG={
                "CACHE_TYPE": "RedisCache",
                "CACHE_REDIS_URL": f"bogus://:{REDIS_PASSWORD}@host/0",
            }
        )
    assert "TOUCAN_CACHE_CONFIG" in str(info.value)
    assert REDIS_PASSWORD not in str(info.value)
