"""``flask toucan doctor``: one check per line, each ✓ or ✗ with the fix in one sentence.

Never prints the API key or a token: the key is used only inside the client, and
the throw-away token minted to prove the endpoint works is dropped unseen.
"""

from __future__ import annotations

import secrets
import socket
import ssl
from collections.abc import Iterator
from urllib.parse import urlsplit

import requests
from flask import Flask

from .checks import redact_text
from .client import CLOCK_SKEW_WARNING, TokenClient, tls_failure
from .errors import ToucanError
from .identity import ToucanUser
from .instances import Instance
from .service import TokenService
from .settings import (
    bundle_context,
    ca_bundle,
    removed_keys,
    unknown_keys,
)

__all__ = ["run_checks"]

Check = tuple[bool, str]


def run_checks(app: Flask) -> Iterator[Check]:
    unknown = unknown_keys(app.config)
    for key, suggestion in unknown.items():
        hint = f"did you mean {suggestion}?" if suggestion else "remove it or fix its name"
        yield False, f"unknown config key {key}: {hint}"
    if not unknown:
        yield True, "no unknown TOUCAN_* keys"
    for key, replacement in removed_keys(app.config).items():
        yield False, f"config key {key} was removed and has no effect: {replacement}"
    state: TokenService = app.extensions["toucan"].service
    s = state.settings
    yield True, "configuration accepted" + (" (preview mode)" if s.preview else "")
    if app.extensions["toucan"].user_loader is not None:
        yield True, "a @toucan.user_loader is registered"
    else:
        yield (
            False,
            "no @toucan.user_loader: every page that needs a token fails on its first "
            "request; decorate a function that reads the signed-in user (e.g. Flask-Login's "
            "current_user) and returns a ToucanUser, or None when nobody is signed in",
        )
    if s.preview and s.api_key is not None:
        yield (
            False,
            "TOUCAN_PREVIEW is on while TOUCAN_API_KEY is set: pages show stand-ins and "
            "Toucan is never called; set TOUCAN_PREVIEW = False to use the key",
        )
    if len(state.variants.registry) and not app.secret_key:
        yield (
            False,
            (
                "SECRET_KEY is not set, but views use inject_token(role=..., permissions=...): "
                "set app.config['SECRET_KEY'] so their pages can refresh"
            ),
        )
    if not s.preview:
        for instance in [s.default_instance, *s.instances.values()]:
            yield from _instance_checks(state, instance)
    else:
        yield True, "preview mode: tokens are minted in process, no network to check"
    yield from _cache_checks(state)
    yield from _endpoint_checks(app, s.url_prefix)


def _instance_checks(state: TokenService, instance: Instance) -> Iterator[Check]:
    s = state.settings
    label = f" (instance {instance.name})" if instance.name else ""
    key = "TOUCAN_BASE_URL" if instance.name is None else f"TOUCAN_INSTANCES[{instance.name!r}]"
    url = instance.base_url + instance.token_path
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = (s.proxies or requests.utils.get_environ_proxies(url)).get(parts.scheme)
    if proxy:
        yield True, f"{host}{label}: reached through the proxy {_proxy_host(proxy)}"
    else:
        try:
            socket.getaddrinfo(host, port)
        except OSError:
            yield False, f"DNS: cannot resolve {host}{label}; check {key}"
            return
        yield True, f"DNS: {host}{label} resolves"
        try:
            sock = socket.create_connection((host, port), timeout=s.timeout[0])
        except OSError as exc:
            yield False, f"TCP: cannot connect to {host}:{port}{label} ({exc}); check {key}"
            return
        yield True, f"TCP: {host}:{port}{label} accepts connections"
        with sock:
            if parts.scheme == "https":
                try:
                    _tls(sock, host, s.verify)
                except (ssl.SSLError, OSError) as exc:
                    yield False, f"TLS{label}: {tls_failure(exc, host)}"
                    return
                yield True, f"TLS: {host}{label} has a certificate we trust"
            elif parts.scheme == "http":
                yield True, f"{host}{label}: plain http on loopback or allowed (TOUCAN_ALLOW_HTTP)"
    minter = state.minter(instance.name)
    probe = ToucanUser("flask-toucan-doctor-" + secrets.token_hex(4), instance=instance.name)
    try:
        token = minter.mint(probe)
    except ToucanError as exc:
        yield False, f"token endpoint{label}: {exc}"
        return
    yield (
        True,
        (
            f"token endpoint{label}: {redact_text(url)} minted a token with this key "
            f"(lifetime {round(token.lifetime or 0)} s; not printed)"
        ),
    )
    skew = minter.last_skew if isinstance(minter, TokenClient) else None
    if skew is None:
        yield True, f"clock{label}: Toucan sent no Date header to compare with"
    elif abs(skew) > CLOCK_SKEW_WARNING:
        yield (
            False,
            (
                f"clock{label}: this server's clock is {-skew:+.0f} s off Toucan's; "
                "fix its time sync (NTP)"
            ),
        )
    else:
        yield True, f"clock{label}: within {CLOCK_SKEW_WARNING:.0f} s of Toucan's ({-skew:+.1f} s)"


