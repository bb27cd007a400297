from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, render_template_string
from flask_wtf import CSRFProtect

from flask_toucan import ToucanConfigError
from flask_toucan.testing import FakeToucan, decode_fake_token

from .conftest import Clock
from .markup import start_tags

SAME_SITE = {"X-Toucan-Refresh": "1", "Sec-Fetch-Site": "same-origin", "X-User": "alice"}


def refresh(client: Any, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
    return client.post("/toucan/token", headers=SAME_SITE if headers is None else headers, **kwargs)


def test_anonymous_is_401_json(client: Any, fake: FakeToucan) -> None:
    response = refresh(client, {"X-Toucan-Refresh": "1"})
    assert response.status_code == 401
    assert response.json["error"] == "session_ended"
    assert response.headers["Cache-Control"] == "private, no-store"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        # no custom header: what a cross-site form sends
        ({"X-User": "alice"}, "refresh_header_missing"),
        ({"X-User": "alice", "X-Toucan-Refresh": "yes"}, "refresh_header_missing"),
        ({"X-User": "alice", "X-Toucan-Refresh": "1", "Sec-Fetch-Site": "cross-site"}, "origin"),
        ({"X-User": "alice", "X-Toucan-Refresh": "1", "Sec-Fetch-Site": "same-site"}, "origin"),
        ({"X-User": "alice", "X-Toucan-Refresh": "1", "Origin": "https://evil.example"}, "origin"),
        ({"X-User": "alice", "X-Toucan-Refresh": "1", "Origin": "null"}, "origin"),
        # the scheme tolerance is for https pages on an http app, not the other way round
        ({"X-User": "alice", "X-Toucan-Refresh": "1", "Origin": "ftp://localhost"}, "origin"),
        # a foreign origin is refused even when it claims same-origin... by its Origin alone
        (
            {"X-User": "alice", "X-Toucan-Refresh": "1", "Origin": "https://localhost.evil"},
            "origin",
        ),
    ],
)
def test_cross_site_is_403(
    client: Any, fake: FakeToucan, headers: dict[str, str], code: str
) -> None:
    response = refresh(client, headers)
    assert response.status_code == 403
    assert response.json["error"] == (code if code != "origin" else "origin_refused")
    assert fake.requests == []


@pytest.mark.parametrize(
    "headers",
    [
        # A TLS-terminating proxy without ProxyFix: the page is https, Flask sees http.
        {"Origin": "https://localhost", "Sec-Fetch-Site": "same-origin"},
        {"Origin": "https://localhost"},
        {"Origin": "http://localhost"},
        {},  # no Origin at all (not a browser): the custom header is the defence
    ],
)
def test_same_site_behind_a_tls_proxy_is_accepted(
    client: Any, fake: FakeToucan, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    response = refresh(client, {"X-User": "alice", "X-Toucan-Refresh": "1", **headers})
    assert response.status_code == 200, response.json
    assert decode_fake_token(response.json["token"])["sub"] == "alice"


def test_scheme_mismatch_warns_once_naming_proxyfix(
    client: Any, fake: FakeToucan, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_toucan import views

    monkeypatch.setattr(views, "_warned_proxy", False)
    for _ in range(3):
        refresh(client, {"X-User": "alice", "X-Toucan-Refresh": "1", "Origin": "https://localhost"})
    warnings = [r.getMessage() for r in caplog.records if "ProxyFix" in r.getMessage()]
    assert len(warnings) == 1


def test_trusted_origins(make_app: Callable[..., Flask], fake: FakeToucan) -> None:
    client = make_app(TOUCAN_TRUSTED_ORIGINS=["https://app.example.com/"]).test_client()
    base = {"X-User": "alice", "X-Toucan-Refresh": "1"}
    ok = refresh(
        client, {**base, "Origin": "https://app.example.com", "Sec-Fetch-Site": "same-site"}
    )
    assert ok.status_code == 200
    assert refresh(client, {**base, "Origin": "https://other.example.com"}).status_code == 403


def test_bad_trusted_origins_name_the_key(make_app: Callable[..., Flask]) -> None:
    from flask_toucan import ToucanConfigError

    with pytest.raises(ToucanConfigError, match="TOUCAN_TRUSTED_ORIGINS"):
        make_app(TOUCAN_TRUSTED_ORIGINS=["app.example.com"])


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"[" * 4000, 400, "bad_request"),  # deep nesting: a RecursionError in json
        (b'{"variant": "abc"', 400, "bad_request"),
        (b'{"variant": ""}', 400, "bad_request"),
        (b"{not json", 400, "bad_request"),
        (b'{"variant": 7}', 400, "bad_request"),
        (b'["variant"]', 400, "bad_request"),
        (b"x" * 5000, 413, "body_too_large"),
    ],
)
def test_hostile_bodies_never_500(
    client: Any, fake: FakeToucan, body: bytes, status: int, code: str
) -> None:
    response = refresh(client, data=body, content_type="application/json")
    assert response.status_code == status
    assert response.json["error"] == code
    assert fake.requests == []


