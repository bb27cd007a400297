"""The pages the benchmarks compare, in one Flask app configured from the environment.

- ``/page``      flask_toucan: ``@toucan.inject_token`` and ``toucan_dashboard()``;
- ``/baseline``  the same HTML with a hard-coded token string (the floor);
- ``/naive``     the hand-written integration from Toucan's docs: ``requests.post`` to the
  token endpoint on every page view, no cache, no connection reuse;
- ``/realistic`` and ``/realistic-baseline``: the same two, as a real app's page: a user
  signed in with Flask-Login, a layout with navigation and a 150-row report table
  (about 35 KB of HTML, the size of a typical dashboard page of a SaaS app).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import requests
from flask import Flask, render_template, request
from flask_login import LoginManager, UserMixin, current_user, login_user
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


# A page of typical size: layout, navigation, a table rendered from data.
LAYOUT = (
    "<!doctype html><html lang=en><head><meta charset=utf-8><title>{{ title }}</title>"
    "<link rel=stylesheet href=/static/app.css>{% block head %}{% endblock %}</head><body>"
    "<header><nav>{% for item in nav %}<a href='{{ item.url }}'"
    "{% if item.active %} class=active{% endif %}>{{ item.label }}</a>{% endfor %}</nav>"
    "<span class=who>{{ current_user.name }} · {{ current_user.tenant }}</span></header>"
    "<main>{% block main %}{% endblock %}</main><footer>&copy; Example Corp</footer>"
    "</body></html>"
)
TABLE = (
    "<h1>{{ title }}</h1><table><thead><tr><th>Region</th><th>Orders</th><th>Revenue</th>"
    "<th>Growth</th></tr></thead><tbody>{% for row in rows %}<tr class='{{ loop.cycle("
    "'odd', 'even') }}'><td>{{ row.region }}</td><td>{{ row.orders }}</td><td>"
    "{{ '%.2f'|format(row.revenue) }}</td><td>{{ row.growth }}%</td></tr>{% endfor %}"
    "</tbody></table>"
)
REALISTIC = (
    "{% extends 'layout.html' %}{% block head %}{{ toucan_script() }}{% endblock %}"
    "{% block main %}" + TABLE + "{{ toucan_dashboard('sales', theme='dark', "
    "style='height:600px') }}{% endblock %}"
)
REALISTIC_HAND = (
    "{% extends 'layout.html' %}{% block head %}<script type='module' src='{{ script_url }}'>"
    "</script>{% endblock %}{% block main %}" + TABLE + "<tc-dashboard dashboard-id='sales' "
    "auth-token='{{ token }}' server-url='{{ server_url }}' data-theme='dark' "
    "style='height:600px'></tc-dashboard>{% endblock %}"
)
NAV = [{"url": f"/section/{i}", "label": f"Section {i}", "active": i == 3} for i in range(8)]
ROWS = [
    {"region": f"Region {i}", "orders": 100 + i * 7, "revenue": 1234.5 * i, "growth": i % 9}
    for i in range(150)
]


class Member(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id
        self.name = user_id.title()
        self.tenant = "t-" + user_id


def create_app(env: dict[str, str] | None = None) -> Flask:
    env = {**os.environ, **(env or {})}
    app = Flask(__name__)
    app.secret_key = "bench-only"
    app.jinja_loader = DictLoader(
        {
            "page.html": PAGE,
            "hand.html": HAND_WRITTEN,
            "layout.html": LAYOUT,
            "realistic.html": REALISTIC,
            "realistic_hand.html": REALISTIC_HAND,
        }
    )
    login = LoginManager(app)
    login.user_loader(Member)
    config: dict[str, Any] = {
        "TOUCAN_API_KEY": env["BENCH_TOUCAN_KEY"],
        "TOUCAN_BASE_URL": env["BENCH_TOUCAN_URL"],
        "TOUCAN_MAX_RETRIES": 0,
        # Like-for-like with the hand-written page, which has no refresh controller.
        "TOUCAN_REFRESH": False,
        "TOUCAN_MIN_TOKEN_TTL": int(env.get("BENCH_MIN_TTL", "300")),
    }
    if env.get("BENCH_CACHE_CONFIG"):
        config["TOUCAN_CACHE_CONFIG"] = json.loads(env["BENCH_CACHE_CONFIG"])
    elif env.get("BENCH_REDIS_URL"):
        config["TOUCAN_CACHE_CONFIG"] = {
            "CACHE_TYPE": "RedisCache",
            "CACHE_REDIS_URL": env["BENCH_REDIS_URL"],
        }
    if env.get("BENCH_PREFIX"):
        config["TOUCAN_CACHE_KEY_PREFIX"] = env["BENCH_PREFIX"]
    app.config.update(config)
    toucan = Toucan(
        app,
        service_options={
            "front_cache_ttl": float(env.get("BENCH_FRONT_TTL", "30")),
            "refresh_ahead": float(env.get("BENCH_REFRESH_AHEAD", "0.5")),
        },
    )
    app.extensions["bench_toucan"] = toucan
    token_url = env["BENCH_TOUCAN_URL"] + "/embed/generate-token"
    fixed_token = env.get("BENCH_FIXED_TOKEN", "fake.eyJzdWIiOiJhIn0.fixed")

    def current() -> ToucanUser:
        # The realistic pages sign users in with Flask-Login; the bare ones name them.
        realistic = request.endpoint == "realistic"
        user = current_user.id if realistic else request.args.get("user", "alice")
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

    @app.get("/login/<user_id>")
    def login_as(user_id: str) -> str:
        login_user(Member(user_id))
        return "ok"

    @app.get("/realistic")
    @toucan.inject_token
    def realistic() -> str:
        return render_template("realistic.html", title="Sales", nav=NAV, rows=ROWS)

    @app.get("/realistic-baseline")
    def realistic_baseline() -> str:
        return render_template(
            "realistic_hand.html",
            title="Sales",
            nav=NAV,
            rows=ROWS,
            token=fixed_token,
            script_url=app.config["TOUCAN_SCRIPT_URL"],
            server_url=app.config["TOUCAN_SERVER_URL"],
        )

    # Where the warm view's overhead goes: the hard-coded page plus one piece each.
    def hand() -> str:
        return render_template(
            "hand.html",
            token=fixed_token,
            script_url=app.config["TOUCAN_SCRIPT_URL"],
            server_url=app.config["TOUCAN_SERVER_URL"],
        )

    @app.get("/cost/user")
    def cost_user() -> str:
        toucan.current_user()  # the app's user_loader and the ToucanUser it returns
        return hand()

    @app.get("/cost/token")
    def cost_token() -> str:
        toucan.get_token()  # + cache key, cache lookup and the no-store headers
        return hand()

    @app.get("/cost/decorated")
    @toucan.inject_token
    def cost_decorated() -> str:
        return hand()  # + the decorator

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
