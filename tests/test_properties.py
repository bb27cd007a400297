"""Property tests: identities never share a cache key, hostile values never escape the markup."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask, render_template_string
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_toucan import ToucanUser
from flask_toucan.identity import cache_key, key_fingerprint
from flask_toucan.testing import FakeToucan, decode_fake_token

from .markup import start_tags

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
attributes = st.dictionaries(st.text(max_size=10), json_values, max_size=5)
identities = st.builds(
    ToucanUser,
    distinct_id=st.text(min_size=1, max_size=12).filter(str.strip),
    role=st.sampled_from(["explorer", "viewer", "editor", "Explorer"]),
    attributes=attributes,
    permissions=st.none()
    | st.dictionaries(st.sampled_from(["ai", "dashboard"]), json_values, max_size=2),
    instance=st.none() | st.sampled_from(["eu", "us"]),
)


def key(user: ToucanUser) -> str:
    return cache_key("toucan:", "https://toucanai.cloud", key_fingerprint("k"), user)


@settings(max_examples=400)
@given(identities, identities)
def test_distinct_identities_never_share_a_key(a: ToucanUser, b: ToucanUser) -> None:
    # Identity is what Toucan receives: the JSON body, compared without key order.
    # So 1, 1.0 and true are different values (at worst an extra mint).
    same_body = canonical(a) == canonical(b)
    assert (key(a) == key(b)) == same_body


def canonical(user: ToucanUser) -> str:
    # What Toucan receives, and which instance receives it.
    return json.dumps([user.to_payload(), user.instance], sort_keys=True)


@settings(max_examples=200)
@given(identities)
def test_the_same_body_on_two_instances_never_shares_a_key(user: ToucanUser) -> None:
    keys = {key(user.replace(instance=name)) for name in (None, "eu", "us")}
    assert len(keys) == 3


def test_type_distinct_values_are_distinct_identities() -> None:
    users = [ToucanUser("u", attributes={"a": v}) for v in (1, 1.0, True, "1", [1], None)]
    assert len({key(u) for u in users}) == len(users)


@settings(max_examples=200)
@given(identities, st.randoms(use_true_random=False))
def test_attribute_order_never_matters(user: ToucanUser, rnd: Any) -> None:
    def shuffled(value: Any) -> Any:
        if isinstance(value, dict):
            items = list(value.items())
            rnd.shuffle(items)
            return {k: shuffled(v) for k, v in items}
        if isinstance(value, list):
            return [shuffled(v) for v in value]
        return value

    payload = user.to_payload()
    again = ToucanUser(
        user.distinct_id,
        role=user.role,
        attributes=shuffled(payload["user"]["attributes"]),
        permissions=shuffled(payload.get("permissions")),
        instance=user.instance,
    )
    assert key(again) == key(user)


# HTML parsers normalise CR and NUL, so those are left out of the round trip.
html_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\x00"),
    max_size=40,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ident=html_text, theme=html_text, style=html_text, klass=html_text, title=html_text)
def test_hostile_values_round_trip_through_every_helper(
    app: Flask, ident: str, theme: str, style: str, klass: str, title: str
) -> None:
    toucan = app.extensions["test_toucan"]
    source = (
        "{{ toucan_dashboard(v, theme=t, style=s, class_=c, title=x) }}"
        "{{ toucan_chart(v, theme=t, style=s, class_=c, title=x) }}"
        "{{ toucan_assistant(theme=t, style=s, class_=c, title=x) }}"
        "{{ toucan_script(title=x) }}"
    )

    @toucan.inject_token
    def view() -> str:
        return render_template_string(source, v=ident, t=theme, s=style, c=klass, x=title)

    with app.test_request_context(headers={"X-User": "alice"}):
        html = view()
    elements = start_tags(html)
    tags = [t for t, _ in elements]
    assert tags == ["tc-dashboard", "tc-dashboard", "tc-ai-assistant", "script", "script"]
    expected = {"data-theme": theme, "style": style, "class": klass, "title": title}
    for _tag, attrs in elements[:3]:
        for name, value in expected.items():
            assert attrs[name] == value
        allowed = {
            "auth-token",
            "server-url",
            "data-toucan-expires-at",
            "data-toucan-lifetime",
            *expected,
        }
        extra = set(attrs) - allowed - {"dashboard-id", "chart-id"}
        assert not extra, f"unexpected attributes {extra}"
    assert elements[0][1]["dashboard-id"] == ident
    assert elements[1][1]["chart-id"] == ident
    assert elements[3][1]["title"] == title


def test_many_threads_many_users_each_get_their_own_token(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    toucan = app.extensions["test_toucan"]
    users = [
        ToucanUser(
            f"user-{i}",
            attributes={"tenant": f"t{i % 7}", "region": ["EU", "US"][i % 2], "score": i * 1.5},
        )
        for i in range(60)
    ]
    failures: list[str] = []

    def act(user: ToucanUser) -> None:
        for _ in range(5):
            with app.app_context():
                token = toucan.get_token(user)
            claims = decode_fake_token(token.value)
            if (claims["sub"], claims["attributes"]) != (user.distinct_id, dict(user.attributes)):
                failures.append(user.distinct_id)

    threads = [threading.Thread(target=act, args=(u,)) for u in users for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(fake.mints) == len(users)
