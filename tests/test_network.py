"""Toucan as it really answers, through real networks: compression, proxies, private CAs,
slow drips, stalled handshakes, short and absurd lifetimes. Every case at every entry point."""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from flask import Flask

from flask_toucan import ToucanConfigError, ToucanResponseError, ToucanUnavailable
from flask_toucan.cli import toucan_cli
from flask_toucan.testing import FakeToucan, decode_fake_token

from .conftest import USERS, Clock
from .servers import free_port
from .test_faults import ENTRY_POINTS, call

DEADLINE = 1.5
SLACK = 1.0


def entry_points_and_cli(app: Flask) -> dict[str, Any]:
    """Status per entry point, and the CLI's exit code and output for `flask toucan check`."""
    results: dict[str, Any] = {entry: call(app, entry) for entry in ENTRY_POINTS}
    result = app.test_cli_runner().invoke(toucan_cli, ["check"])
    results["cli"] = (result.exit_code, result.output)
    return results


# -- compressed answers --------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_answers_are_decoded_everywhere(
    make_app: Callable[..., Flask], fake: FakeToucan, encoding: str
) -> None:
    fake.compress = encoding
    app = make_app(refresh_ahead=0)
    results = entry_points_and_cli(app)
    assert {results[e] for e in ENTRY_POINTS} == {200}
    assert results["cli"][0] == 0, results["cli"][1]
    assert len(fake.mints) == 2  # one for alice (cached), one forced by the CLI
    # The fake really compressed them.
    assert all(r.headers.get("Accept-Encoding") for r in fake.requests)


