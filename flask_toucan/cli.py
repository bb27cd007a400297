"""``flask toucan ...`` commands: check the configuration and the connection to Toucan."""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import AppGroup

from .errors import InvalidToucanUser, ToucanError
from .identity import ToucanUser

__all__ = ["toucan_cli"]

toucan_cli = AppGroup("toucan", help="Toucan AI embedding: configuration and connection checks.")


@toucan_cli.command("config")
def show_config() -> None:
    """Show the TOUCAN_* settings in force (secrets are never shown)."""
    settings = current_app.extensions["toucan"].settings
    for name, value in settings.as_config().items():
        click.echo(f"{name} = {value!r}")


@toucan_cli.command("check")
@click.option(
    "--user",
    "distinct_id",
    default="flask-toucan-check",
    show_default=True,
    help="distinctId to mint a test token for",
)
@click.option("--role", default=None, help="role (default: TOUCAN_DEFAULT_ROLE)")
@click.option(
    "--attr",
    "attrs",
    multiple=True,
    metavar="NAME=JSON",
    help="an attribute, e.g. --attr region='\"EU\"' or --attr tenant_id=7",
)
def check(distinct_id: str, role: str | None, attrs: tuple[str, ...]) -> None:
    """Mint a token for a test user and report its lifetime (the token is not printed)."""
    state = current_app.extensions["toucan"]
    attributes: dict[str, object] = {}
    for item in attrs:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--attr")
        try:
            attributes[name] = json.loads(raw)
        except ValueError:
            attributes[name] = raw  # a bare word is a string
    try:
        user = ToucanUser(
            distinct_id, role=role or state.settings.default_role, attributes=attributes
        )
        token = state.toucan.get_token(user, force=True)
    except InvalidToucanUser as exc:
        raise click.BadParameter(str(exc)) from None
    except ToucanError as exc:
        click.echo(f"FAILED: {exc}", err=True)
        raise SystemExit(1) from None
    where = (
        "preview (tokens minted in process)" if state.settings.preview else state.settings.base_url
    )
    click.echo(
        f"OK: Toucan at {where} minted a token for {distinct_id!r}; "
        f"it expires in {token.expires_in} s ({token.expires_at.isoformat()})."
    )
