"""Toucan's MCP endpoint handed to any agent framework as the signed-in user:
``toucan.mcp_connection()`` (url, an auth for httpx and httpx2 clients, headers), the
bound on fresh mints after a refusal, no token across origins, progress notifications,
and both majors of the MCP SDK."""

from __future__ import annotations

import asyncio
import importlib
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_toucan import ToucanAuthError, ToucanUserRequired
from flask_toucan.mcp import MCP_MAJOR
from flask_toucan.testing import FakeToucan, decode_fake_token

from .conftest import API_KEY, USERS
from .test_mcp import bearer_of, toucan_of

ROOT = Path(__file__).resolve().parent.parent

#: The HTTP libraries an agent framework may build its client on (at least one here).
HTTP_LIBRARIES = [
    name for name in ("httpx", "httpx2") if importlib.util.find_spec(name) is not None
]


def _subject(token: str) -> str:
    return str(decode_fake_token(token)["sub"])


# -- mcp_connection -----------------------------------------------------------------------


@pytest.mark.parametrize("library", HTTP_LIBRARIES)
def test_the_connections_auth_works_in_httpx_and_httpx2_clients(
    make_app: Callable[..., Flask], fake: FakeToucan, library: str
) -> None:
    http: Any = importlib.import_module(library)
    app = make_app()
    with app.test_request_context(headers={"X-User": "alice"}):
        conn = toucan_of(app).mcp_connection()
    # The request has ended: the connection keeps working (a streamed answer, a task).
    assert conn.url == fake.mcp_url
    assert isinstance(conn.auth, http.Auth)

    async def call() -> list[int]:
        async with http.AsyncClient(auth=conn.auth) as client:
            first = await client.get(fake.url + "/api/v1/dashboards/sales")
            fake.revoke()  # mid-conversation: Toucan refuses the token from now on
            second = await client.get(fake.url + "/api/v1/dashboards/ops")
            return [first.status_code, second.status_code]

    assert asyncio.run(call()) == [200, 200]
    assert len(fake.mints) == 2  # the first token, then one fresh mint after the 401
    rest = [r for r in fake.requests if r.path.startswith("/api/v1/")]
    assert [_subject(bearer_of(r)) for r in rest] == ["alice", "alice", "alice"]
    assert bearer_of(rest[2]) == fake.tokens_issued[1]
    for r in rest:
        assert "x-api-key" not in {name.lower() for name in r.headers}
        assert API_KEY not in repr(r.headers)
    # A sync client takes it too.
    with http.Client(auth=conn.auth) as client:
        assert client.get(fake.url + "/api/v1/dashboards/sales").status_code == 200


