"""Per-app and per-request state of the extension (no Flask imports)."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from .cache import TokenCache
from .client import TokenClient
from .errors import ToucanAPIError
from .settings import Settings
from .tokens import EmbedToken, ToucanUser, cache_key, key_fingerprint
from .variants import TokenVariants

if TYPE_CHECKING:
    from .extension import Toucan

__all__ = ["AppState", "RequestState"]


class AppState:
    """What the extension keeps for one app, in ``app.extensions["toucan"]``."""

    def __init__(
        self, toucan: Toucan, settings: Settings, cache: TokenCache, variants: TokenVariants
    ) -> None:
        self.toucan = toucan
        self.settings = settings
        self.cache = cache
        self.variants = variants
        self._lock = threading.Lock()
        self._client: TokenClient | None = None
        self._pid = 0
        self.preview_fake: Any = None  # a FakeToucan in preview mode
        self._key_fingerprint = key_fingerprint(settings.api_key or "preview")
        self._key_base = "preview:" if settings.preview else settings.base_url
        self.urls: dict[tuple[Any, ...], str] = {}  # url_for results, by script root
        self.script_memo: tuple[tuple[Any, ...] | None, Markup] = (None, Markup(""))

    def client(self) -> TokenClient:
        # Built on first use in each process: a requests.Session (or the preview
        # server's thread) made before a gunicorn fork must not be shared.
        pid = os.getpid()
        if self._client is None or self._pid != pid:
            with self._lock:
                if self._client is None or self._pid != pid:
                    self._client = self._make_client()
                    self._pid = pid
        return self._client

    def _make_client(self) -> TokenClient:
        s = self.settings
        if s.preview:
            from .testing import FakeToucan

            self.preview_fake = FakeToucan(expires_in=s.preview_token_lifetime).start()
            base_url, api_key = self.preview_fake.url, self.preview_fake.api_key
        else:
            assert s.api_key is not None
            base_url, api_key = s.base_url, s.api_key
        return TokenClient(
            base_url,
            api_key,
            token_path=s.token_path if not s.preview else "/embed/generate-token",
            timeout=s.timeout,
            max_retries=s.max_retries,
        )

    def key_for(self, user: ToucanUser) -> str:
        s = self.settings
        return cache_key(s.cache_key_prefix, self._key_base, self._key_fingerprint, user)


class RequestState:
    """What the extension keeps for one request, in ``g._toucan_request``.

    One object instead of several ``g`` attributes: every ``g`` access goes
    through a context-local proxy, and helpers run several times per page.
    """

    __slots__ = (
        "app_state", "error", "loaded", "no_store", "token", "tokens", "user", "variant"
    )  # fmt: skip

    def __init__(self, app_state: AppState) -> None:
        self.app_state = app_state
        self.loaded = False
        self.user: ToucanUser | None = None
        self.tokens: dict[str, EmbedToken] = {}
        self.token: EmbedToken | None = None  # the decorated view's token
        self.variant: tuple[ToucanUser, dict[str, Any]] | None = None
        self.no_store = False
        self.error: ToucanAPIError | None = None  # a failed mint, in placeholder mode
