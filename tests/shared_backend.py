"""What every shared backend (Redis, Sentinel, Cluster, Memcached) is put through by several
processes: gunicorn's workers in a stampede, and a lease holder killed mid-mint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from werkzeug.test import TestResponse

from flask_toucan.testing import FakeToucan

from .conftest import API_KEY
from .servers import ROOT, Gunicorn
from .test_gunicorn import fire


def app_env(fake: FakeToucan, cache_config: dict[str, Any], prefix: str) -> dict[str, str]:
    """The environment tests/gunicorn_app.py reads, for ``cache_config``."""
    return {
        "TEST_TOUCAN_KEY": API_KEY,
        "TEST_TOUCAN_URL": fake.url,
        "TEST_CACHE_CONFIG": json.dumps(cache_config),
        "TEST_PREFIX": prefix,
    }


@contextmanager
def gunicorn_over(
    fake: FakeToucan, cache_config: dict[str, Any], prefix: str
) -> Iterator[Gunicorn]:
    """gunicorn with 4 workers of 8 threads over the backend; its log never holds the key or a
    traceback."""
    server = Gunicorn(app_env(fake, cache_config, prefix), workers=4, threads=8)
    try:
        yield server
    finally:
        log = server.stop()
    assert API_KEY not in log
    assert "Traceback" not in log, log


def assert_stampede_is_one_mint(url: str, fake: FakeToucan) -> list[Any]:
    """100 concurrent first views of one user, spread over at least two workers: one mint."""
    fake.delay = 0.3
    responses = fire(url + "/token", [{"user": "alice"}] * 100)
    assert [r.status_code for r in responses] == [200] * 100
    assert len({r.json()["token"] for r in responses}) == 1
    assert len(fake.mints) == 1
    for _ in range(10):  # the kernel may hand one worker a whole burst: send more
        if len({r.headers["X-Worker"] for r in responses}) >= 2:
            break
        responses += fire(url + "/token", [{"user": "alice"}] * 50)
    assert len({r.headers["X-Worker"] for r in responses}) >= 2
    assert len(fake.mints) == 1
    return responses


_HOLDER = """
import os, sys
sys.path.insert(0, os.environ["ROOT"])
from tests.gunicorn_app import create_app
create_app().test_client().get("/token?user=alice")
"""


def kill_lease_holder(
    fake: FakeToucan, env: dict[str, str], while_held: Callable[[], None] = lambda: None
) -> None:
    """Start a process that takes alice's mint lease, then SIGKILL it mid-mint (after
    ``while_held``)."""
    fake.delay = 60  # the holder's mint never finishes
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER], env={**os.environ, "ROOT": str(ROOT), **env}
    )
    try:
        deadline = time.monotonic() + 20
        while not fake.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fake.requests, "the holder never reached Toucan"
        while_held()
        holder.send_signal(signal.SIGKILL)  # between acquiring and releasing
        holder.wait(10)
    finally:
        if holder.poll() is None:
            holder.kill()
    fake.delay = 0


def alice_in_this_process(env: dict[str, str]) -> tuple[Flask, TestResponse, float]:
    """tests/gunicorn_app.py built here with ``env``: the app, alice's /token and its seconds."""
    sys.path.insert(0, str(ROOT))
    os.environ.update(env)
    try:
        from tests.gunicorn_app import create_app

        app = create_app()
        started = time.monotonic()
        response = app.test_client().get("/token?user=alice")
        return app, response, time.monotonic() - started
    finally:
        for k in env:
            os.environ.pop(k, None)
