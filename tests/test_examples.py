from __future__ import annotations

import pytest

from .conftest import API_KEY
from .servers import Gunicorn, RedisServer


@pytest.mark.infra  # gunicorn workers and a redis-server of its own
def test_gunicorn_redis_example_serves_the_demo(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOUCAN_API_KEY", raising=False)
    server = Gunicorn(
        {"REDIS_URL": redis_server.url, "TOUCAN_API_KEY": ""},
        app="examples.gunicorn_redis.app:create_app()",
        health="/signed-out",
        config="examples/gunicorn_redis/gunicorn.conf.py",
    )
    try:
        import requests

        session = requests.Session()
        page = session.get(server.url + "/", timeout=10)
        assert page.status_code == 200
        assert "PREVIEW" not in page.text  # the stand-ins draw it in the browser
        assert "<tc-dashboard" in page.text and "toucan-preview.js" in page.text
        keys = [k for k in redis_server.client().keys("toucan:*") if not k.endswith(b":lock")]
        assert len(keys) == 1
    finally:
        log = server.stop()
    assert API_KEY not in log
    assert "Traceback" not in log
