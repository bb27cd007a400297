from __future__ import annotations

from flask import Flask

from flask_toucan.testing import FakeToucan, decode_fake_token

from .conftest import API_KEY, Clock


def test_config_command_hides_the_key(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["toucan", "config"])
    assert result.exit_code == 0, result.output
    assert API_KEY not in result.output
    assert "TOUCAN_API_KEY = '<set>'" in result.output
    assert "TOUCAN_MIN_TOKEN_TTL = 300" in result.output


def test_check_mints_for_the_given_user(app: Flask, fake: FakeToucan, clock: Clock) -> None:
    result = app.test_cli_runner().invoke(
        args=["toucan", "check", "--user", "u-1", "--attr", "tenant_id=7", "--attr", "region=EU"]
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
    result = app.test_cli_runner().invoke(args=["toucan", "check"])
    assert result.exit_code == 1
    assert "FAILED: Toucan refused the API key (401); check TOUCAN_API_KEY" in result.output
    assert API_KEY not in result.output


def test_check_rejects_bad_attributes(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["toucan", "check", "--attr", "novalue"])
    assert result.exit_code == 2
    assert "is not NAME=VALUE" in result.output
