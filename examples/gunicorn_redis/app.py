"""The demo app configured for production-like serving: gunicorn workers sharing Redis.

    REDIS_URL=redis://127.0.0.1:6379/0 gunicorn -c examples/gunicorn_redis/gunicorn.conf.py \
        'examples.gunicorn_redis.app:create_app()'
"""

from __future__ import annotations

import os

from flask import Flask

from examples.demo.app import create_app as create_demo_app


def create_app() -> Flask:
    return create_demo_app(
        {
            "TOUCAN_CACHE_CONFIG": {
                "CACHE_TYPE": "RedisCache",
                "CACHE_REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            },
            # Every worker and host must share one SECRET_KEY (sessions, signed variants).
            "SECRET_KEY": os.environ.get("DEMO_SECRET_KEY", "demo-only-not-secret"),
        }
    )
