"""``flask toucan ...``: config, check, doctor, cache stats/clear, mcp tools, fake.

Registered once, as a Flask CLI plugin (the ``flask.commands`` entry point): ``init_app``
knows nothing of it. Each command loads the app itself, so that it can say what is
wrong instead of printing a traceback: a configuration error that loading the app
raised becomes a ✗ line naming the key, and an app without flask_toucan gets one line
saying how to set it up.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

import click
from flask import Flask, current_app
from flask.cli import AppGroup, ScriptInfo

from .cache import in_process, list_keys
from .checks import redact_text
from .context import NOT_SET_UP
from .errors import InvalidToucanUser, ToucanError
from .identity import ToucanUser
from .service import TokenService

__all__ = ["NOT_SET_UP", "toucan_cli"]

P = ParamSpec("P")
R = TypeVar("R")


toucan_cli = AppGroup(
    "toucan", help="Toucan AI embedding: configuration, connection checks, cache, a fake Toucan."
)


def _load_app(*, checks: bool = False) -> Flask:
    """The app, loaded as ``flask`` would; a flask_toucan error that loading it raised
    (a configuration mistake) is reported as a ✗ line and exit 1, not a traceback.
    ``checks``: doctor's way, every line a check on standard output."""
    ctx = click.get_current_context()
    try:
        app = ctx.ensure_object(ScriptInfo).load_app()
    except ToucanError as exc:
        click.echo(f"✗ configuration: {exc}", err=not checks)
        raise SystemExit(1) from None
    if "toucan" not in app.extensions:
        click.echo(f"✗ {NOT_SET_UP}" if checks else NOT_SET_UP, err=not checks)
        raise SystemExit(1)
    return app


def _with_app(func: Callable[P, R]) -> Callable[P, R]:
    """Run the command inside the loaded app's context (see :func:`_load_app`)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with _load_app().app_context():
            return func(*args, **kwargs)

    return wrapper


def _state() -> TokenService:
    service: TokenService = current_app.extensions["toucan"].service
    return service


@toucan_cli.command("config", with_appcontext=False)
@_with_app
def show_config() -> None:
    """Show the TOUCAN_* settings in force (secrets are never shown)."""
    for name, value in _state().settings.as_config().items():
        click.echo(f"{name} = {value!r}")


def _user_from(
    distinct_id: str, role: str | None, attrs: tuple[str, ...], instance: str | None
) -> ToucanUser:
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
        return ToucanUser(distinct_id, role=role, attributes=attributes, instance=instance)
    except InvalidToucanUser as exc:
        raise click.BadParameter(str(exc)) from None


def _identity_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--instance", default=None, help="a TOUCAN_INSTANCES name")(func)
    func = click.option(
        "--attr",
        "attrs",
        multiple=True,
        metavar="NAME=JSON",
        help="an attribute, e.g. --attr region='\"EU\"' or --attr tenant_id=7",
    )(func)
    return click.option("--role", default=None, help="role (default: TOUCAN_DEFAULT_ROLE)")(func)


@toucan_cli.command("check", with_appcontext=False)
@click.option("--user", "distinct_id", default="flask-toucan-check", show_default=True,
              help="distinctId to mint a test token for")  # fmt: skip
@_identity_options
@_with_app
def check(distinct_id: str, role: str | None, attrs: tuple[str, ...], instance: str | None) -> None:
    """Mint a token for a test user and report its lifetime (the token is not printed)."""
    state = _state()
    user = _user_from(distinct_id, role, attrs, instance)
    try:
        token = state.get(user, force=True)[0]
    except ToucanError as exc:
        click.echo(f"FAILED: {exc}", err=True)
        raise SystemExit(1) from None
    inst = state.instance(instance)
    where = (
        "preview (tokens minted in process)"
        if state.settings.preview
        else redact_text(inst.base_url)
    )
    click.echo(
        f"OK: Toucan at {where} minted a token for {distinct_id!r}; "
        f"it expires in {token.expires_in} s ({token.expires_at.isoformat()})."
    )


@toucan_cli.group("mcp")
def mcp_group() -> None:
    """Toucan's MCP server (your own AI chat), as a given user sees it."""


@mcp_group.command("tools", with_appcontext=False)
@click.option("--user", "distinct_id", default="flask-toucan-check", show_default=True,
              help="distinctId whose token lists the tools")  # fmt: skip
@_identity_options
@_with_app
def mcp_tools(
    distinct_id: str, role: str | None, attrs: tuple[str, ...], instance: str | None
) -> None:
    """List the tools Toucan's MCP endpoint offers a user (TOUCAN_MCP_URL)."""
    state = _state()
    user = _user_from(distinct_id, role, attrs, instance)
    try:
        from . import mcp
    except ImportError as exc:
        click.echo(f"✗ {exc}", err=True)
        raise SystemExit(1) from None
    try:
        tools = mcp.blocking(mcp.caller_for(state, user).tools)
    except ToucanError as exc:
        click.echo(f"FAILED: {exc}", err=True)
        raise SystemExit(1) from None
    click.echo(f"{len(tools)} tools at {state.instance(instance).mcp_url} for {distinct_id!r}:")
    for name, description, required in tools:
        arguments = f"({', '.join(required)})" if required else "()"
        click.echo(f"  {name}{arguments}  {description.splitlines()[0] if description else ''}")


