"""Your own AI chat with Toucan's answers: each question goes to Toucan's assistant
(its MCP server) as the signed-in user, so Row-Level Security scopes every answer, and
each answer's charts render with ``toucan_result()``.

Runs in preview mode (answers made in process, no Toucan account needed) unless
``TOUCAN_API_KEY`` is set::

    flask --app examples.own_chat.app run

Sign in as alice (tenant acme) or chen (tenant globex) and ask the same question.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, redirect, render_template, request, session, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user
from werkzeug.wrappers import Response

from flask_toucan import Toucan, ToucanUser


class Account(UserMixin):
    def __init__(self, id: str, tenant: str) -> None:
        self.id = id
        self.tenant = tenant


ACCOUNTS = {a.id: a for a in (Account("alice", "acme"), Account("chen", "globex"))}

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
    return ToucanUser(current_user.id, attributes={"tenant": current_user.tenant})


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.environ.get("EXAMPLE_SECRET_KEY", "example-only-not-secret"),
        TOUCAN_PREVIEW=not os.environ.get("TOUCAN_API_KEY"),
    )
    app.config.update(config or {})
    login_manager.init_app(app)
    toucan.init_app(app)

    @app.get("/sign-in")
    def sign_in() -> str:
        return render_template("chat_sign_in.html", accounts=ACCOUNTS)

    @app.post("/sign-in")
    def do_sign_in() -> Response:
        account = ACCOUNTS.get(request.form.get("account", ""))
        if account is None:
            return redirect(url_for("sign_in"))
        login_user(account)
        session.pop("thread_id", None)
        return redirect(url_for("chat"))

    @app.route("/", methods=["GET", "POST"])
    @login_required
    def chat() -> str:
        answer = None
        question = ""
        if request.method == "POST":
            question = request.form.get("question", "").strip()
            if question:
                # As the signed-in user, on the same cached token as the pages; a follow-up
                # question continues Toucan's thread.
                answer = toucan.ask(question, thread_id=session.get("thread_id"))
                session["thread_id"] = answer.thread_id
        return render_template("chat.html", question=question, answer=answer)

    return app


app = create_app()