def test_user_is_checked_before_the_body_is_read(client: Any, fake: FakeToucan) -> None:
    read: list[int] = []

    class Counting:
        """A 50 MB body that records what is read of it (werkzeug seeks to size it)."""

        def __init__(self, size: int) -> None:
            self.size, self.pos = size, 0

        def tell(self) -> int:
            return self.pos

        def seek(self, offset: int, whence: int = 0) -> int:
            self.pos = offset if whence == 0 else self.size + offset
            return self.pos

        def read(self, n: int = -1) -> bytes:
            chunk = min(self.size - self.pos, 65536 if n < 0 else n)
            self.pos += chunk
            read.append(chunk)
            return b"x" * chunk

    size = 50 * 2**20
    response = client.post(
        "/toucan/token", headers={"X-Toucan-Refresh": "1"}, input_stream=Counting(size)
    )
    assert response.status_code == 401
    assert sum(read) == 0
    big = client.post("/toucan/token", headers=SAME_SITE, input_stream=Counting(size))
    assert big.status_code == 413
    assert sum(read) == 0  # refused on its declared length: nothing read


def test_same_origin_gets_token_with_no_store(client: Any, fake: FakeToucan, clock: Clock) -> None:
    response = refresh(client, {**SAME_SITE, "Origin": "http://localhost"})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "private, no-store"
    data = response.json
    assert set(data) == {"token", "expiresAt", "expiresIn"}
    assert data["expiresIn"] == 3600
    assert decode_fake_token(data["token"])["sub"] == "alice"


def test_token_is_for_the_server_side_user_whatever_the_body_says(
    client: Any, fake: FakeToucan
) -> None:
    hostile = {
        "user": {"distinctId": "bob", "role": "admin", "attributes": {"tenant": "globex"}},
        "distinct_id": "bob",
        "role": "admin",
        "permissions": {"database": "can_edit"},
        "variant": "not-a-signed-reference",
    }
    response = refresh(client, json=hostile)
    # A forged variant is refused outright; without it, the body is ignored.
    assert response.status_code == 403
    hostile.pop("variant")
    response = refresh(client, json=hostile)
    assert response.status_code == 200
    claims = decode_fake_token(response.json["token"])
    assert claims["sub"] == "alice"
    assert claims["role"] == "explorer"
    assert claims["attributes"] == {"tenant": "acme", "region": "EU"}
    assert claims["permissions"] is None


def test_reused_token_keeps_at_least_min_ttl(client: Any, fake: FakeToucan, clock: Clock) -> None:
    page = client.get("/page", headers={"X-User": "alice"})
    page_token = page.text.split('auth-token="')[1].split('"')[0]
    clock.advance(3600 - 400)
    reused = refresh(client).json
    assert reused["token"] == page_token
    assert reused["expiresIn"] >= 300
    clock.advance(101)  # 299 s left: too little, so a new one
    fresh = refresh(client).json
    assert fresh["token"] != page_token
    assert fresh["expiresIn"] == 3600
    assert len(fake.mints) == 2