def test_a_decompression_bomb_is_a_response_error_in_bounded_memory(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    # 50 MB of JSON that gzips to about 50 KB, as a hostile or broken upstream might send.
    bomb = gzip.compress(b'{"token": "t", "padding": "' + b"0" * 50_000_000 + b'"}')
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    app = make_app()
    tracemalloc.start()
    try:
        for entry in ENTRY_POINTS:
            fake.fail(200, body=bomb, headers=headers)
            assert call(app, entry) == 502
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000, f"peak {peak / 1e6:.0f} MB"
    with app.app_context(), pytest.raises(ToucanResponseError, match="larger than"):
        fake.fail(200, body=bomb, headers=headers)
        app.extensions["test_toucan"].get_token(USERS["alice"])


def test_gzip_helper_matches_what_a_cdn_sends() -> None:
    # Guard for the fake: the body it sends is real gzip.
    assert gzip.decompress(gzip.compress(b'{"token": "t"}')) == b'{"token": "t"}'


# -- one deadline for a whole mint -------------------------------------------


@pytest.fixture
def slow_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(TOUCAN_MINT_DEADLINE=DEADLINE, TOUCAN_TIMEOUT=(1, 1), TOUCAN_MAX_RETRIES=2)


def test_header_drip_is_cut_at_the_deadline_everywhere(slow_app: Flask, fake: FakeToucan) -> None:
    for entry in [*ENTRY_POINTS, "cli"]:
        fake.fail(200, header_drip=0.4, times=3)
        started = time.monotonic()
        if entry == "cli":
            result = slow_app.test_cli_runner().invoke(toucan_cli, ["check"])
            assert result.exit_code == 1
            assert "TOUCAN_MINT_DEADLINE" in result.output
        else:
            assert call(slow_app, entry) == 503
        elapsed = time.monotonic() - started
        assert elapsed < DEADLINE + SLACK, f"{entry} took {elapsed:.1f}s"
        fake.reset()


def test_waiters_on_the_same_token_never_wait_past_the_deadline(
    slow_app: Flask, fake: FakeToucan
) -> None:
    fake.fail(200, header_drip=0.4, times=10)
    toucan = slow_app.extensions["test_toucan"]
    timings: list[float] = []
    errors: list[Exception] = []

    def one() -> None:
        started = time.monotonic()
        with slow_app.app_context():
            try:
                toucan.get_token(USERS["bob"])
            except ToucanUnavailable as exc:
                errors.append(exc)
        timings.append(time.monotonic() - started)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(errors) == 6
    assert max(timings) < DEADLINE + SLACK, timings
    assert len(fake.requests) <= 2  # single-flight held: the waiters did not all mint


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A server that accepts connections and never says a word (a stalled TLS handshake)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def test_stalled_tls_handshake_is_cut_at_the_deadline(
    make_app: Callable[..., Flask], silent_port: int
) -> None:
    app = make_app(
        TOUCAN_BASE_URL=f"https://127.0.0.1:{silent_port}",
        TOUCAN_MINT_DEADLINE=DEADLINE,
        TOUCAN_TIMEOUT=(5, 5),  # longer than the deadline: the deadline must win
    )
    for entry in ENTRY_POINTS:
        started = time.monotonic()
        assert call(app, entry) == 503
        assert time.monotonic() - started < DEADLINE + SLACK


# -- lifetimes -------------------------------------------------------------------


def test_five_minute_tokens_are_minted_once_per_lifetime(
    make_app: Callable[..., Flask], fake: FakeToucan, clock: Clock
) -> None:
    fake.expires_in = "5m"
    client = make_app().test_client()
    headers = {"X-User": "alice", "X-Toucan-Refresh": "1", "Sec-Fetch-Site": "same-origin"}
    for i in range(20):
        assert client.get("/page", headers={"X-User": "alice"}).status_code == 200
        if i % 4 == 3:
            assert client.post("/toucan/token", headers=headers).status_code == 200
        clock.advance(10)  # 200 s in all: inside the 225 s a 5-minute token is served
    assert len(fake.mints) == 1
    clock.advance(30)  # past 225 s: renewed
    client.get("/page", headers={"X-User": "alice"})
    assert len(fake.mints) == 2


@pytest.mark.parametrize("expires_in", [1e20, "99999y", "5000y", 10**30])
def test_absurd_lifetimes_are_capped_not_a_500(
    make_app: Callable[..., Flask], fake: FakeToucan, clock: Clock, expires_in: Any
) -> None:
    fake.expires_in = expires_in
    app = make_app()
    for entry in ENTRY_POINTS:
        assert call(app, entry) == 200
    with app.app_context():
        token = app.extensions["test_toucan"].get_token(USERS["alice"])
    assert token.expires_in <= 86400  # TOUCAN_MAX_TOKEN_LIFETIME


def test_clock_skew_is_warned_once(
    make_app: Callable[..., Flask], fake: FakeToucan, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    from flask_toucan import client as toucan_client

    toucan_client._warned_skew = False
    client = make_app().test_client()
    for name in ("alice", "bob"):
        client.get("/page", headers={"X-User": name})
    # The test clock is years ahead of the fake's Date header.
    warnings = [r for r in caplog.records if "check its time sync" in r.getMessage()]
    assert len(warnings) == 1
    # Expiry still counts from our clock.
    token = client.get("/page", headers={"X-User": "alice"}).text.split('auth-token="')[1]
    assert decode_fake_token(token.split('"')[0])["sub"] == "alice"


# -- private CA ------------------------------------------------------------------


def test_private_ca_fails_by_default_naming_toucan_verify(
    make_app: Callable[..., Flask], tls_fake: FakeToucan, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    app = make_app(TOUCAN_BASE_URL=tls_fake.url)
    results = entry_points_and_cli(app)
    assert {results[e] for e in ENTRY_POINTS} == {503}
    code, output = results["cli"]
    assert code == 1 and "TOUCAN_VERIFY" in output and "127.0.0.1" in output
    assert tls_fake.requests == []  # the TLS handshake failed: the key was never sent


def test_private_ca_works_with_toucan_verify(
    make_app: Callable[..., Flask], tls_fake: FakeToucan, ca_bundle: str
) -> None:
    app = make_app(TOUCAN_BASE_URL=tls_fake.url, TOUCAN_VERIFY=ca_bundle)
    results = entry_points_and_cli(app)
    assert {results[e] for e in ENTRY_POINTS} == {200}
    assert results["cli"][0] == 0


def test_private_ca_works_with_requests_ca_bundle(
    make_app: Callable[..., Flask],
    tls_fake: FakeToucan,
    ca_bundle: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_bundle)
    app = make_app(TOUCAN_BASE_URL=tls_fake.url)
    assert {call(app, e) for e in ENTRY_POINTS} == {200}


def test_wrong_ca_names_toucan_verify(
    make_app: Callable[..., Flask], tls_fake: FakeToucan, tmp_path: Path
) -> None:
    other = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    app = make_app(TOUCAN_BASE_URL=tls_fake.url, TOUCAN_VERIFY=str(other))
    with app.app_context(), pytest.raises(ToucanUnavailable, match="TOUCAN_VERIFY"):
        app.extensions["test_toucan"].get_token(USERS["alice"])
    assert tls_fake.requests == []


# -- a real forward proxy ----------------------------------------------------------


class TinyProxy:
    def __init__(self) -> None:
        binary = shutil.which("tinyproxy")
        if binary is None:
            pytest.fail(
                "tinyproxy is needed for the proxy tests: install Debian's tinyproxy package "
                "(scripts/test.sh does it when it can)",
                pytrace=False,
            )
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="toucan-proxy-")
        conf = Path(self.dir) / "tinyproxy.conf"
        conf.write_text(
            f"Port {self.port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 30\n"
            f'LogFile "{self.dir}/log"\nLogLevel Info\nMaxClients 20\nViaProxyName "toucanproxy"\n'
        )
        self.process = subprocess.Popen(
            [binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("tinyproxy did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(5)


@pytest.fixture
def proxy() -> Iterator[TinyProxy]:
    p = TinyProxy()
    yield p
    p.stop()


def via_proxy(fake: FakeToucan) -> list[bool]:
    return ["toucanproxy" in r.headers.get("Via", "") for r in fake.requests]


@pytest.fixture
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def test_http_proxy_from_the_environment(
    make_app: Callable[..., Flask], fake: FakeToucan, proxy: TinyProxy, clean_proxy_env: Any
) -> None:
    clean_proxy_env.setenv("HTTP_PROXY", proxy.url)
    app = make_app()
    assert {call(app, e) for e in ENTRY_POINTS} == {200}
    assert via_proxy(fake) and all(via_proxy(fake))


def test_no_proxy_bypasses_it(
    make_app: Callable[..., Flask], fake: FakeToucan, proxy: TinyProxy, clean_proxy_env: Any
) -> None:
    clean_proxy_env.setenv("HTTP_PROXY", proxy.url)
    clean_proxy_env.setenv("NO_PROXY", "127.0.0.1")
    app = make_app()
    assert call(app, "get_token") == 200
    assert via_proxy(fake) == [False]


def test_toucan_proxies_setting(
    make_app: Callable[..., Flask], fake: FakeToucan, proxy: TinyProxy, clean_proxy_env: Any
) -> None:
    app = make_app(TOUCAN_PROXIES={"http": proxy.url})
    assert call(app, "get_token") == 200
    assert via_proxy(fake) == [True]


def test_https_through_the_proxy_to_a_private_ca(
    make_app: Callable[..., Flask],
    tls_fake: FakeToucan,
    ca_bundle: str,
    proxy: TinyProxy,
    clean_proxy_env: Any,
) -> None:
    clean_proxy_env.setenv("HTTPS_PROXY", proxy.url)
    app = make_app(TOUCAN_BASE_URL=tls_fake.url, TOUCAN_VERIFY=ca_bundle)
    assert call(app, "get_token") == 200
    log = (Path(proxy.dir) / "log").read_text()
    assert f"CONNECT 127.0.0.1:{tls_fake.port}" in log


def test_a_dead_proxy_names_toucan_proxies(
    make_app: Callable[..., Flask], fake: FakeToucan, clean_proxy_env: Any
) -> None:
    app = make_app(TOUCAN_PROXIES={"http": f"http://127.0.0.1:{free_port()}"})
    with app.app_context(), pytest.raises(ToucanUnavailable, match="TOUCAN_PROXIES"):
        app.extensions["test_toucan"].get_token(USERS["alice"])


def test_netrc_credentials_are_never_sent(
    make_app: Callable[..., Flask], fake: FakeToucan, tmp_path: Path, clean_proxy_env: Any
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password netrc-secret\n")
    os.chmod(netrc, 0o600)
    clean_proxy_env.setenv("NETRC", str(netrc))
    app = make_app()
    assert call(app, "get_token") == 200
    assert "Authorization" not in fake.requests[0].headers


# -- plain http and messages that say where to look ---------------------------


@pytest.mark.parametrize("url", ["http://toucan.example.com", "http://10.0.0.5:8080"])
def test_plain_http_is_refused_unless_allowed(make_app: Callable[..., Flask], url: str) -> None:
    with pytest.raises(ToucanConfigError, match=r"in clear.*TOUCAN_ALLOW_HTTP"):
        make_app(TOUCAN_BASE_URL=url)
    app = make_app(TOUCAN_BASE_URL=url, TOUCAN_ALLOW_HTTP=True)
    assert app.config["TOUCAN_BASE_URL"] == url


@pytest.mark.parametrize("url", ["http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9"])
def test_loopback_http_is_fine(make_app: Callable[..., Flask], url: str) -> None:
    assert make_app(TOUCAN_BASE_URL=url).config["TOUCAN_BASE_URL"] == url


def test_wrong_base_url_names_the_host_and_key(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    app = make_app(TOUCAN_BASE_URL=f"http://127.0.0.1:{port}")
    results = entry_points_and_cli(app)
    assert {results[e] for e in ENTRY_POINTS} == {503}
    assert f"127.0.0.1:{port}" in results["cli"][1] and "TOUCAN_BASE_URL" in results["cli"][1]
    logged = [r.getMessage() for r in caplog.records if r.name == "flask_toucan"]
    assert any(f"127.0.0.1:{port}" in m and "TOUCAN_BASE_URL" in m for m in logged)


def test_extra_api_in_base_url_points_at_the_token_path(
    make_app: Callable[..., Flask], fake: FakeToucan, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(TOUCAN_BASE_URL=fake.url + "/api")
    results = entry_points_and_cli(app)
    assert {results[e] for e in ENTRY_POINTS} == {502}
    output = results["cli"][1]
    assert "/api/embed/generate-token" in output
    assert "TOUCAN_TOKEN_PATH" in output and "TOUCAN_BASE_URL" in output


def test_wrong_key_logs_check_toucan_api_key(
    make_app: Callable[..., Flask], fake: FakeToucan, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(TOUCAN_API_KEY="tk_wrong_key")
    results = entry_points_and_cli(app)
    assert {results[e] for e in ENTRY_POINTS} == {502}
    assert "TOUCAN_API_KEY" in results["cli"][1]
    logged = [r.getMessage() for r in caplog.records if r.name == "flask_toucan"]
    assert any("check TOUCAN_API_KEY" in m for m in logged)
