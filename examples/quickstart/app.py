"""The docs' quickstart, whole: sign-in with Flask-Login, one analytics page with a dashboard
and the AI assistant, each user seeing only their tenant's rows.

Without an API key it runs in preview mode (stand-in components, no Toucan account)::

    pip install flask-toucan flask-login
    flask --app app run                      # then open http://127.0.0.1:5000

Against a local fake Toucan, in two shells::

    flask toucan fake                        # prints the two lines below
    export TOUCAN_BASE_URL=http://127.0.0.1:8765
    export TOUCAN_API_KEY=fake-key
    flask --app app run
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, redirect, render_template, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user
from werkzeug.wrappers import Response

from flask_toucan import Toucan, ToucanUser


class User(UserMixin):
    """Your app's user, as you already have it."""

    def __init__(self, id: str, tenant_id: int) -> None:
        self.id = id
        self.tenant_id = tenant_id


USERS = {"alice": User("alice", 1), "bob": User("bob", 2)}  # your user table

login_manager = LoginManager()
login_manager.login_view = "sign_in"
toucan = Toucan()


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return USERS.get(user_id)


@toucan.user_loader
def load_toucan_user() -> ToucanUser | None:
    if not current_user.is_authenticated:
        return None  # -> 401 wherever a token is needed
    return ToucanUser(
        distinct_id=current_user.id,
        attributes={"tenant_id": current_user.tenant_id},  # what your RLS rules filter on
        permissions={"ai": "can_query"},  # the assistant answers only tokens carrying it
    )


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY", "dev-only-change-me"),  # Flask-Login needs it
        # No key yet? Preview mode: stand-in components, tokens minted in process.
        # TOUCAN_API_KEY and TOUCAN_BASE_URL are read from the environment.
        TOUCAN_PREVIEW=not os.environ.get("TOUCAN_API_KEY"),
    )
    app.config.update(config or {})
    login_manager.init_app(app)
    toucan.init_app(app)

    @app.route("/sign-in", methods=["GET", "POST"])
    def sign_in() -> str | Response:
        user = USERS.get(request.form.get("user", ""))
        if request.method == "POST" and user is not None:
            login_user(user)
            return redirect(url_for("analytics"))
        return render_template("sign_in.html", users=USERS)

    @app.get("/")
    @login_required
    @toucan.inject_token  # the user's own token, as the loader describes them
    def analytics() -> str:
        return render_template("analytics.html")

    return app


app = create_app()
