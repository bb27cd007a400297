"""A small app for the multi-process tests, configured from the environment."""

from __future__ import annotations

import json
import os

from flask import Flask, jsonify, render_template_string, request
from flask.typing import ResponseReturnValue
from flask_login import LoginManager, UserMixin, current_user, login_user
from werkzeug.wrappers import Response

from flask_toucan import Toucan, ToucanUser


class Member(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def create_app() -> Flask:
    app = Flask(__name__)
    # TEST_CACHE_CONFIG (JSON) for Sentinel or Cluster; TEST_REDIS_URL for plain Redis.
    cache_config = json.loads(os.environ.get("TEST_CACHE_CONFIG", "null")) or {
        "CACHE_TYPE": "RedisCache",
        "CACHE_REDIS_URL": os.environ["TEST_REDIS_URL"],
    }
    # Generous: these tests check single-flight, and a loaded CI machine must
    # not turn a slow Redis reply into "Redis is down, mint directly".
    if "Redis" in cache_config["CACHE_TYPE"]:
        cache_config.setdefault(
            "CACHE_OPTIONS", {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}
        )
    app.config.update(
        TOUCAN_API_KEY=os.environ["TEST_TOUCAN_KEY"],
        TOUCAN_BASE_URL=os.environ["TEST_TOUCAN_URL"],
        TOUCAN_CACHE_CONFIG=cache_config,
        TOUCAN_CACHE_KEY_PREFIX=os.environ.get("TEST_PREFIX", "toucan:"),
        TOUCAN_MIN_TOKEN_TTL=int(os.environ.get("TEST_MIN_TTL", "300")),
        TOUCAN_MAX_RETRIES=int(os.environ.get("TEST_MAX_RETRIES", "0")),
    )
    options = {
        "refresh_ahead": float(os.environ.get("TEST_REFRESH_AHEAD", "0.5")),
        "lock_wait": float(os.environ.get("TEST_LOCK_WAIT", "5")),
        "lock_timeout": int(os.environ.get("TEST_LOCK_TIMEOUT", "10")),
        "front_cache_ttl": float(os.environ.get("TEST_FRONT_TTL", "30")),
    }
    app.config.update(
        SECRET_KEY="gunicorn-tests",
        TOUCAN_PREFETCH_ON_LOGIN=os.environ.get("TEST_PREFETCH") == "1",
    )
    toucan = Toucan(app, service_options=options)
    login = LoginManager(app)
    login.user_loader(Member)

    @toucan.user_loader
    def load() -> ToucanUser | None:
        user = current_user.id if current_user.is_authenticated else request.args.get("user")
        if not user:
            return None
        return ToucanUser(user, attributes={"tenant": request.args.get("tenant", "t-" + user)})

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        from flask_toucan.metrics import instrument

        instrument(app)

        @app.get("/metrics")
        def metrics() -> Response:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return Response(generate_latest(registry), mimetype="text/plain")

    @app.post("/sign-in")
    def sign_in() -> str:
        login_user(Member(request.args["user"]))
        return "welcome"

    @app.after_request
    def worker_id(response: Response) -> Response:
        response.headers["X-Worker"] = str(os.getpid())
        return response

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.get("/page")
    @toucan.inject_token
    def page() -> str:
        return render_template_string("{{ toucan_dashboard('d') }}")

    @app.post("/invalidate")
    def invalidate() -> str:
        user = request.args["user"]
        toucan.invalidate(
            ToucanUser(user, attributes={"tenant": request.args.get("tenant", "t-" + user)})
        )
        return "ok"

    @app.get("/token")
    @toucan.inject_token
    def token() -> ResponseReturnValue:
        return jsonify(toucan.get_token().to_dict())

    return app
