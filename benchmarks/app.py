"""The pages the benchmarks compare, in one Flask app configured from the environment.

- ``/page``      flask_toucan: ``@toucan.inject_token`` and ``toucan_dashboard()``;
- ``/baseline``  the same HTML with a hard-coded token string (the floor);
- ``/naive``     the hand-written integration from Toucan's docs: ``requests.post`` to the
  token endpoint on every page view, no cache, no connection reuse.
"""

from __future__ import annotations

import os
import time
from typing import Any

import requests
from flask import Flask, render_template, request
from jinja2 import DictLoader

from flask_toucan import Toucan, ToucanUser

PAGE = (
    "<!doctype html><html><head><title>Analytics</title>{{ toucan_script() }}</head>"
    "<body><h1>Sales</h1>{{ toucan_dashboard('sales', theme='dark', style='height:600px') }}"
    "</body></html>"
)
# The same markup written by hand, with the token as a plain template value.
HAND_WRITTEN = (
    "<!doctype html><html><head><title>Analytics</title>"
    '<script type="module" src="{{ script_url }}"></script></head>'
    '<body><h1>Sales</h1><tc-dashboard dashboard-id="sales" auth-token="{{ token }}" '
    'server-url="{{ server_url }}" data-theme="dark" style="height:600px"></tc-dashboard>'
    "</body></html>"
)


def create_app(env: dict[str, str] | None = None) -> Flask:
    env = {**os.environ, **(env or {})}
    app = Flask(__name__)
    app.jinja_loader = DictLoader({"page.html": PAGE, "hand.html": HAND_WRITTEN})
    config: dict[str, Any] = {
        "TOUCAN_API_KEY": env["BENCH_TOUCAN_KEY"],
        "TOUCAN_BASE_URL": env["BENCH_TOUCAN_URL"],
        "TOUCAN_MAX_RETRIES": 0,
        # Like-for-like with the hand-written page, which has no refresh controller.
        "TOUCAN_REFRESH": False,
        "TOUCAN_FRONT_CACHE_TTL": float(env.get("BENCH_FRONT_TTL", "30")),
        "TOUCAN_REFRESH_AHEAD": float(env.get("BENCH_REFRESH_AHEAD", "0.5")),
        "TOUCAN_MIN_TOKEN_TTL": int(env.get("BENCH_MIN_TTL", "300")),
    }
    if env.get("BENCH_REDIS_URL"):
        config["TOUCAN_CACHE_CONFIG"] = {
            "CACHE_TYPE": "RedisCache",
            "CACHE_REDIS_URL": env["BENCH_REDIS_URL"],
        }
    if env.get("BENCH_PREFIX"):
        config["TOUCAN_CACHE_KEY_PREFIX"] = env["BENCH_PREFIX"]
    app.config.update(config)
    toucan = Toucan(app)
    token_url = env["BENCH_TOUCAN_URL"] + "/embed/generate-token"
    fixed_token = env.get("BENCH_FIXED_TOKEN", "fake.eyJzdWIiOiJhIn0.fixed")

    def current() -> ToucanUser:
        user = request.args.get("user", "alice")
        return ToucanUser(user, attributes={"tenant": "t-" + user, "region": "EU"})

    toucan.user_loader(current)

    @app.get("/page")
    @toucan.inject_token
    def page() -> str:
        return render_template("page.html")

    @app.get("/baseline")
    def baseline() -> str:
        return render_template(
            "hand.html",
            token=fixed_token,
            script_url=app.config["TOUCAN_SCRIPT_URL"],
            server_url=app.config["TOUCAN_SERVER_URL"],
        )

    @app.get("/naive")
    def naive() -> str:
        user = current()
        answer = requests.post(
            token_url,
            json=user.to_payload(),
            headers={"x-api-key": env["BENCH_TOUCAN_KEY"]},
            timeout=10,
        )
        answer.raise_for_status()
        return render_template(
            "hand.html",
            token=answer.json()["token"],
            script_url=app.config["TOUCAN_SCRIPT_URL"],
            server_url=app.config["TOUCAN_SERVER_URL"],
        )

    @app.get("/health")
    def health() -> str:
        return str(time.time())

    return app
