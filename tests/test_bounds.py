"""Every per-process map flask_toucan keeps has a bound, whatever requests arrive."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_toucan import ToucanConfigError, ToucanUser
from flask_toucan.testing import FakeToucan
from flask_toucan.variants import MAX_VARIANTS

from .servers import RedisServer


def map_sizes(app: Flask) -> dict[str, int]:
    """The size of every container hanging off the extension's per-app state."""
    service = app.extensions["toucan"].service
    sizes: dict[str, int] = {"variants": len(service.variants.registry)}
    owners = (("service", service), ("store", service.store))
    for owner_name, owner in owners:
        for name, value in vars(owner).items():
            if isinstance(value, (dict, set, list)):
                sizes[f"{owner_name}.{name}"] = len(value)
    sizes["store.front"] = len(service.store.front or ())
    return sizes


def test_forwarded_prefix_flood_grows_nothing(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    app.wsgi_app = ProxyFix(app.wsgi_app, x_prefix=1)  # type: ignore[method-assign]
    client = app.test_client()
    client.get("/page", headers={"X-User": "alice", "X-Forwarded-Prefix": "/warm"})
    before = map_sizes(app)
    for i in range(2000):  # each would add an entry to any map keyed by the prefix
        response = client.get("/page", headers={"X-User": "alice", "X-Forwarded-Prefix": f"/p{i}"})
        assert response.status_code == 200
        assert f'src="/p{i}/toucan/static/toucan-refresh.js"' in response.text
    assert map_sizes(app) == before
    assert len(fake.mints) == 1


def test_many_users_keep_the_front_cache_and_locks_bounded(
    make_app: Callable[..., Flask], redis_server: RedisServer, fake: FakeToucan
) -> None:
    app = make_app(
        TOUCAN_CACHE_CONFIG={"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": redis_server.url},
        TOUCAN_CACHE_KEY_PREFIX="bounds:",
        front_cache_size=50,
    )
    toucan = app.extensions["test_toucan"]

    def one(i: int) -> None:
        with app.app_context():
            toucan.get_token(ToucanUser(f"flood-{i}"))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(400)))
    sizes = map_sizes(app)
    assert sizes["store.front"] == 50
    assert sizes["service._flights"] == 0  # a mint in flight is forgotten once it lands
    assert sizes["service.renewing"] == 0
    r = redis_server.client()
    for key in r.keys("bounds:*"):
        assert r.pttl(key) > 0
    r.delete(*r.keys("bounds:*"))


def test_variant_registry_is_capped(make_app: Callable[..., Flask]) -> None:
    toucan = make_app().extensions["test_toucan"]

    def make_view(i: int) -> Any:
        def view() -> str:
            return ""

        view.__qualname__ = f"view_{i}"
        return view

    for i in range(MAX_VARIANTS):
        toucan.inject_token(role=f"r{i}", allow=lambda: True)(make_view(i))
    # Registering the same view again replaces its entry: the registry does not grow.
    toucan.inject_token(role="r0", allow=lambda: True)(make_view(0))
    assert len(toucan.variants) == MAX_VARIANTS
    with pytest.raises(ToucanConfigError, match="more than 1000"):
        toucan.inject_token(role="one-too-many", allow=lambda: True)(make_view(-1))
