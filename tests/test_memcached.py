"""Memcached, real and on loopback: single-flight through its atomic ``add``, tokens shared
between processes, a lease that expires when its holder is killed, JSON values, and a
pickle planted in memcached that is never loaded."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from flask_toucan.cache import AddLeases
from flask_toucan.testing import FakeToucan, decode_fake_token

from .conftest import USERS
from .markup import token_of
from .servers import MemcachedServer
from .shared_backend import (
    alice_in_this_process,
    app_env,
    assert_stampede_is_one_mint,
    gunicorn_over,
    kill_lease_holder,
)


@pytest.fixture(scope="module")
def memcached() -> Iterator[MemcachedServer]:
    server = MemcachedServer().start()
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    return f"m-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def mc_app(
    make_app: Callable[..., Flask], memcached: MemcachedServer, prefix: str
) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        app = make_app(
            TOUCAN_CACHE_CONFIG=memcached.cache_config, TOUCAN_CACHE_KEY_PREFIX=prefix, **overrides
        )
        apps.append(app)
        return app

    yield make
    for app in apps:  # python-memcached keeps its sockets open until told
        app.extensions["toucan"].service.store.backend.client.disconnect_all()


def key_of(app: Flask, user: str) -> str:
    with app.app_context():
        service = app.extensions["toucan"].service
        return str(service.key_for(service.resolve(USERS[user])))


def test_leases_are_memcached_add_with_an_expiry(mc_app: Callable[..., Flask]) -> None:
    leases = mc_app(lock_timeout=1).extensions["toucan"].service.store.leases
    assert isinstance(leases, AddLeases)
    name = f"lease-{uuid.uuid4().hex}"
    first = leases.acquire(name)
    assert first is not None
    assert leases.acquire(name) is None  # add is atomic: one holder
    assert leases.held(name)
    time.sleep(2.1)  # never released (a dead holder): memcached expires it
    assert not leases.held(name)
    again = leases.acquire(name)
    assert again is not None
    again.release()
    assert not leases.held(name)


def test_values_in_memcached_are_json_and_shared_between_apps(
    mc_app: Callable[..., Flask], memcached: MemcachedServer, fake: FakeToucan
) -> None:
    app = mc_app()
    a = app.test_client().get("/page", headers={"X-User": "alice"})
    b = mc_app().test_client().get("/page", headers={"X-User": "alice"})
    assert token_of(a.text) == token_of(b.text)
    assert len(fake.mints) == 1
    raw = memcached.raw(f"get {key_of(app, 'alice')}\r\n".encode())
    header, value = raw.split(b"\r\n")[:2]
    assert header.startswith(b"VALUE ")
    assert int(header.split()[2]) & 1 == 0  # no pickle flag
    assert json.loads(value)["token"] == token_of(a.text)


def test_a_pickled_value_planted_in_memcached_is_never_loaded(
    mc_app: Callable[..., Flask], memcached: MemcachedServer, fake: FakeToucan, tmp_path: Any
) -> None:
    app = mc_app()
    app.test_client().get("/page", headers={"X-User": "alice"})
    marker = tmp_path / "pwned"
    # What an attacker with write access to memcached would plant: a pickle that runs
    # code, flagged as a pickle (python-memcached's flag 1) so a client would load it.
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    key = key_of(app, "alice")
    stored = memcached.raw(f"set {key} 1 600 {len(payload)}\r\n".encode() + payload + b"\r\n")
    assert stored == b"STORED\r\n"
    other = mc_app(front_cache_ttl=0).test_client()
    response = other.get("/page", headers={"X-User": "alice"})
    assert response.status_code == 200
    assert not marker.exists()
    assert len(fake.mints) == 2  # the planted value was not a token: minted again


def test_stampede_over_four_workers_is_one_mint(
    fake: FakeToucan, memcached: MemcachedServer, prefix: str
) -> None:
    with gunicorn_over(fake, memcached.cache_config, prefix) as server:
        assert_stampede_is_one_mint(server.url, fake)


def test_killed_lease_holder_blocks_nobody_past_the_lock_timeout(
    memcached: MemcachedServer, fake: FakeToucan, prefix: str
) -> None:
    env = {**app_env(fake, memcached.cache_config, prefix), "TEST_LOCK_TIMEOUT": "2"}
    kill_lease_holder(fake, env)
    app, response, waited = alice_in_this_process(env)
    app.extensions["toucan"].service.store.backend.client.disconnect_all()
    assert response.status_code == 200
    assert decode_fake_token(response.get_json()["token"])["sub"] == "alice"
    # memcached counts expiry in whole seconds of its own clock: a 2 s item goes
    # within 3 s of being set.
    assert waited <= 2 + 1 + 0.5, f"waited {waited:.2f}s for a dead holder's lease"
    assert len(fake.mints) == 1  # the dead holder never got its token


def test_a_compressed_bomb_planted_in_memcached_is_never_inflated(
    mc_app: Callable[..., Flask], memcached: MemcachedServer, fake: FakeToucan
) -> None:
    """python-memcached inflates any value flagged as compressed (flag 8); a 300 KB
    planted value inflating to 300 MB reads as a miss instead (bounded decompression)."""
    import resource
    import zlib

    app = mc_app()
    app.test_client().get("/page", headers={"X-User": "alice"})
    bomb = zlib.compress(b"\0" * (300 * 1024 * 1024), 9)
    assert len(bomb) < 400 * 1024
    key = key_of(app, "alice")
    stored = memcached.raw(f"set {key} 8 600 {len(bomb)}\r\n".encode() + bomb + b"\r\n")
    assert stored == b"STORED\r\n"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    other = mc_app(front_cache_ttl=0).test_client()
    response = other.get("/page", headers={"X-User": "alice"})
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert response.status_code == 200
    assert len(fake.mints) == 2  # the planted value was not a token: minted again
    assert grown_mb < 100, f"reading the planted value grew the process by {grown_mb:.0f} MB"
