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

With no receivers connected, sending costs one attribute check (benchmarked). Signals are
sent after the token is stored; a receiver that raises is logged and changes nothing.
"""

from __future__ import annotations

from blinker import Namespace

__all__ = [
    "mint_failed",
    "token_minted",
    "token_refreshed",
    "token_served",
]

_signals = Namespace()

token_minted = _signals.signal("toucan-token-minted")
mint_failed = _signals.signal("toucan-mint-failed")
token_served = _signals.signal("toucan-token-served")
token_refreshed = _signals.signal("toucan-token-refreshed")
