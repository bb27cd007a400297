"""Preview mode's minter: tokens made in process, with no socket and no thread.

Preview tokens look like ``fake.<base64 JSON claims>.<random>``, the same format
:class:`~flask_toucan.testing.FakeToucan` issues: still opaque to the rest of
flask_toucan, but the preview components (and :func:`decode_fake_token`) can read
who each token was minted for.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from typing import Any

from .identity import ToucanUser
from .tokens import EmbedToken, now

__all__ = ["PreviewMinter", "decode_fake_token", "encode_fake_token", "stand_in_answer"]

#: The schema name of the assistant tool's answers, from Toucan's guide.
ENVELOPE_SCHEMA = "toucan-mcp-v1"


def encode_fake_token(
    payload: dict[str, Any], lifetime: int, issued_at: float, instance: str | None = None
) -> str:
    """A readable stand-in token for the identity in a token-request ``payload``."""
    user = payload["user"]
    claims = {
        "sub": user["distinctId"],
        "role": user["role"],
        "attributes": user["attributes"],
        "permissions": payload.get("permissions"),
        "iat": int(issued_at),
        "exp": int(issued_at) + lifetime,
    }
    if instance is not None:
        claims["instance"] = instance
    encoded = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode())
    return f"fake.{encoded.decode().rstrip('=')}.{secrets.token_urlsafe(12)}"


def decode_fake_token(token: str) -> dict[str, Any]:
    """The identity a preview or FakeToucan token was minted for."""
    try:
        _, payload, _ = token.split(".")
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, TypeError) as exc:
        raise ValueError("not a FakeToucan token") from exc
    if not isinstance(data, dict):
        raise ValueError("not a FakeToucan token")
    return data


class PreviewMinter:
    """Mints preview tokens of ``lifetime`` seconds for any user, instantly and offline."""

    def __init__(self, lifetime: int, instance: str | None = None) -> None:
        self.lifetime = lifetime
        self.instance = instance
        #: How many tokens were minted (the preview has no server to count them).
        self.minted = 0

    def mint(self, user: ToucanUser, *, deadline: float | None = None) -> EmbedToken:
        issued_at = now()
        value = encode_fake_token(user.to_payload(), self.lifetime, issued_at, self.instance)
        self.minted += 1
        return EmbedToken.from_lifetime(value, self.lifetime, issued_at)

    def key_fingerprint(self) -> str:
        return "preview"

    def __repr__(self) -> str:
        return f"PreviewMinter(lifetime={self.lifetime})"


def stand_in_answer(claims: dict[str, Any], question: str, thread_id: str | None) -> dict[str, Any]:
    """The stand-in assistant's answer to ``question``, asked with a token minted for
    ``claims``: a ``toucan-mcp-v1`` envelope whose text and chart follow the token's
    attributes, so Row-Level Security is visible offline (preview mode, FakeToucan)."""
    attributes = claims.get("attributes") or {}
    scope = ", ".join(f"{k} = {v}" for k, v in sorted(attributes.items())) or "no attributes"
    seed = hashlib.sha256(json.dumps([attributes, question], sort_keys=True).encode()).digest()
    labels = ["North", "South", "East", "West"]
    values = [100 + b % 900 for b in seed[: len(labels)]]
    title = f"{question.strip()[:80] or 'Answer'} ({scope})"
    return {
        "schema": ENVELOPE_SCHEMA,
        "answer": (
            f"**Stand-in answer** for `{claims.get('sub')}` ({scope}): "
            f"{labels[values.index(max(values))]} leads with {max(values)}."
        ),
        "visualizations": [
            {
                "type": "bar",
                "title": title,
                "series": [
                    {"name": label, "value": value}
                    for label, value in zip(labels, values, strict=True)
                ],
            }
        ],
        "threadId": thread_id or "thread-" + seed[8:16].hex(),
    }
