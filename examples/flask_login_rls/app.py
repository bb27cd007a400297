"""A real sign-in flow with Row-Level Security: Flask-Login, two tenants on two Toucan
instances (EU and US), a required ``tenant_id`` and tokens prefetched at sign-in.

Runs in preview mode (no Toucan account needed) unless ``TOUCAN_EU_API_KEY`` and
``TOUCAN_US_API_KEY`` are set::

    flask --app examples.flask_login_rls.app run

Demo accounts (password ``demo``): alice@acme.example and bob@acme.example (tenant 1,
EU instance), chen@globex.example (tenant 2, US instance).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from flask import Flask, flash, redirect, render_template, request, url_for
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
)
from werkzeug.security import check_password_hash, generate_password_hash
from werkzeug.wrappers import Response

from flask_toucan import Toucan, ToucanUser


@dataclass(frozen=True)
class Tenant:
    id: int
    name: str
    instance: str  # which Toucan instance holds this tenant's data (data residency)


TENANTS = {1: Tenant(1, "Acme", "eu"), 2: Tenant(2, "Globex", "us")}

# Passwords are stored hashed, as in any real app; every demo account's is "demo".
_DEMO_HASH = generate_password_hash("demo")


@dataclass
class Account(UserMixin):
    id: str
    name: str
    tenant_id: int | None
    password_hash: str = _DEMO_HASH

    @property
    def tenant(self) -> Tenant | None:
        return TENANTS.get(self.tenant_id) if self.tenant_id is not None else None


ACCOUNTS = {
    a.id: a
    for a in (
        Account("alice@acme.example", "Alice", 1),
        Account("bob@acme.example", "Bob", 1),
        Account("chen@globex.example", "Chen", 2),
    )
}

login_manager = LoginManager()
login_manager.login_view = "sign_in"
toucan = Toucan()


@login_manager.user_loader
def load_account(account_id: str) -> Account | None:
    return ACCOUNTS.get(account_id)


@toucan.user_loader
def load_toucan_user() -> ToucanUser | None:
    if not current_user.is_authenticated:
        return None
    tenant = TENANTS.get(current_user.tenant_id)
    return ToucanUser(
        distinct_id=current_user.id,
        attributes={"tenant_id": current_user.tenant_id},  # what the RLS rules filter on
        permissions={"ai": "can_query"},  # every signed-in user may ask the assistant
        instance=tenant.instance if tenant else None,
    )


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    eu_key, us_key = os.environ.get("TOUCAN_EU_API_KEY"), os.environ.get("TOUCAN_US_API_KEY")
    app.config.update(
        SECRET_KEY=os.environ.get("EXAMPLE_SECRET_KEY", "example-only-not-secret"),
        TOUCAN_PREVIEW=not (eu_key and us_key),
        TOUCAN_INSTANCES={
            "eu": {"BASE_URL": "https://eu.toucan.example", "API_KEY": eu_key or "preview"},
            "us": {"BASE_URL": "https://us.toucan.example", "API_KEY": us_key or "preview"},
        },
        # No token for a user without a tenant: an RLS rule would otherwise see nothing
        # to filter on. bool is not accepted as an int here.
        TOUCAN_REQUIRED_ATTRIBUTES={"tenant_id": int},
        TOUCAN_PREFETCH_ON_LOGIN=True,
    )
    app.config.update(config or {})
    login_manager.init_app(app)
    toucan.init_app(app)

    @app.get("/")
    def index() -> Response:
        return redirect(url_for("analytics" if current_user.is_authenticated else "sign_in"))

    @app.route("/sign-in", methods=["GET", "POST"])
    def sign_in() -> str | Response:
        if request.method == "POST":
            account = ACCOUNTS.get(request.form.get("email", "").strip().lower())
            password = request.form.get("password", "")
            if account is not None and check_password_hash(account.password_hash, password):
                login_user(account)  # -> user_logged_in -> the token is minted now
                return redirect(url_for("analytics"))
            flash("Unknown email or wrong password.")
        return render_template("sign_in.html", accounts=ACCOUNTS.values())

    @app.post("/sign-out")
    def sign_out() -> Response:
        logout_user()
        return redirect(url_for("sign_in"))

    @app.get("/analytics")
    @login_required
    @toucan.inject_token
    def analytics() -> str:
        return render_template("analytics.html", account=current_user)

    return app


app = create_app()
