"""An app for `flask --app tests.cli_apps:create_app toucan ...` run as a real subprocess.

Its config comes from the TEST_APP_CONFIG environment variable (JSON)."""

from __future__ import annotations

import json
import os

from flask import Flask, render_template_string

from flask_toucan import Toucan, ToucanUser


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(json.loads(os.environ.get("TEST_APP_CONFIG", "{}")))
    toucan = Toucan(app)
    if not os.environ.get("TEST_APP_NO_LOADER"):
        toucan.user_loader(lambda: ToucanUser("cli-user"))

    if os.environ.get("TEST_APP_VARIANT"):

        @app.get("/admin")
        @toucan.inject_token(role="admin", allow=lambda: True)
        def admin() -> str:
            return render_template_string("{{ toucan_dashboard('ops') }}")

    return app


def create_plain_app() -> Flask:
    """An app without flask_toucan (the `flask toucan` commands are still listed)."""
    return Flask(__name__)