def _cache_checks(state: TokenService) -> Iterator[Check]:
    cache = state.store
    name = type(cache.backend).__name__
    probe = state.settings.cache_key_prefix + "doctor:" + secrets.token_hex(4)
    try:
        client = getattr(cache.backend, "client", None)
        if client is not None and hasattr(client, "ping"):
            client.ping()
        cache.backend.set(probe, "probe", timeout=30)
        value = cache.backend.get(probe)
        cache.backend.delete(probe)
        if cache.leases is not None:
            lease = cache.leases.acquire(probe + ":lock")
            if lease is None:
                raise RuntimeError("a fresh lease was reported as held")
            lease.release()
    except Exception as exc:
        yield (
            False,
            (f"cache backend {name}: {type(exc).__name__}: {exc}; check TOUCAN_CACHE_CONFIG"),
        )
        return
    if value not in ("probe", b"probe"):
        yield (
            False,
            f"cache backend {name}: a value written could not be read back; check "
            "TOUCAN_CACHE_CONFIG",
        )
        return
    leases = "with cross-process leases" if cache.leases is not None else "per-process locks"
    yield True, f"cache backend {name}: writes, reads and expires values ({leases})"


def _endpoint_checks(app: Flask, prefix: str) -> Iterator[Check]:
    from flask import url_for

    with app.test_request_context():
        try:
            path = url_for("toucan.refresh_token")
        except Exception:
            yield False, "refresh endpoint: not registered; check TOUCAN_URL_PREFIX"
            return
    adapter = app.url_map.bind("localhost")
    try:
        endpoint, _ = adapter.match(path, method="POST")
    except Exception:
        endpoint = None
    if endpoint != "toucan.refresh_token":
        yield False, f"refresh endpoint: POST {path} reaches {endpoint}; check TOUCAN_URL_PREFIX"
        return
    # Without the controller's header the endpoint refuses at once, in its own JSON (no
    # user is loaded, nothing is minted). A before_request hook that answers first
    # (Flask-WTF's CSRFProtect) would stop every refresh.
    answer = app.test_client().post(path, headers={"Sec-Fetch-Site": "same-origin"})
    body = answer.get_json(silent=True)
    if not isinstance(body, dict) or body.get("error") != "refresh_header_missing":
        hint = (
            "with Flask-WTF's CSRFProtect, exempt it: csrf.exempt(flask_toucan.views.refresh_token)"
            if "csrf" in app.extensions
            else "a before_request hook of the app answers it; let it through"
        )
        yield (
            False,
            (
                f"refresh endpoint: POST {path} is answered by something else (HTTP "
                f"{answer.status_code}) before it runs, so pages stop renewing tokens; {hint}"
            ),
        )
        return
    yield True, f"refresh endpoint: POST {path}, where toucan_script() points the controller"


def _tls(sock: socket.socket, host: str, verify: bool | str) -> None:
    bundle = ca_bundle(verify)
    context = bundle_context(bundle) if bundle else ssl.create_default_context()
    if not verify:  # TOUCAN_VERIFY = False: the app chose not to check; neither do we
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=True):
        pass


def _proxy_host(proxy: str) -> str:
    parts = urlsplit(proxy)
    return parts.hostname or proxy  # never a password in the URL
