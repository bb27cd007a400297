from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest

from flask_toucan import (
    ToucanAuthError,
    ToucanRateLimited,
    ToucanResponseError,
    ToucanUnavailable,
    ToucanUser,
)
from flask_toucan.client import TokenClient
from flask_toucan.testing import FakeToucan, decode_fake_token

from .conftest import API_KEY, Clock

USER = ToucanUser("user-123", attributes={"region": "EU", "tenant_id": 7})


def client_for(fake: FakeToucan, **kwargs: object) -> TokenClient:
    options: dict[str, object] = {"timeout": (1.0, 1.0), "max_retries": 0, "backoff_factor": 0.01}
    options.update(kwargs)
    return TokenClient(fake.url, API_KEY, **options)  # type: ignore[arg-type]


def test_request_format_matches_toucan_docs(fake: FakeToucan, clock: Clock) -> None:
    token = client_for(fake).mint(USER)
    (req,) = fake.requests
    assert req.method == "POST"
    assert req.path == "/embed/generate-token"
    assert req.headers["X-Api-Key"] == API_KEY
    assert req.headers["Content-Type"] == "application/json"
    assert req.json == {
        "user": {
            "distinctId": "user-123",
            "role": "explorer",
            "attributes": {"region": "EU", "tenant_id": 7},
        }
    }
    assert token.value == fake.tokens_issued[0]
    assert token.expires_in == 3600
    assert decode_fake_token(token.value)["sub"] == "user-123"


def test_permissions_are_sent_top_level_unchanged(fake: FakeToucan) -> None:
    perms = {"ai": ["can_query"], "dashboard": {"sales": "can_view"}}
    client_for(fake).mint(USER.replace(permissions=perms))
    assert fake.requests[0].json["permissions"] == perms
    assert "permissions" not in fake.requests[0].json["user"]


def test_empty_attributes_are_sent_as_object(fake: FakeToucan) -> None:
    client_for(fake).mint(ToucanUser("u"))
    assert fake.requests[0].json["user"]["attributes"] == {}


def test_token_path_is_configurable(fake: FakeToucan) -> None:
    fake.token_path = "/api/generate-token"
    client_for(fake, token_path="/api/generate-token").mint(USER)
    assert fake.requests[0].path == "/api/generate-token"


def test_expiry_counts_from_before_the_request(fake: FakeToucan, clock: Clock) -> None:
    fake.expires_in = 120
    sent = clock()
    token = client_for(fake).mint(USER)
    clock.advance(5)
    assert token.expires_at.timestamp() == sent + 120
    assert token.expires_in == 115


def test_one_pooled_connection_for_many_mints(fake: FakeToucan) -> None:
    client = client_for(fake)
    for _ in range(20):
        client.mint(USER)
    assert len(fake.mints) == 20
    assert fake.connections == 1