def test_upstream_failure_is_json_503_without_vendor_body(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    client = make_app().test_client()
    fake.fail(503, body={"code": "boom", "message": "vendor internals"})
    response = refresh(client)
    assert response.status_code == 503
    assert response.json == {
        "error": "unavailable",
        "message": "analytics are unavailable",
    }
    assert "vendor internals" not in response.text


def components(html: str) -> list[dict[str, str | None]]:
    return [attrs for tag, attrs in start_tags(html) if tag.startswith("tc-")]


def test_signed_variant_renews_the_same_role_and_permissions(app: Flask, fake: FakeToucan) -> None:
    toucan = app.extensions["test_toucan"]

    @app.get("/ai")
    @toucan.inject_token(role="analyst", permissions={"ai": "can_query"}, allow=lambda: True)
    def ai() -> str:
        return render_template_string("{{ toucan_assistant() }}")

    client = app.test_client()
    variant = components(client.get("/ai", headers={"X-User": "alice"}).text)[0][
        "data-toucan-variant"
    ]
    assert variant
    response = refresh(client, json={"variant": variant})
    claims = decode_fake_token(response.json["token"])
    assert claims["role"] == "analyst"
    assert claims["permissions"] == {"ai": "can_query"}
    assert len(fake.mints) == 1  # same identity as the page: reused
    # Another user cannot use alice's reference.
    stolen = refresh(client, {**SAME_SITE, "X-User": "bob"}, json={"variant": variant})
    assert stolen.status_code == 403
    # A tampered reference is refused.
    # (One full base64 character of the signature changed: the last one also carries
    # padding bits, so changing it could leave the signature intact.)
    swapped = "A" if variant[-5] != "A" else "B"
    tampered = refresh(client, json={"variant": variant[:-5] + swapped + variant[-4:]})
    assert tampered.status_code == 403


def test_plain_pages_carry_no_variant(client: Any) -> None:
    page = components(client.get("/page", headers={"X-User": "alice"}).text)
    assert "data-toucan-variant" not in page[0]


@pytest.mark.parametrize("csrf_first", [True, False])
def test_with_flask_wtf_csrf_protect_the_exemption_is_explicit(
    config: dict[str, Any], fake: FakeToucan, csrf_first: bool
) -> None:
    from flask_toucan import Toucan
    from flask_toucan.views import refresh_token

    from .conftest import current_test_user

    def make(exempt: bool) -> Flask:
        app = Flask(__name__)
        app.config.update(config, TESTING=False, WTF_CSRF_ENABLED=True)
        csrf = CSRFProtect()
        if csrf_first:
            csrf.init_app(app)
        toucan = Toucan(app)
        if not csrf_first:
            csrf.init_app(app)
        if exempt:
            csrf.exempt(refresh_token)  # the documented call
        toucan.user_loader(current_test_user)

        @app.post("/form")
        def form() -> str:
            return "ok"

        return app

    # flask_toucan does not exempt itself behind the app's back: CSRFProtect refuses.
    silent = make(exempt=False).test_client()
    assert refresh(silent).status_code == 400
    assert not fake.mints

    client = make(exempt=True).test_client()
    # CSRFProtect still guards the app's own forms...
    assert client.post("/form").status_code == 400
    # ...while the exempted refresh endpoint relies on its own defence.
    assert refresh(client).status_code == 200
    assert refresh(client, {"X-User": "alice"}).status_code == 403


class Directory:
    """Who is an admin, changed by the tests while pages stay open."""

    def __init__(self) -> None:
        self.admins = {"alice"}


def admin_app(make_app: Callable[..., Flask], directory: Directory) -> Flask:
    from flask import request

    from flask_toucan import ToucanUser

    app = make_app()
    toucan = app.extensions["test_toucan"]

    @toucan.user_loader
    def load() -> ToucanUser | None:
        name = request.headers.get("X-User")
        if not name:
            return None
        tenant = request.headers.get("X-Tenant", "acme")
        return ToucanUser(name, attributes={"tenant": tenant})

    @app.get("/admin")
    @toucan.inject_token(
        role="admin",
        permissions={"dashboard": "can_edit"},
        allow=lambda: request.headers.get("X-User") in directory.admins,
    )
    def admin() -> str:
        return render_template_string("{{ toucan_dashboard('ops') }}")

    return app


def admin_reference(client: Any, user: str = "alice") -> str:
    page = client.get("/admin", headers={"X-User": user})
    assert page.status_code == 200
    reference = components(page.text)[0]["data-toucan-variant"]
    assert reference
    return str(reference)


def test_demoted_user_cannot_renew_the_admin_variant(
    make_app: Callable[..., Flask], fake: FakeToucan, clock: Clock
) -> None:
    directory = Directory()
    client = admin_app(make_app, directory).test_client()
    reference = admin_reference(client)
    ok = refresh(client, json={"variant": reference})
    assert ok.status_code == 200
    assert decode_fake_token(ok.json["token"])["role"] == "admin"
    mints = len(fake.mints)
    directory.admins.clear()  # demoted, with the page still open
    assert client.get("/admin", headers={"X-User": "alice"}).status_code == 403
    denied = refresh(client, json={"variant": reference})
    assert denied.status_code == 403
    assert denied.json["error"] == "access_revoked"
    assert len(fake.mints) == mints
    # The user's own default token is still theirs to renew.
    plain = refresh(client)
    assert plain.status_code == 200
    assert decode_fake_token(plain.json["token"])["role"] == "explorer"


def test_expired_reference_is_refused(
    make_app: Callable[..., Flask], fake: FakeToucan, clock: Clock
) -> None:
    from flask_toucan.variants import MAX_AGE

    client = admin_app(make_app, Directory()).test_client()
    reference = admin_reference(client)
    clock.advance(MAX_AGE - 60)
    assert refresh(client, json={"variant": reference}).status_code == 200
    clock.advance(120)
    mints = len(fake.mints)
    expired = refresh(client, json={"variant": reference})
    assert expired.status_code == 403
    assert expired.json["error"] == "variant_expired"
    assert len(fake.mints) == mints


def test_renewals_never_reach_past_the_max_age_from_render(
    make_app: Callable[..., Flask], fake: FakeToucan, clock: Clock
) -> None:
    """Each refresh hands back a newly signed reference, checked exactly as the first
    (identity, allow()), but all of them count from the page's render: past
    TOUCAN_VARIANT_MAX_AGE the page must be reloaded, whatever it renewed."""
    from flask_toucan.variants import MAX_AGE

    directory = Directory()
    client = admin_app(make_app, directory).test_client()
    reference = admin_reference(client)
    assert "variant" not in refresh(client).json  # a plain refresh has no reference
    for _hour in range(23):
        clock.advance(3600)
        renewed = refresh(client, json={"variant": reference})
        assert renewed.status_code == 200
        assert decode_fake_token(renewed.json["token"])["role"] == "admin"
        reference = renewed.json["variant"]
    # The renewed reference stays bound to alice...
    bob = refresh(client, {**SAME_SITE, "X-User": "bob"}, json={"variant": reference})
    assert bob.status_code == 403
    assert bob.json["error"] == "access_revoked"
    # ...and to the page's render: a day after it, even the newest one is expired.
    clock.advance(MAX_AGE - 23 * 3600 + 1)
    expired = refresh(client, json={"variant": reference})
    assert expired.status_code == 403
    assert expired.json["error"] == "variant_expired"
    # A reload (the view's own checks run again) starts a new day.
    again = admin_reference(client)
    assert refresh(client, json={"variant": again}).status_code == 200


def test_a_demoted_admin_is_refused_from_the_first_refresh_over_ten_days(
    make_app: Callable[..., Flask], fake: FakeToucan, clock: Clock
) -> None:
    directory = Directory()
    client = admin_app(make_app, directory).test_client()
    reference = admin_reference(client)
    clock.advance(3600)
    reference = refresh(client, json={"variant": reference}).json["variant"]
    directory.admins.clear()  # demoted
    for _day in range(10):
        denied = refresh(client, json={"variant": reference})
        assert denied.status_code == 403
        assert denied.json["error"] in ("access_revoked", "variant_expired")
        assert "variant" not in denied.json
        clock.advance(23 * 3600)


def test_a_reference_works_only_in_the_browser_session_it_was_rendered_for(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    """The same user, signed in from another browser (or after signing in again),
    cannot renew the variant with a reference taken from the first page."""
    app = admin_app(make_app, Directory())
    first = app.test_client()
    reference = admin_reference(first)
    assert refresh(first, json={"variant": reference}).status_code == 200
    other = app.test_client()  # another browser: its own session cookie
    admin_reference(other)
    replayed = refresh(other, json={"variant": reference})
    assert replayed.status_code == 403
    assert replayed.json["error"] == "access_revoked"
    # No cookie at all (a script replaying the reference elsewhere): refused too.
    bare = app.test_client()
    refused = refresh(bare, json={"variant": reference})
    assert refused.status_code == 403 and refused.json["error"] == "access_revoked"


def test_signing_in_again_ends_the_references_of_earlier_pages(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    from flask_login import LoginManager, UserMixin, login_user

    app = admin_app(make_app, Directory())
    manager = LoginManager(app)
    manager.user_loader(lambda uid: None)

    class Account(UserMixin):
        id = "alice"

    @app.post("/sign-in")
    def sign_in() -> str:
        login_user(Account())
        return "ok"

    client = app.test_client()
    reference = admin_reference(client)
    assert refresh(client, json={"variant": reference}).status_code == 200
    assert client.post("/sign-in", headers={"X-User": "alice"}).status_code == 200
    stale = refresh(client, json={"variant": reference})
    assert stale.status_code == 403 and stale.json["error"] == "access_revoked"
    assert refresh(client, json={"variant": admin_reference(client)}).status_code == 200


def test_the_reference_cannot_be_matched_against_guessed_identities(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    """Readable (signed, not encrypted), the reference carries no plain hash of the
    identity: guessing a server-side attribute offline finds nothing."""
    import hashlib

    from itsdangerous import URLSafeTimedSerializer

    from flask_toucan import ToucanUser

    client = admin_app(make_app, Directory()).test_client()
    reference = admin_reference(client)
    # Anyone can read it without the key (as an attacker with the page would).
    valid, claims = URLSafeTimedSerializer("not the key").loads_unsafe(reference)
    assert not valid and isinstance(claims, dict)
    guesses = [
        ToucanUser("alice", role=role, attributes={"tenant": tenant}).canonical
        for tenant in ("acme", "globex")
        for role in (None, "explorer")
    ]
    for guess in guesses:
        for prefix in (b"flask_toucan:identity:", b""):
            plain = hashlib.sha256(prefix + guess.encode()).hexdigest()
            assert claims["u"] != plain[:32]
    assert len(claims["u"]) == 32 and claims["s"] and claims["s"] != claims["u"]


def test_an_elevated_variant_cannot_be_defined_without_allow(
    make_app: Callable[..., Flask],
) -> None:
    toucan = make_app().extensions["test_toucan"]
    for overrides in ({"role": "admin"}, {"permissions": {"dashboard": "can_edit"}}):
        with pytest.raises(ToucanConfigError, match="needs allow="):
            toucan.inject_token(**overrides)
    # Saying so out loud is allowed.
    assert callable(toucan.inject_token(role="analyst", allow=lambda: True))


@pytest.mark.parametrize(
    "replay",
    [
        {"X-User": "bob"},  # another user, admin too
        {"X-User": "alice", "X-Tenant": "globex"},  # the same id in another tenant
    ],
)
def test_replayed_reference_is_refused(
    make_app: Callable[..., Flask], fake: FakeToucan, replay: dict[str, str]
) -> None:
    directory = Directory()
    directory.admins.add("bob")
    client = admin_app(make_app, directory).test_client()
    reference = admin_reference(client)
    mints = len(fake.mints)
    stolen = refresh(client, {"X-Toucan-Refresh": "1", **replay}, json={"variant": reference})
    assert stolen.status_code == 403
    assert stolen.json["error"] == "access_revoked"
    assert len(fake.mints) == mints


def test_forged_and_unknown_references(make_app: Callable[..., Flask], fake: FakeToucan) -> None:
    from itsdangerous import URLSafeTimedSerializer

    app = admin_app(make_app, Directory())
    client = app.test_client()
    reference = admin_reference(client)
    # Signed with the wrong key, or naming a variant no view registered.
    wrong_key = URLSafeTimedSerializer("guess", salt="flask_toucan.token-variant.v3")
    forged = wrong_key.dumps({"v": "x", "u": "y"})
    right_key = URLSafeTimedSerializer("test", salt="flask_toucan.token-variant.v3")
    unknown = right_key.dumps({"v": "no-such-variant", "u": "y"})
    for bad in (forged, unknown, reference + "x"):
        response = refresh(client, json={"variant": bad})
        assert response.status_code == 403
        assert response.json["error"] == "variant_invalid"
    assert len(fake.mints) == 1  # the page's own


def test_the_browser_never_carries_role_or_permissions(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    client = admin_app(make_app, Directory()).test_client()
    page = client.get("/admin", headers={"X-User": "alice"}).text
    reference = admin_reference(client)
    assert "admin" not in page.replace("/admin", "") and "can_edit" not in page
    assert "admin" not in reference and "can_edit" not in reference


def test_a_streamed_variant_page_can_refresh(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    """The session binding is made before the view runs: a streamed page has sent its
    headers, session cookie included, before its components render."""
    from flask import stream_template_string

    app = admin_app(make_app, Directory())
    toucan = app.extensions["test_toucan"]

    @app.get("/streamed")
    @toucan.inject_token(role="admin", allow=lambda: True)
    def streamed() -> Any:
        return stream_template_string("<main>{{ toucan_dashboard('ops') }}</main>")

    client = app.test_client()
    page = client.get("/streamed", headers={"X-User": "alice"})
    reference = components(page.get_data(as_text=True))[0]["data-toucan-variant"]
    answer = refresh(client, json={"variant": reference})
    assert answer.status_code == 200, answer.json
    assert decode_fake_token(answer.json["token"])["role"] == "admin"


def test_doctor_names_the_csrf_exemption_when_csrfprotect_refuses_the_endpoint(
    config: dict[str, Any], fake: FakeToucan
) -> None:
    from flask_toucan import Toucan
    from flask_toucan.doctor import run_checks
    from flask_toucan.views import refresh_token

    app = Flask(__name__)
    app.config.update(config, TESTING=False, WTF_CSRF_ENABLED=True)
    csrf = CSRFProtect(app)
    Toucan(app).user_loader(lambda: None)
    with app.app_context():
        failed = [line for ok, line in run_checks(app) if not ok]
    assert any(
        "refresh endpoint" in line and "csrf.exempt(flask_toucan.views.refresh_token)" in line
        for line in failed
    ), failed
    csrf.exempt(refresh_token)
    with app.app_context():
        lines = [line for ok, line in run_checks(app) if ok]
    assert any(line.startswith("refresh endpoint: POST /toucan/token") for line in lines)