def test_the_connection_resolves_the_user_when_made(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    toucan = toucan_of(app)
    with app.test_request_context(), pytest.raises(ToucanUserRequired):
        toucan.mcp_connection()
    with app.test_request_context(headers={"X-User": "carol"}):
        conn = toucan.mcp_connection()
    with app.test_request_context(headers={"X-User": "alice"}):
        # Another user's request later: the connection stays carol's.
        headers = conn.headers()
    assert set(headers) == {"Authorization"}
    assert _subject(headers["Authorization"].removeprefix("Bearer ")) == "carol"
    # Nothing of the token in its repr or str.
    token = headers["Authorization"].removeprefix("Bearer ")
    for shown in (repr(conn), str(conn), repr(conn.auth), str(conn.auth)):
        assert token not in shown and API_KEY not in shown
        assert "hidden" in shown


def test_headers_follow_the_cache_so_refresh_ahead_keeps_them_fresh(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    toucan = toucan_of(app)
    with app.app_context():
        conn = toucan.mcp_connection(user=USERS["alice"])
        first = conn.headers()["Authorization"]
        toucan.invalidate(USERS["alice"])  # as if renewed: the cache holds another token
        second = conn.headers()["Authorization"]
    assert first != second
    assert second == f"Bearer {fake.tokens_issued[1]}"


@pytest.mark.parametrize("library", HTTP_LIBRARIES)
def test_the_auth_sends_no_token_to_another_origin_and_mints_nothing_for_it(
    make_app: Callable[..., Flask], fake: FakeToucan, library: str
) -> None:
    http: Any = importlib.import_module(library)
    app = make_app()
    with app.app_context():
        conn = toucan_of(app).mcp_connection(user=USERS["alice"])
    with FakeToucan() as elsewhere:

        async def call() -> tuple[int, int]:
            async with http.AsyncClient(auth=conn.auth, follow_redirects=True) as client:
                direct = await client.get(elsewhere.url + "/api/v1/dashboards/sales")
                # The instance redirects to another host, which answers 401.
                fake.fail(
                    302,
                    headers={"Location": elsewhere.url + "/api/v1/dashboards/x"},
                    path="/api/v1/",
                )
                redirected = await client.get(fake.url + "/api/v1/dashboards/sales")
                return direct.status_code, redirected.status_code

        assert asyncio.run(call()) == (401, 401)
        assert elsewhere.requests
        for r in elsewhere.requests:
            assert "Authorization" not in r.headers and "x-api-key" not in r.headers
    # Our origin got the token once; the other host's 401 caused no fresh mint.
    assert len(fake.mints) == 1
    rest = [r for r in fake.requests if r.path.startswith("/api/v1/")]
    assert [_subject(bearer_of(r)) for r in rest] == ["alice"]


def test_api_session_sends_no_token_after_a_redirect_to_another_host(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    with app.app_context():
        session = toucan_of(app).api_session(user=USERS["alice"])
    with FakeToucan() as elsewhere:
        fake.fail(
            302, headers={"Location": elsewhere.url + "/api/v1/dashboards/x"}, path="/api/v1/"
        )
        answer = session.get("/api/v1/dashboards/sales")
        assert answer.status_code == 401  # the other host's answer, as it is
        assert len(elsewhere.requests) == 1
        assert "Authorization" not in elsewhere.requests[0].headers
    assert len(fake.mints) == 1  # the token sent to the instance; no fresh mint after


# -- at most one fresh mint per identity per window ----------------------------------------


def test_refused_questions_cost_one_fresh_mint_per_identity_per_window(
    make_app: Callable[..., Flask], fake: FakeToucan, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    toucan = toucan_of(app)
    fake.fail(401, times=100, path="/api/mcp")
    with app.app_context():
        for _ in range(5):
            with pytest.raises(ToucanAuthError):
                toucan.ask("What sold best?", user=USERS["alice"])
    # alice's cached token, then one fresh mint: not one per click.
    assert [_subject(t) for t in fake.tokens_issued] == ["alice", "alice"]
    fake.reset()
    with app.app_context():
        # Another user is not held back by alice's window.
        answer = toucan.ask("What sold best?", user=USERS["carol"])
    assert "carol" in answer.text
    # Past the window, one fresh mint again.
    import flask_toucan.service as service_module

    monkeypatch.setattr(service_module, "REMINT_WINDOW", 0.0)
    fake.fail(401, times=100, path="/api/mcp")
    with app.app_context(), pytest.raises(ToucanAuthError):
        toucan.ask("What sold best?", user=USERS["alice"])
    assert [_subject(t) for t in fake.tokens_issued] == ["carol", "alice"]


def test_inside_the_window_the_refusal_says_why_without_minting(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    toucan = toucan_of(app)
    fake.fail(401, times=100, path="/api/mcp")
    with app.app_context():
        with pytest.raises(ToucanAuthError, match="even freshly minted"):
            toucan.ask("q", user=USERS["alice"])
        minted = len(fake.mints)
        with pytest.raises(ToucanAuthError, match=r"at most one fresh mint per 30 s") as caught:
            toucan.ask("q", user=USERS["alice"])
    assert len(fake.mints) == minted
    assert "TOUCAN_MCP_URL" in str(caught.value)
    assert caught.value.code == 502


# -- progress notifications ---------------------------------------------------------------


def test_ask_reports_progress_before_the_answer(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    seen: list[tuple[float, float | None, str | None]] = []
    with app.app_context():
        answer = toucan_of(app).ask(
            "What sold best?",
            user=USERS["alice"],
            on_progress=lambda p, total, message: seen.append((p, total, message)),
        )
    assert seen == [
        (0.2, 1.0, "reading the question"),
        (0.5, 1.0, "querying the data"),
        (0.8, 1.0, "drawing the chart"),
    ]
    assert "alice" in answer.text


def test_ask_async_takes_an_async_progress_callback(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    seen: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        await asyncio.sleep(0)
        seen.append(message)

    async def ask() -> Any:
        with app.app_context():
            return await toucan_of(app).ask_async(
                "What sold best?", user=USERS["carol"], on_progress=on_progress
            )

    answer = asyncio.run(ask())
    assert seen == ["reading the question", "querying the data", "drawing the chart"]
    assert "carol" in answer.text


def test_a_raising_progress_callback_loses_no_answer_and_is_logged_once(
    make_app: Callable[..., Flask], fake: FakeToucan, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()

    def broken(progress: float, total: float | None, message: str | None) -> None:
        raise RuntimeError("the chat's socket is gone")

    with caplog.at_level(logging.ERROR, "flask_toucan"), app.app_context():
        answer = toucan_of(app).ask("What sold best?", user=USERS["alice"], on_progress=broken)
    assert "alice" in answer.text
    logged = [r for r in caplog.records if "on_progress" in r.getMessage()]
    assert len(logged) == 1


# -- the SDK's versions -------------------------------------------------------------------


def test_the_installed_sdk_major_is_one_we_support() -> None:
    import mcp

    assert MCP_MAJOR in (1, 2)
    assert mcp is not None


def _import_with_fake_sdk(tmp_path: Path, version: str | None) -> str:
    """Import flask_toucan.mcp in a subprocess that sees an ``mcp`` of ``version`` (None:
    no MCP SDK at all) ahead of the real one; what it raised."""
    if version is not None:
        (tmp_path / "mcp").mkdir()
        (tmp_path / "mcp" / "__init__.py").write_text("")
        info = tmp_path / f"mcp-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: mcp\nVersion: {version}\n")
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        {"sys.modules['mcp'] = None" if version is None else ""}
        import importlib.metadata as md
        if {version is None!r}:
            real = md.version
            def version(name):
                if name == "mcp":
                    raise md.PackageNotFoundError(name)
                return real(name)
            md.version = version
        try:
            import flask_toucan.mcp
        except ImportError as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    return done.stdout.strip() + done.stderr.strip()


def test_a_missing_sdk_names_the_extra(tmp_path: Path) -> None:
    said = _import_with_fake_sdk(tmp_path, None)
    assert 'pip install "flask-toucan[mcp]"' in said
    assert "Traceback" not in said


@pytest.mark.parametrize("version", ["1.10.0", "3.0.0"])
def test_an_unsupported_sdk_names_its_version_and_the_range(tmp_path: Path, version: str) -> None:
    said = _import_with_fake_sdk(tmp_path, version)
    assert f"mcp {version}" in said
    assert ">=1.24,<3" in said
    assert "Traceback" not in said
