from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC

import pytest
from flask import Flask

from flask_toucan import EmbedToken, InvalidToucanUser, ToucanUser, parse_expires_in
from flask_toucan.cache import decode_token, encode_token
from flask_toucan.identity import cache_key, key_fingerprint
from flask_toucan.testing import FakeToucan
from flask_toucan.tokens import FALLBACK_LIFETIME

from .conftest import Clock


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1h", 3600),
        ("30m", 1800),
        ("90s", 90),
        ("2 days", 172800),
        ("1.5h", 5400),
        (3600, 3600),
        (3600.9, 3600),
        ("3600", 3600),
        (" 1H ", 3600),
        ("10 Minutes", 600),
        ("1 week", 604800),
        ("1500ms", 1),
        ("1y", 31557600),
        (".5h", 1800),
    ],
)
def test_parse_expires_in_understands_jwt_durations(value: object, seconds: int) -> None:
    assert parse_expires_in(value, max_lifetime=10**9) == seconds
    assert parse_expires_in(value) == min(seconds, 86400)  # TOUCAN_MAX_TOKEN_LIFETIME


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1e20, 86400),
        (10**400, 60),  # too large for a float: not understood, assumed short
        ("99999y", 86400),
        ("5000y", 86400),
        ("9" * 400, 60),
        ("2 days", 86400),
        (1e308 * 10, 60),  # infinity: not understood
        ("1e20", 60),  # not the duration grammar
    ],
)
def test_absurd_lifetimes_never_raise_and_are_capped(value: object, seconds: int) -> None:
    assert parse_expires_in(value) == seconds
    assert parse_expires_in(value, max_lifetime=3600) == min(seconds, 3600)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "soon",
        "1 fortnight",
        "-5m",
        -10,
        0,
        "0s",
        True,
        "1h30m",
        [1],
        "nan",
        float("inf"),
        "500ms",
    ],
)
def test_parse_expires_in_falls_back_short_with_one_warning(
    value: object, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "flask_toucan"):
        assert parse_expires_in(value) == FALLBACK_LIFETIME
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "expiresIn" in warnings[0].getMessage()


def test_fallback_is_short() -> None:
    assert FALLBACK_LIFETIME <= 60


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"distinct_id": ""}, "distinct_id must be a non-empty string"),
        ({"distinct_id": "  "}, "distinct_id must be a non-empty string"),
        ({"distinct_id": 42}, "distinct_id must be a non-empty string"),
        ({"distinct_id": "u", "role": 3}, "role must be a non-empty string"),
        ({"distinct_id": "u", "attributes": ["a"]}, "attributes must be a dict"),
        ({"distinct_id": "u", "attributes": {"a": object()}}, "attributes['a'] is of type object"),
        ({"distinct_id": "u", "attributes": {1: "x"}}, "key of type int"),
        ({"distinct_id": "u", "attributes": {"a": float("nan")}}, "JSON cannot carry"),
        ({"distinct_id": "u", "attributes": {"a": {"b": [1, {2}]}}}, "attributes['a']['b'][1]"),
        ({"distinct_id": "u", "permissions": "all"}, "permissions must be a dict"),
    ],
)
def test_user_validation_messages(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidToucanUser, match=message.replace("[", r"\[").replace("]", r"\]")):
        ToucanUser(**kwargs)  # type: ignore[arg-type]


def test_user_is_frozen_and_copies_attributes() -> None:
    attrs = {"region": "EU", "ids": [1, 2]}
    user = ToucanUser("u1", attributes=attrs)
    attrs["region"] = "US"
    assert user.attributes["region"] == "EU"
    with pytest.raises(TypeError):
        user.attributes["region"] = "US"  # type: ignore[index]
    with pytest.raises(AttributeError):
        user.role = "admin"  # type: ignore[misc]
    assert user.to_payload() == {
        "user": {
            "distinctId": "u1",
            "role": "explorer",
            "attributes": {"region": "EU", "ids": [1, 2]},
        }
    }


def test_coerce_accepts_mappings_in_both_spellings() -> None:
    a = ToucanUser.coerce({"distinctId": "u", "role": "viewer", "attributes": {"x": 1}})
    b = ToucanUser.coerce({"distinct_id": "u", "role": "viewer", "attributes": {"x": 1}})
    assert a == b
    assert a.role == "viewer"
    # No role: not given (TOUCAN_DEFAULT_ROLE applies later), as for ToucanUser("u").
    assert ToucanUser.coerce({"distinct_id": "u"}).role is None
    assert ToucanUser.coerce({"distinct_id": "u"}) == ToucanUser("u")
    # ...unless the caller names the default itself.
    assert ToucanUser.coerce({"distinct_id": "u"}, default_role="viewer").role == "viewer"
    assert ToucanUser.coerce(ToucanUser("u"), "viewer") == ToucanUser("u", role="viewer")
    with pytest.raises(InvalidToucanUser, match=r"unknown user field.*tenant"):
        ToucanUser.coerce({"distinct_id": "u", "tenant": "x"})
    with pytest.raises(InvalidToucanUser, match="no distinct_id"):
        ToucanUser.coerce({"role": "explorer"})
    with pytest.raises(InvalidToucanUser, match="got int"):
        ToucanUser.coerce(5)


def key(user: ToucanUser, base: str = "https://t", api: str = "k") -> str:
    return cache_key("p:", base, key_fingerprint(api), user)