@pytest.mark.parametrize(
    ("failure", "error", "status"),
    [
        ({"status": 401}, ToucanAuthError, 502),
        ({"status": 403}, ToucanAuthError, 502),
        ({"status": 400}, ToucanResponseError, 502),
        ({"status": 404}, ToucanResponseError, 502),
        ({"status": 500}, ToucanUnavailable, 503),
        ({"status": 502}, ToucanUnavailable, 503),
        ({"status": 503, "retry_after": 1}, ToucanUnavailable, 503),
        ({"status": 429, "retry_after": 1}, ToucanRateLimited, 503),
        (
            {"status": 302, "headers": {"Location": "http://127.0.0.2/steal"}},
            ToucanResponseError,
            502,
        ),
        ({"status": 200, "body": "<html>not json</html>"}, ToucanResponseError, 502),
        ({"status": 200, "body": {"expiresIn": "1h"}}, ToucanResponseError, 502),
        ({"status": 200, "body": {"token": "", "expiresIn": "1h"}}, ToucanResponseError, 502),
        ({"status": 200, "body": {"token": 12, "expiresIn": "1h"}}, ToucanResponseError, 502),
        ({"status": 200, "body": "x" * 10_000_000}, ToucanResponseError, 502),
        ({"drop": True}, ToucanUnavailable, 503),
        ({"status": 200, "delay": 1.5}, ToucanUnavailable, 503),
    ],
    ids=lambda v: (
        json.dumps(v, default=str)[:40] if isinstance(v, dict) else getattr(v, "__name__", str(v))
    ),
)
def test_failures_map_to_typed_errors(
    fake: FakeToucan,
    failure: dict[str, object],
    error: type[Exception],
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    vendor_body = failure.get("body")
    fake.fail(**failure)  # type: ignore[arg-type]
    with pytest.raises(error) as info:
        client_for(fake).mint(USER)
    assert info.value.code == status  # type: ignore[attr-defined]
    message = str(info.value) + repr(info.value)
    assert "simulated failure" not in message
    assert API_KEY not in message
    if isinstance(vendor_body, str):
        assert vendor_body[:20] not in message
    # The error's HTTP body is ours, not the vendor's.
    html = info.value.get_body()  # type: ignore[attr-defined]
    assert "simulated failure" not in html and "not json" not in html
    assert len(fake.requests) == 1


def test_vendor_error_body_is_logged_truncated(
    fake: FakeToucan, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail(400, body={"code": "bad", "message": "attribute region unknown " + "y" * 1000})
    with caplog.at_level(logging.WARNING, "flask_toucan"), pytest.raises(ToucanResponseError):
        client_for(fake).mint(USER)
    (record,) = [r for r in caplog.records if "answered 400" in r.getMessage()]
    assert "attribute region unknown" in record.getMessage()
    assert len(record.getMessage()) < 400


def test_vendor_body_echoing_the_key_is_scrubbed(
    fake: FakeToucan, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail(401, body=f"bad key {API_KEY}")
    with caplog.at_level(logging.WARNING, "flask_toucan"), pytest.raises(ToucanAuthError):
        client_for(fake).mint(USER)
    # Not JSON: only its type and size are logged, never its text.
    (record,) = [r for r in caplog.records if "answered 401" in r.getMessage()]
    assert record.getMessage().endswith(f"(text/plain, {len('bad key ' + API_KEY)} bytes)")
    assert "bad key" not in record.getMessage()


@pytest.mark.parametrize("pad", [0, 150, 195, 198, 199, 200, 790, 795])
def test_crafted_body_cannot_smuggle_part_of_the_key_into_the_log(
    fake: FakeToucan, caplog: pytest.LogCaptureFixture, pad: int
) -> None:
    # The key echoed right where a fixed truncation window would cut it.
    fake.fail(401, body={"code": "x" * pad + API_KEY, "message": "y" * pad + API_KEY + "z"})
    with caplog.at_level(logging.WARNING, "flask_toucan"), pytest.raises(ToucanAuthError):
        client_for(fake).mint(USER)
    (record,) = [r for r in caplog.records if "answered 401" in r.getMessage()]
    text = record.getMessage()
    for size in range(4, len(API_KEY) + 1):
        assert API_KEY[:size] not in text, f"{API_KEY[:size]!r} leaked"


def test_only_code_and_message_of_a_json_error_are_logged(
    fake: FakeToucan, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail(403, body={"code": "forbidden", "message": "no", "debug": {"headers": "secret"}})
    with caplog.at_level(logging.WARNING, "flask_toucan"), pytest.raises(ToucanAuthError):
        client_for(fake).mint(USER)
    (record,) = [r for r in caplog.records if "answered 403" in r.getMessage()]
    assert record.getMessage().endswith("code='forbidden' message='no'")


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retries_transient_statuses_then_succeeds(fake: FakeToucan, status: int) -> None:
    fake.fail(status, times=2)
    token = client_for(fake, max_retries=2).mint(USER)
    assert [r.status for r in fake.requests] == [status, status, 200]
    assert token.value == fake.tokens_issued[0]


def test_retry_budget_is_exact(fake: FakeToucan) -> None:
    fake.fail(503, times=10)
    with pytest.raises(ToucanUnavailable):
        client_for(fake, max_retries=2).mint(USER)
    assert len(fake.requests) == 3


def test_no_retry_on_auth_or_bad_request(fake: FakeToucan) -> None:
    fake.fail(401, times=3)
    with pytest.raises(ToucanAuthError):
        client_for(fake, max_retries=2).mint(USER)
    assert len(fake.requests) == 1


def test_retry_after_seconds_is_honoured(fake: FakeToucan) -> None:
    fake.fail(429, retry_after=1)
    started = time.monotonic()
    client_for(fake, max_retries=1).mint(USER)
    assert time.monotonic() - started >= 0.95
    assert len(fake.requests) == 2


def test_retry_after_longer_than_allowed_fails_fast(fake: FakeToucan) -> None:
    fake.fail(429, retry_after=3600)
    with pytest.raises(ToucanRateLimited) as info:
        client_for(fake, max_retries=2, max_retry_after=2).mint(USER)
    assert len(fake.requests) == 1
    assert info.value.upstream_retry_after == 3600


def test_connection_refused_is_unavailable() -> None:
    with FakeToucan(api_key=API_KEY) as fake:
        url = fake.url
    client = TokenClient(url, API_KEY, timeout=(0.5, 0.5), max_retries=1, backoff_factor=0.01)
    with pytest.raises(ToucanUnavailable, match="could not connect"):
        client.mint(USER)


def test_dropped_connection_is_retried(fake: FakeToucan) -> None:
    fake.fail(drop=True)
    token = client_for(fake, max_retries=1).mint(USER)
    assert len(fake.requests) == 2
    assert token.value == fake.tokens_issued[0]


def test_slow_drip_body_is_bounded(fake: FakeToucan) -> None:
    fake.fail(200, body={"token": "t" * 50, "expiresIn": "1h"}, drip=0.05)
    started = time.monotonic()
    with pytest.raises(ToucanUnavailable, match="too slowly"):
        client_for(fake, timeout=(0.3, 0.3)).mint(USER)
    # Budget: (connect + read) x attempts = 0.6 s, plus one drip interval.
    assert time.monotonic() - started < 0.6 + 0.5


def test_repr_hides_the_key(fake: FakeToucan) -> None:
    client = client_for(fake)
    assert API_KEY not in repr(client)
    assert API_KEY not in repr(fake)


def test_pytest_plugin_fixture_is_a_working_fake(fake_toucan: FakeToucan) -> None:
    token = TokenClient(fake_toucan.url, fake_toucan.api_key, max_retries=0).mint(USER)
    assert decode_fake_token(token.value)["attributes"] == {"region": "EU", "tenant_id": 7}
    wrong = TokenClient(fake_toucan.url, "wrong-key", max_retries=0)
    with pytest.raises(ToucanAuthError):
        wrong.mint(USER)
    assert [r.status for r in fake_toucan.requests] == [200, 401]


def test_urllib3s_retry_warning_names_the_key_not_our_class(
    fake: FakeToucan, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail(drop=True)
    client = TokenClient(fake.url, API_KEY, timeout=(2, 2), max_retries=2)
    client.mint(ToucanUser("u"))  # the dropped connection is retried, then a token
    retried = [r.getMessage() for r in caplog.records if "Retrying" in r.getMessage()]
    assert retried, [r.getMessage() for r in caplog.records]
    assert "BoundedRetry" not in retried[0]
    assert "retries allowed by TOUCAN_MAX_RETRIES" in retried[0]


def test_a_mint_runs_in_the_callers_thread_under_one_deadline_mechanism(
    fake: FakeToucan,
) -> None:
    # One mechanism bounds a mint: the watchdog over the caller's own sockets (no
    # worker thread left blocked on a dripping answer after the caller gave up).
    client = TokenClient(fake.url, API_KEY, timeout=(2, 2), max_retries=0)
    posting: list[int] = []
    post = client.session.post

    def recording(*args: Any, **kwargs: Any) -> Any:
        posting.append(threading.get_ident())
        return post(*args, **kwargs)

    client.session.post = recording  # type: ignore[method-assign]
    client.mint(ToucanUser("alice"))
    assert posting == [threading.get_ident()]


def test_a_raising_key_callable_is_toucan_unavailable_as_the_guide_says(
    fake: FakeToucan,
) -> None:
    def secret_manager() -> str:
        raise RuntimeError("vault sealed")

    client = TokenClient(fake.url, secret_manager, timeout=(2, 2), max_retries=0)
    with pytest.raises(ToucanUnavailable, match="secret manager") as caught:
        client.mint(ToucanUser("alice"))
    assert caught.value.code == 503
    assert not fake.mints
