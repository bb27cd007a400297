"""Role/permission variants of a page, and the signed references their refreshes carry.

``@toucan.inject_token(role=..., permissions=..., allow=...)`` registers a
:class:`Variant` for the decorated view. The page's components carry only a
reference to it: the variant's name, keyed digests of the user's whole identity (id,
role, attributes, permissions) and of the browser session, signed with the app's
``SECRET_KEY`` and timestamped with the page's render. A variant changes what a user may see, so it
must have an ``allow`` gate (``allow=lambda: True`` says "every signed-in user" out
loud). The refresh endpoint renews a variant only when the reference is genuine,
its page was rendered less than ``TOUCAN_VARIANT_MAX_AGE`` seconds ago, the current
user has exactly that identity in the same session (a sign-in starts a new one), and
``allow()`` still says yes. Past that age the
page must be reloaded, which runs the view's own checks (``@admin_required``...)
again: a demoted user cannot keep an elevated variant alive by refreshing. The
browser never names a role or permissions: they are looked up here, on the server.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from .errors import InvalidVariant, ToucanConfigError
from .identity import ToucanUser, derive_key, identity_digest
from .tokens import now

__all__ = ["MAX_AGE", "MAX_VARIANTS", "TokenVariants", "Variant", "VariantRegistry"]

#: The default of TOUCAN_VARIANT_MAX_AGE: seconds after a page's render during which its
#: variant components keep renewing (then ``toucan:access-revoked``, until reloaded).
MAX_AGE = 24 * 3600
#: Variants one extension may register: one per decorated view, so far above any app.
MAX_VARIANTS = 1000

_SALT = "flask_toucan.token-variant.v3"
#: What a reference this app signed looks like (itsdangerous' URL-safe form), bounded.
_REFERENCE = re.compile(r"[A-Za-z0-9_.\-]{1,1024}")


@dataclass(frozen=True)
class Variant:
    """One decorated view's token variant."""

    name: str
    overrides: Mapping[str, Any]
    allow: Callable[[], bool] | None = None

    def allowed(self) -> bool:
        """``allow()`` for the current request (True when the view has none)."""
        return self.allow is None or bool(self.allow())

    def apply(self, user: ToucanUser) -> ToucanUser:
        return user.replace(**self.overrides) if self.overrides else user


class VariantRegistry:
    """The variants of one ``Toucan`` instance, by name (bounded)."""

    def __init__(self) -> None:
        self._variants: dict[str, Variant] = {}

    def register(
        self,
        view: Callable[..., Any],
        overrides: Mapping[str, Any],
        allow: Callable[[], bool] | None,
    ) -> Variant:
        if allow is not None and not callable(allow):
            raise TypeError("inject_token(allow=...) takes a zero-argument callable")
        ToucanUser("check", **overrides)  # a bad role or permissions fails at import time
        material = repr((view.__module__, view.__qualname__, sorted(overrides.items())))
        name = hashlib.sha256(material.encode()).hexdigest()[:16]
        if name not in self._variants and len(self._variants) >= MAX_VARIANTS:
            raise ToucanConfigError(f"more than {MAX_VARIANTS} inject_token variants registered")
        variant = self._variants[name] = Variant(name, dict(overrides), allow)
        return variant

    def get(self, name: object) -> Variant | None:
        return self._variants.get(name) if isinstance(name, str) else None

    def __len__(self) -> int:
        return len(self._variants)


class _Signer(TimestampSigner):
    def get_timestamp(self) -> int:
        return int(now())  # flask_toucan's clock, which tests can move


class _Serializer(URLSafeTimedSerializer):
    default_signer = _Signer


class TokenVariants:
    """Signs and checks variant references with one app's ``SECRET_KEY``, against the
    ``registry`` of the views that declared them."""

    def __init__(
        self, secret_key: Callable[[], Any], registry: VariantRegistry, max_age: int = MAX_AGE
    ) -> None:
        self._secret_key = secret_key
        self.registry = registry
        self.max_age = max_age

    def _secret(self) -> Any:
        secret = self._secret_key()
        if not secret:
            raise ToucanConfigError(
                "SECRET_KEY is not set: flask_toucan needs it to let pages rendered with "
                "inject_token(role=..., permissions=...) refresh their tokens"
            )
        return secret

    def _serializer(self) -> _Serializer:
        return _Serializer(self._secret(), salt=_SALT)

    def _identity(self, user: ToucanUser) -> str:
        return identity_digest(user, derive_key(self._secret(), "variant-identity"))

    def _session(self, session_id: str | None) -> str | None:
        if session_id is None:
            return None
        key = derive_key(self._secret(), "variant-session")
        return hmac.new(key, session_id.encode(), hashlib.sha256).hexdigest()[:32]

    def sign(self, variant: Variant, user: ToucanUser, session_id: str | None = None) -> str:
        """The reference a page carries for ``variant``, bound to ``user`` (before
        overrides) and to the browser session ``session_id`` it was rendered for."""
        claims = {
            "v": variant.name,
            "u": self._identity(user),
            "s": self._session(session_id),
            "r": int(now()),
        }
        return str(self._serializer().dumps(claims))

    def renew(self, reference: str) -> str:
        """``reference`` (already resolved) signed anew: same variant, same identity, same
        render time (renewing never extends the page's ``max_age``)."""
        serializer = self._serializer()
        return str(serializer.dumps(serializer.loads(reference)))

    def resolve(self, reference: str, user: ToucanUser, session_id: str | None = None) -> Variant:
        """The variant ``reference`` names, if it is genuine, fresh, ``user``'s, and
        asked for from the browser session it was rendered for."""
        # Only the exact text we signed: base64 decoding would skip characters outside
        # its alphabet, so a reference with junk added would otherwise still verify.
        if not isinstance(reference, str) or not _REFERENCE.fullmatch(reference):
            raise InvalidVariant("variant_invalid", "not a reference this app signed")
        try:
            data, signed_at = self._serializer().loads(
                reference, max_age=self.max_age, return_timestamp=True
            )
        except SignatureExpired:
            raise InvalidVariant("variant_expired", "the page is too old; reload it") from None
        except BadSignature:
            raise InvalidVariant("variant_invalid", "not a reference this app signed") from None
        variant = self.registry.get(data.get("v")) if isinstance(data, dict) else None
        if variant is None:
            raise InvalidVariant("variant_invalid", "no such variant")
        rendered = data.get("r", signed_at.timestamp())
        if not isinstance(rendered, (int, float)) or now() - rendered > self.max_age:
            raise InvalidVariant("variant_expired", "the page is too old; reload it")
        if data.get("u") != self._identity(user):
            raise InvalidVariant("access_revoked", "the reference belongs to another identity")
        if data.get("s") != self._session(session_id):
            raise InvalidVariant("access_revoked", "the reference belongs to another session")
        return variant