# -- doctor ---------------------------------------------------------------------


@toucan_cli.command("doctor", with_appcontext=False)
def doctor() -> None:
    """Check configuration, network, key, clock, cache and refresh endpoint; exit 1 on any ✗."""
    from .doctor import run_checks

    app = _load_app(checks=True)  # a configuration error is what doctor is for: a ✗ line
    failed = False
    with app.app_context():
        for ok, line in run_checks(app):
            click.echo(("✓ " if ok else "✗ ") + line)
            failed = failed or not ok
    if failed:
        raise SystemExit(1)


# -- cache --------------------------------------------------------------------------


@toucan_cli.group("cache")
def cache_group() -> None:
    """The token cache: stats, clear."""


def _our_keys(state: TokenService) -> Iterator[str] | None:
    """Every key under TOUCAN_CACHE_KEY_PREFIX, when the backend can list them."""
    return list_keys(state.store.backend, state.settings.cache_key_prefix)


#: What the cache commands say when the tokens live in each worker's own memory.
PER_PROCESS = (
    "the token backend is in-process (TOUCAN_CACHE_CONFIG not set): each worker keeps its "
    "own tokens in its own memory, which this command cannot reach; they expire on their "
    "own, or call toucan.invalidate(user) in the app. Set TOUCAN_CACHE_CONFIG to a shared "
    "backend (Redis) to manage them from here"
)


@cache_group.command("stats", with_appcontext=False)
@_with_app
def cache_stats() -> None:
    """Backend, and how many tokens and leases it holds under TOUCAN_CACHE_KEY_PREFIX."""
    state = _state()
    cache = state.store
    if in_process(cache.backend):
        click.echo(f"backend: {type(cache.backend).__name__} ({PER_PROCESS})")
        return
    click.echo(f"backend: {type(cache.backend).__name__}")
    click.echo(f"cross-process leases: {type(cache.leases).__name__ if cache.leases else 'none'}")
    click.echo(f"front cache (this process): {len(cache.front) if cache.front else 'none'}")
    keys = _our_keys(state)
    if keys is None:
        click.echo("tokens: this backend cannot list its keys")
        return
    listed = list(keys)
    leases = sum(k.endswith(":lock") for k in listed)
    click.echo(f"tokens: {len(listed) - leases}")
    click.echo(f"leases held: {leases}")


@cache_group.command("clear", with_appcontext=False)
@click.option("--user", "distinct_id", default=None,
              help="forget only this user's tokens (every identity of this distinctId, "
                   "or exactly one with --role/--attr/--instance)")  # fmt: skip
@_identity_options
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@_with_app
def cache_clear(
    distinct_id: str | None,
    role: str | None,
    attrs: tuple[str, ...],
    instance: str | None,
    yes: bool,
) -> None:
    """Forget a user's tokens (--user: all of that distinctId's, or exactly one identity
    with --role/--attr/--instance), or every token under TOUCAN_CACHE_KEY_PREFIX."""
    state = _state()
    if in_process(state.store.backend):
        click.echo(PER_PROCESS, err=True)
        raise SystemExit(1)
    if distinct_id is not None:
        exact = bool(role or attrs or instance)
        user = _user_from(distinct_id, role, attrs, instance)
        what = "that identity's token" if exact else f"every token of {distinct_id!r}"
        if not yes and not click.confirm(f"Forget {what}?"):
            raise SystemExit(1)
        if exact:
            count: int | None = int(state.invalidate(user))
        else:
            count = state.forget(distinct_id)
            if count is None:
                click.echo(
                    "this backend cannot list its keys: give the exact identity with "
                    "--role/--attr/--instance",
                    err=True,
                )
                raise SystemExit(1)
        click.echo(f"forgot {count} token{'' if count == 1 else 's'} of {distinct_id!r}")
        return
    keys = _our_keys(state)
    if keys is None:
        click.echo("this backend cannot list its keys: use --user", err=True)
        raise SystemExit(1)
    listed = list(keys)
    prefix = state.settings.cache_key_prefix
    if not yes and not click.confirm(f"Delete {len(listed)} keys under {prefix!r}?"):
        raise SystemExit(1)
    for key in listed:
        state.store.delete(key)
    click.echo(f"deleted {len(listed)} keys under {prefix!r}")


# -- fake -------------------------------------------------------------------------


@toucan_cli.command("fake", with_appcontext=False)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--api-key", default="fake-key", show_default=True)
@click.option("--expires-in", default="1h", show_default=True)
def fake(port: int, api_key: str, expires_in: str) -> None:
    """Run a FakeToucan in the foreground (token endpoint and stand-in embed.js)."""
    from .testing import FakeToucan

    server = FakeToucan(api_key=api_key, expires_in=expires_in, port=port).start()
    # A key given on the command line is not echoed (it may be a real one, by mistake).
    shown_key = api_key if api_key == "fake-key" else "<the --api-key you gave>"
    click.echo(f"FakeToucan listening on {server.url} (token endpoint, embed.js, MCP)")
    click.echo("Point your app at it: in the shell that runs your app,")
    click.echo(f"  export TOUCAN_BASE_URL={server.url}")
    click.echo(f"  export TOUCAN_API_KEY={shown_key}")
    click.echo("(or set both in app.config; TOUCAN_PREVIEW must be off). Ctrl-C to stop.")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