def test_cache_key_ignores_attribute_order_only() -> None:
    a = ToucanUser("u", attributes={"a": 1, "b": {"x": 1, "y": 2}})
    b = ToucanUser("u", attributes={"b": {"y": 2, "x": 1}, "a": 1})
    assert key(a) == key(b)
    assert key(a).startswith("p:")
    different = [
        ToucanUser("v", attributes={"a": 1, "b": {"x": 1, "y": 2}}),
        ToucanUser("u", role="viewer", attributes={"a": 1, "b": {"x": 1, "y": 2}}),
        ToucanUser("u", attributes={"a": 2, "b": {"x": 1, "y": 2}}),
        ToucanUser("u", attributes={"a": 1.0, "b": {"x": 1, "y": 2}}),
        ToucanUser("u", attributes={"a": True, "b": {"x": 1, "y": 2}}),
        ToucanUser("u", attributes={"a": 1, "b": {"x": 1, "y": 2}}, permissions={}),
    ]
    keys = {key(u) for u in different} | {key(a)}
    assert len(keys) == len(different) + 1
    assert key(a, base="https://other") != key(a)
    assert key(a, api="k2") != key(a)


def test_cache_key_does_not_normalise_unicode() -> None:
    composed = ToucanUser("u", attributes={"city": "Montr\u00e9al"})
    decomposed = ToucanUser("u", attributes={"city": "Montre\u0301al"})
    assert key(composed) != key(decomposed)


def test_key_fingerprint_does_not_contain_the_key() -> None:
    assert "secret" not in key_fingerprint("secret")
    assert len(key_fingerprint("secret")) == 16


def test_embed_token_expiry_and_dict(clock: Clock) -> None:
    token = EmbedToken.from_lifetime("abc.def", 3600, clock())
    assert token.expires_at.tzinfo == UTC
    assert token.expires_in == 3600
    clock.advance(100.5)
    assert token.expires_in == 3499
    data = token.to_dict()
    assert data["token"] == "abc.def"
    assert data["expiresIn"] == 3499
    assert data["expiresAt"].endswith("Z")
    clock.advance(10_000)
    assert token.expires_in == 0


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.999])
@pytest.mark.parametrize("transit", [0.0, 0.4, 1.3])
def test_expiry_is_never_later_than_a_whole_second_issuers(fraction: float, transit: float) -> None:
    # Token issuers (JWT iat/exp, FakeToucan, the preview) count whole seconds: a token
    # issued at t expires at floor(t) + lifetime. We know only when our request left
    # (sent_at <= t), so our estimate must not be later than that, whatever the fraction.
    sent_at = 1_900_000_000 + fraction
    issued = sent_at + transit
    token = EmbedToken.from_lifetime("abc.def", 300, sent_at)
    assert token.expires_at_epoch <= math.floor(issued) + 300
    assert token.expires_at_epoch > sent_at + 300 - 1  # and no more than a second early
    assert token.lifetime == 300  # the announced lifetime, whatever the fraction


def test_cache_format_round_trips_and_refuses_anything_else(clock: Clock) -> None:
    token = EmbedToken.from_lifetime("abc.def", 3600, clock())
    text = encode_token(token)
    assert json.loads(text)["token"] == "abc.def"  # plain JSON, not pickle
    assert decode_token(text) == token
    assert decode_token('{"v": 2}') is None
    assert decode_token("junk") is None
    assert decode_token(b"!pickled") is None
    assert decode_token('{"v":2,"token":"t","expires_at":1e300,"issued_at":null}') is None


def test_embed_token_repr_hides_value() -> None:
    token = EmbedToken.from_lifetime("SUPER-SECRET-TOKEN", 60, 0)
    assert "SUPER-SECRET" not in repr(token)
    assert "SUPER-SECRET" not in str(token)
    assert "SUPER-SECRET" not in f"{token}"


@pytest.mark.parametrize(
    "user",
    [
        ToucanUser("u"),
        ToucanUser("u", attributes={"role": None, "x": [1, {"role": None}]}),
        ToucanUser("u", permissions={"ai": "can_query"}, instance="eu"),
        ToucanUser('ü"}}', attributes={"z": '"role":null}}'}),
    ],
)
def test_with_default_role_is_replace_without_the_rework(user: ToucanUser) -> None:
    fast = user.with_default_role("viewer")
    slow = user.replace(role="viewer")
    assert fast == slow
    assert fast.canonical == slow.canonical
    assert hash(fast) == hash(slow)
    assert fast.to_payload() == slow.to_payload()
    assert fast.with_default_role("other") is fast  # a role given is kept


@pytest.mark.parametrize(
    "hostile",
    [
        "1" + " " * 200_000 + "!",
        " " * 200_000 + "1h",
        "1" * 200_000 + "x",
        "1." + "1" * 200_000,
        "1 " + "h" * 200_000,
    ],
)
def test_hostile_expires_in_is_refused_in_linear_time(hostile: str) -> None:
    started = time.perf_counter()
    assert parse_expires_in(hostile) == FALLBACK_LIFETIME
    assert time.perf_counter() - started < 0.5
    # Short values with spaces still parse as before.
    assert parse_expires_in("  2   days ") == 86400


def test_a_hostile_expires_in_through_the_page_path_is_bounded(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    """A hostile upstream's expiresIn (the 256 KB-body form of the backtracking attack)
    costs a page view nothing: the token is served with the fallback lifetime at once,
    and the worker is never stalled."""
    fake.expires_in = "1" + " " * 200_000 + "!"
    client = make_app().test_client()
    started = time.perf_counter()
    page = client.get("/page", headers={"X-User": "alice"})
    took = time.perf_counter() - started
    assert page.status_code == 200
    assert f'data-toucan-lifetime="{FALLBACK_LIFETIME}"' in page.get_data(as_text=True)
    assert took < 2, f"the page view took {took:.1f}s"
