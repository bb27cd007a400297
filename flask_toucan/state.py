"""What the extension keeps per app (``app.extensions["toucan"]``) and per request (``g``),
and the token path both share: ``AppState.token``."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

from cachelib.simple import SimpleCache

from . import signals
from .backends import FrontCache
from .cache import TokenCache
from .client import TokenClient, default_deadline
from .coordination import leases_for
from .errors import ToucanConfigError
from .identity import ToucanUser, cache_key, check_required
from .instances import Instance
from .preview import PreviewMinter
from .settings import Settings
from .tokens import EmbedToken, Minter
from .variants import TokenVariants, Variant

__all__ = ["AppState", "RequestState"]

_UNSET: Any = object()  # RequestState.instance before the page picked one


class AppState:
    """What the extension keeps for one app, in ``app.extensions["toucan"]``."""

    def __init__(
        self,
        toucan: Any,  # the Toucan instance (typed loosely: it imports us)
        settings: Settings,
        backend: Callable[[], Any],
        variants: TokenVariants,
        app: Any,
    ) -> None:
        # A weak reference: the app owns this state, not the other way round.
        self.app = weakref.ref(app)
        self.toucan = toucan
        self.settings = settings
        self.variants = variants
        self._backend = backend
        self._cache: TokenCache | None = None
        self._minters: dict[str | None, Minter] = {}  # by instance name, in this process
        self._minters_pid = 0
        self._lock = threading.Lock()
        self._instances: dict[str | None, Instance] = {None: settings.default_instance}
        self._instances.update(settings.instances)

    @property
    def cache(self) -> TokenCache:
        # Built on first use: an app-provided Cache may be initialised after us.
        if self._cache is None:
            self._cache = _token_cache(self._backend(), self.settings)
        return self._cache

    @cache.setter
    def cache(self, value: TokenCache) -> None:
        self._cache = value

    def instance(self, name: str | None) -> Instance:
        """The Toucan instance a user's ``instance`` names."""
        found = self._instances.get(name)
        if found is None:
            raise ToucanConfigError(
                f"the user's instance {name!r} is not in TOUCAN_INSTANCES "
                f"(known: {sorted(n for n in self._instances if n)})"
            )
        return found

    def minter(self, instance: str | None = None) -> Minter:
        """The minter of an instance, made once per process: a requests.Session made
        before a gunicorn fork must not be shared."""
        if self._minters_pid != os.getpid():
            with self._lock:
                if self._minters_pid != os.getpid():
                    self._minters = {}
                    self._minters_pid = os.getpid()
        found = self._minters.get(instance)
        if found is None:
            with self._lock:
                found = self._minters.get(instance)
                if found is None:
                    found = _make_minter(self.settings, self.instance(instance))
                    self._minters[instance] = found
        return found

    def token(
        self,
        user: ToucanUser,
        *,
        force: bool = False,
        rs: RequestState | None = None,
        page: bool = False,
    ) -> EmbedToken:
        """A token for ``user``: the request's own (``page``: kept for the rest of the
        request), cached, or minted once across processes (reported through signals)."""
        if rs is not None:
            rs.send_token()
        check_required(user, self.settings.required_attributes)  # fail closed, before any call
        minter = self.minter(user.instance)
        key = self.key_for(user, minter)
        if rs is not None and rs.token is not None and rs.token_key == key and not force:
            signals.served(self, user, "request")
            return rs.token
        token = self.cache.get_or_mint(
            key,
            signals.observed_mint(self, minter, user),
            force=force,
            served=(lambda source: signals.served(self, user, source))
            if signals.token_served.receivers
            else None,
        )
        if page and rs is not None:
            rs.token, rs.token_key = token, key  # the page's components use this one
        return token

    def key_for(self, user: ToucanUser, minter: Minter | None = None) -> str:
        """The cache key of ``user``'s token: instance, current key and whole identity."""
        inst = self.instance(user.instance)
        minter = minter or self.minter(user.instance)
        base = f"preview:{inst.name or ''}" if self.settings.preview else inst.base_url
        return cache_key(self.settings.cache_key_prefix, base, minter.key_fingerprint(), user)


def _make_minter(s: Settings, instance: Instance) -> Minter:
    if s.preview:
        return PreviewMinter(s.preview_token_lifetime, instance.name)
    assert instance.api_key is not None
    return TokenClient(
        instance.base_url,
        instance.api_key,
        api_key_ttl=s.api_key_ttl,
        token_path=instance.token_path,
        timeout=s.timeout,
        max_retries=s.max_retries,
        deadline=mint_deadline(s),
        proxies=s.proxies,
        verify=s.verify,
        max_lifetime=s.max_token_lifetime,
    )


class RequestState:
    """What the extension keeps for one request, in ``g._toucan``."""

    __slots__ = (
        "app", "decorated", "error", "instance", "loaded", "no_store", "sent", "token",
        "token_key", "used", "user", "variant",
    )  # fmt: skip

    def __init__(self, app: AppState) -> None:
        self.app = app
        self.loaded = False
        self.user: ToucanUser | None = None
        self.token: EmbedToken | None = None  # the token of this request's components
        self.token_key: str | None = None  # ...and its cache key
        self.error: Exception | None = None  # why there is none (placeholder mode)
        # The Toucan instance of this page's script and components, once one is rendered.
        self.instance: Any = _UNSET
        # inject_token(role=...): the variant and the user it applies to (before overrides)
        self.variant: tuple[Variant, ToucanUser] | None = None
        self.no_store = False  # a token went out: Cache-Control private, no-store
        self.sent = False  # the response headers are final (after_request has run)
        self.decorated = False  # a view decorated with inject_token ran (debug checks)
        self.used = False  # a helper or toucan_token used this request's token (debug checks)

    def send_token(self) -> None:
        """Mark the response as carrying a token: ``Cache-Control: private, no-store``."""
        if self.sent and not self.no_store:
            # A streamed response: its headers went out without no-store, so a shared
            # cache could keep this token for everyone. Refuse.
            raise ToucanConfigError(
                "a token was needed after the response headers were sent (a streamed "
                "template?): decorate the view with @toucan.inject_token so the token "
                "is minted, and the response marked private, before streaming starts"
            )
        self.no_store = True


def _token_cache(backend: Any, s: Settings) -> TokenCache:
    """The TokenCache of one app over ``backend``."""
    shared = not isinstance(backend, SimpleCache)
    front = shared and s.front_cache_size > 0 and s.front_cache_ttl > 0
    return TokenCache(
        backend,
        leases=leases_for(backend, s.lock_timeout),
        front=FrontCache(s.front_cache_size, s.front_cache_ttl) if front else None,
        min_ttl=s.min_token_ttl,
        # Preview tokens cost nothing to mint: no background thread for them.
        refresh_ahead=0 if s.preview else s.refresh_ahead,
        lock_wait=s.lock_wait,
        deadline=mint_deadline(s),
    )


def mint_deadline(s: Settings) -> float:
    """TOUCAN_MINT_DEADLINE, or the default derived from the timeouts and retries."""
    return s.mint_deadline or default_deadline(s.timeout, s.max_retries)
