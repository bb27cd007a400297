"""flask_toucan demo: three signed-in users of two tenants, a dashboard and the AI assistant.

Without TOUCAN_API_KEY it runs in preview mode (no Toucan account needed); with it,
against Toucan AI (set TOUCAN_DASHBOARD_ID to one of your dashboards too).

    flask --app examples.demo.app run
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from flask_toucan import Toucan, ToucanUser

USERS: dict[str, dict[str, Any]] = {
    "alice": {"name": "Alice", "tenant": "acme", "region": "EU", "plan": "pro"},
    "bob": {"name": "Bob", "tenant": "acme", "region": "US", "plan": "pro"},
    "chen": {"name": "Chen", "tenant": "globex", "region": "APAC", "plan": "starter"},
}

toucan = Toucan()


@toucan.user_loader
def load_toucan_user() -> ToucanUser | None:
    user_id = session.get("user")
    if user_id not in USERS:
        return None
    profile = USERS[user_id]
    return ToucanUser(
        distinct_id=user_id,
        attributes={"tenant": profile["tenant"], "region": profile["region"]},
        permissions={"ai": "can_query"},  # the assistant answers only tokens carrying it
    )


def create_app(config: dict[str, Any] | None = None, *, token_lifetime: int | None = None) -> Flask:
    """The demo app; ``token_lifetime``: seconds of life of its preview tokens."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.environ.get("DEMO_SECRET_KEY", "demo-only-not-secret"),
        TOUCAN_PREVIEW=not os.environ.get("TOUCAN_API_KEY"),
        TOUCAN_MIN_TOKEN_TTL=int(os.environ.get("DEMO_MIN_TOKEN_TTL", "30")),
        DASHBOARD_ID=os.environ.get("TOUCAN_DASHBOARD_ID", "sales-overview"),
    )
    # The demo's dashboard also as a ready-made embed page (framed on the index page).
    app.config.setdefault("TOUCAN_EMBED_PAGES", [app.config["DASHBOARD_ID"]])
    app.config.update(config or {})
    # Short preview tokens, so the page shows them being renewed.
    lifetime = token_lifetime or int(os.environ.get("DEMO_TOKEN_LIFETIME", "120"))
    toucan.init_app(app, service_options={"preview_lifetime": lifetime})

    @app.get("/")
    def index() -> str | Response:
        if session.get("user") not in USERS:
            session["user"] = "alice"
        return analytics()

    @toucan.inject_token
    def analytics() -> str:
        user_id = session["user"]
        return render_template(
            "index.html",
            users=USERS,
            current=user_id,
            profile=USERS[user_id],
            dashboard_id=app.config["DASHBOARD_ID"],
        )

    @app.post("/switch")
    def switch() -> Response:
        user_id = request.form.get("user", "")
        if user_id in USERS:
            session["user"] = user_id
        return redirect(url_for("index"))

    @app.post("/logout")
    def logout() -> Response:
        session.pop("user", None)
        return redirect(url_for("signed_out"))

    @app.get("/signed-out")
    def signed_out() -> str:
        return render_template("signed_out.html")

    return app


app = create_app()
