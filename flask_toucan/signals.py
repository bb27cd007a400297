"""Blinker signals, Flask's own mechanism, so operators can see what flask_toucan does.

The sender is always the app. No keyword argument ever holds a token, an API key or
raw attributes: users are named by ``identity``, a short one-way digest of their
whole identity (the same for the same user, unreadable otherwise).

``token_minted``
    A new token came from Toucan (or the preview minter).
    ``identity``, ``instance`` (a TOUCAN_INSTANCES name or None), ``duration``
    (seconds the mint took), ``lifetime`` (seconds the token lives).
``mint_failed``
    A mint failed. ``identity``, ``instance``, ``duration``, ``error`` (the
    exception's class name, e.g. ``"ToucanUnavailable"``).
``token_served``
    A token was handed to a page, a helper, the refresh endpoint or ``get_token``.
    ``identity``, ``instance``, ``source``: ``"request"`` (this request's token again),
    ``"front"`` (in-process front cache), ``"shared"`` (the cache backend),
    ``"minted"`` (just minted), ``"stale"`` (a cached token past its refresh-ahead
    point, served while it is renewed or while renewing fails).
``token_refreshed``
    The refresh endpoint answered. ``status`` (HTTP status), ``code`` (the error code
    of a refusal, or None on success).

With no receivers connected, sending costs one attribute check (benchmarked).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from blinker import Namespace

from .identity import ToucanUser, identity_digest
from .tokens import EmbedToken, Minter

__all__ = [
    "mint_failed",
    "observed_mint",
    "served",
    "token_minted",
    "token_refreshed",
    "token_served",
]

_signals = Namespace()

token_minted = _signals.signal("toucan-token-minted")
mint_failed = _signals.signal("toucan-mint-failed")
token_served = _signals.signal("toucan-token-served")
token_refreshed = _signals.signal("toucan-token-refreshed")


def observed_mint(state: Any, minter: Minter, user: ToucanUser) -> Callable[[float], EmbedToken]:
    """``minter.mint`` for ``user``, reported through the token_minted / mint_failed signals
    (it may run in a background thread: the app is taken from the state, not the context)."""

    def mint(deadline: float) -> EmbedToken:
        started = time.monotonic()
        try:
            token = minter.mint(user, deadline=deadline)
        except Exception as exc:
            if mint_failed.receivers:
                mint_failed.send(
                    state.app(),
                    identity=identity_digest(user),
                    instance=user.instance,
                    duration=time.monotonic() - started,
                    error=type(exc).__name__,
                )
            raise
        if token_minted.receivers:
            token_minted.send(
                state.app(),
                identity=identity_digest(user),
                instance=user.instance,
                duration=time.monotonic() - started,
                lifetime=token.lifetime,
            )
        return token

    return mint


def served(state: Any, user: ToucanUser, source: str) -> None:
    if token_served.receivers:
        token_served.send(
            state.app(), identity=identity_digest(user), instance=user.instance, source=source
        )
