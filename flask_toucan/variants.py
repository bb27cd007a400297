"""Signed references to a page's role/permissions variant, for token refreshes.

A view decorated with ``@toucan.inject_token(role=..., permissions=...)`` renders
components whose token differs from the user's default one. The refresh endpoint
must renew that same variant, but must not let the browser choose a role or
permissions. So the page carries a reference signed with the app's SECRET_KEY
and bound to the user's distinct id; the endpoint accepts only such references.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

from .errors import InvalidVariant, ToucanConfigError
from .identity import ToucanUser

__all__ = ["TokenVariants"]

_SALT = "flask_toucan.token-variant"


class TokenVariants:
    def __init__(self, secret_key: Callable[[], Any]) -> None:
        self._secret_key = secret_key

    def _serializer(self) -> URLSafeSerializer:
        secret = self._secret_key()
        if not secret:
            raise ToucanConfigError(
                "SECRET_KEY is not set: flask_toucan needs it to let pages rendered with "
                "inject_token(role=..., permissions=...) refresh their tokens"
            )
        return URLSafeSerializer(secret, salt=_SALT)

    def sign(self, user: ToucanUser, overrides: Mapping[str, Any]) -> str:
        return str(self._serializer().dumps({"sub": user.distinct_id, **overrides}))

    def apply(self, reference: str, user: ToucanUser) -> ToucanUser:
        """``user`` with the signed overrides applied; InvalidVariant if forged or foreign."""
        try:
            data = self._serializer().loads(reference)
        except BadSignature:
            raise InvalidVariant("bad signature") from None
        if not isinstance(data, dict) or data.pop("sub", None) != user.distinct_id:
            raise InvalidVariant("not this user's variant")
        unknown = set(data) - {"role", "permissions"}
        if unknown:
            raise InvalidVariant("unknown fields")
        return user.replace(**data)
