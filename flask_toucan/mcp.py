"""Toucan's MCP server and REST API, spoken as one user with that user's embed token.

Toucan's guide "Integrate Toucan into your own AI chat" documents an MCP endpoint
(``TOUCAN_MCP_URL``, Streamable HTTP) authenticated by the user's embed token as a
Bearer token, so Row-Level Security applies to every question; its data-question tool
``ask_toucan_assistant`` answers with a ``toucan-mcp-v1`` envelope. Everything here
gets that token from a :data:`TokenSource` (the token service's cached token for one
resolved identity), mints afresh once when the endpoint answers 401 (at most once per
identity per 30 s), and never sends the API key. Needs the optional extra:
``pip install "flask-toucan[mcp]"``.

Both majors of the MCP SDK work, through their public API: 1.x (>= 1.24, over httpx,
what langchain-mcp-adapters and FastMCP 3 require) and 2.x (over httpx2). What differs
between them (the HTTP library, the error class, camelCase or snake_case result
fields, the streams the transport yields) is settled once, below.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.metadata
import inspect
import json
import logging
import re
import ssl
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urljoin, urlsplit

import requests
from requests.auth import AuthBase

from .errors import (
    ToucanAPIError,
    ToucanAuthError,
    ToucanConfigError,
    ToucanError,
    ToucanResponseError,
    ToucanUnavailable,
)
from .identity import ToucanUser
from .preview import decode_fake_token, stand_in_answer
from .service import TokenService
from .settings import bundle_context, ca_bundle
from .tokens import EmbedToken

#: The MCP SDK versions flask_toucan works with.
SUPPORTED = ">=1.24,<3"
_EXTRA = 'pip install "flask-toucan[mcp]"'

try:
    MCP_VERSION = importlib.metadata.version("mcp")
except importlib.metadata.PackageNotFoundError:
    raise ImportError(
        f"toucan.ask(), mcp_session() and mcp_connection() need the MCP SDK (mcp is not "
        f"installed): {_EXTRA}"
    ) from None
_RELEASE = tuple(int(n) for n in re.findall(r"\d+", MCP_VERSION)[:2])
if not (1, 24) <= _RELEASE < (3, 0):
    raise ImportError(
        f"the MCP SDK installed is mcp {MCP_VERSION}; flask_toucan supports mcp{SUPPORTED}: "
        f'pip install "mcp{SUPPORTED}"'
    )
#: The SDK's major version: 1 (httpx) or 2 (httpx2).
MCP_MAJOR = _RELEASE[0]

try:
    import anyio
    from mcp import types as mcp_types
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    if MCP_MAJOR >= 2:
        # Each major's name for it; typed against either (hence the ignores).
        from mcp.shared.exceptions import (  # type: ignore[attr-defined, unused-ignore]
            MCPError as McpError,
        )
    else:
        from mcp.shared.exceptions import (  # type: ignore[attr-defined, no-redef, unused-ignore]
            McpError,
        )
    #: The HTTP library of the installed SDK: httpx2 (2.x) or httpx (1.x).
    http: Any = importlib.import_module("httpx2" if MCP_MAJOR >= 2 else "httpx")
except ImportError as exc:  # pragma: no cover - exercised by the installation test
    raise ImportError(
        f"toucan.ask(), mcp_session() and mcp_connection() need the MCP SDK with its HTTP "
        f"library ({exc.name} is missing): {_EXTRA}"
    ) from exc


def _auth_bases() -> tuple[type, ...]:
    """``httpx.Auth`` and ``httpx2.Auth``, whichever are installed: an agent framework
    may build its client on either, whatever the SDK flask_toucan itself uses."""
    bases: list[type] = []
    for name in ("httpx", "httpx2"):
        try:
            bases.append(importlib.import_module(name).Auth)
        except ImportError:
            continue
    return tuple(bases)


def _field(obj: Any, snake: str, camel: str) -> Any:
    """A result field: snake_case in SDK 2.x, camelCase in 1.x."""
    return getattr(obj, snake) if hasattr(obj, snake) else getattr(obj, camel, None)


__all__ = [
    "MCP_MAJOR",
    "SUPPORTED",
    "TOOL",
    "BearerSession",
    "Caller",
    "MCPConnection",
    "TokenAuth",
    "ToucanAnswer",
    "answer_from",
    "arguments_for",
    "caller_for",
]

logger = logging.getLogger("flask_toucan")
T = TypeVar("T")

#: The data-question tool, by the name Toucan's guide gives it.
TOOL = "ask_toucan_assistant"
#: The most one answer of the MCP endpoint may hold: far above a chart-heavy answer, far
#: below what would hurt a worker.
MAX_ANSWER_BYTES = 8 * 1024 * 1024
#: Pages of tools read at the most (a server that pages forever is bounded too).
MAX_TOOL_PAGES = 50
_THREAD_NAMES = ("threadId", "thread_id")

#: ``source(fresh)``: the user's embed token; ``fresh`` mints anew after Toucan refused
#: the cached one (at most once per identity per 30 s, ToucanAuthError within it).
TokenSource = Callable[[bool], EmbedToken]


@dataclass(frozen=True)
class ToucanAnswer:
    """What Toucan's assistant answered: markdown ``text``, the ``visualizations`` to
    hand to ``toucan_result()``, the ``thread_id`` of a follow-up question, and the
    whole ``envelope`` (the tool's structured result) for anything else."""

    text: str
    visualizations: tuple[dict[str, Any], ...]
    thread_id: str | None
    envelope: dict[str, Any] = field(repr=False)


def answer_from(envelope: object) -> ToucanAnswer:
    """A :class:`ToucanAnswer` from the tool's envelope, its shape checked."""
    if not isinstance(envelope, dict):
        raise ToucanResponseError(
            f"Toucan's assistant answered with a {type(envelope).__name__}, not a JSON object"
        )
    text = envelope.get("answer", "")
    visualizations = envelope.get("visualizations") or []
    thread_id = envelope.get("threadId", envelope.get("thread_id"))
    if not isinstance(text, str):
        raise ToucanResponseError("Toucan's assistant answer has a non-string 'answer'")
    if not isinstance(visualizations, list) or not all(isinstance(v, dict) for v in visualizations):
        raise ToucanResponseError(
            "Toucan's assistant answer has 'visualizations' that is not a list of objects"
        )
    if thread_id is not None and not isinstance(thread_id, str):
        raise ToucanResponseError("Toucan's assistant answer has a non-string 'threadId'")
    return ToucanAnswer(text, tuple(visualizations), thread_id, envelope)


def arguments_for(
    schema: Mapping[str, Any], question: str, thread_id: str | None
) -> dict[str, Any]:
    """The tool's arguments: ``question`` under its single required string property,
    ``thread_id`` under ``threadId`` or ``thread_id`` (whichever the schema has)."""
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = [name for name in schema.get("required") or [] if isinstance(name, str)]
    strings = [
        name
        for name in required
        if isinstance(properties.get(name), dict) and properties[name].get("type") == "string"
    ]
    if len(strings) != 1 or len(required) != 1:
        raise ToucanResponseError(
            f"{TOOL} does not take one required string: its input schema requires "
            f"{sorted(required) or 'nothing'} (string: {sorted(strings) or 'none'}); "
            "use mcp_session() and call it with the arguments it lists"
        )
    arguments: dict[str, Any] = {strings[0]: question}
    if thread_id is not None:
        name = next((n for n in _THREAD_NAMES if n in properties), None)
        if name is None:
            raise ToucanResponseError(
                f"{TOOL} takes no thread id (its properties: {sorted(properties)}); "
                "ask without thread_id"
            )
        arguments[name] = thread_id
    return arguments


def caller_for(service: TokenService, user: ToucanUser) -> Caller:
    """``user`` as MCP and REST calls speak for it: resolved now (default role, instance,
    required attributes); its token comes from ``service``, the same cache as pages."""
    resolved = service.resolve(user)
    instance = service.instance(resolved.instance)
    s = service.settings

    def source(fresh: bool) -> EmbedToken:
        # A fresh token only after Toucan refused the cached one: at most once per
        # identity per REMINT_WINDOW (ToucanAuthError within it).
        return service.remint(resolved) if fresh else service.get(resolved)[0]

    return Caller(
        source,
        mcp_url=instance.mcp_url,
        base_url=instance.base_url,
        deadline=s.mcp_deadline,
        timeout=s.timeout,
        verify=s.verify,
        proxies=s.proxies,
        preview=s.preview,
    )


#: ``on_progress(progress, total, message)``, sync or async, per progress notification.
ProgressCallback = Callable[[float, float | None, str | None], Any]


@dataclass(frozen=True)
class Caller:
    """One resolved identity's way in: its token source and its instance's endpoints."""

    source: TokenSource = field(repr=False)
    mcp_url: str
    base_url: str
    deadline: float
    timeout: tuple[float, float]
    verify: bool | str
    proxies: Mapping[str, str] | None = field(default=None, repr=False)
    preview: bool = False

    # -- MCP ------------------------------------------------------------------

    def connection(self) -> MCPConnection:
        """What an agent framework needs to reach the MCP endpoint as this identity."""
        return MCPConnection(self.mcp_url, TokenAuth(self.source, self.mcp_url), self.source)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[ClientSession]:
        """An initialized MCP ``ClientSession`` to ``mcp_url`` as this identity.

        Errors of the endpoint are typed (ToucanAuthError after a refused fresh token,
        ToucanUnavailable when it cannot be reached or is too slow); an error raised
        by the code inside the ``async with`` goes out unchanged.
        """
        async with self._open() as (session, _):
            yield session

    @contextlib.asynccontextmanager
    async def _open(self) -> AsyncIterator[tuple[ClientSession, CappedTransport]]:
        """:meth:`session`, and its transport (whose :meth:`CappedTransport.run` ends a
        call at once when an answer breaks a bound, whatever the SDK does with it)."""
        if self.preview:
            raise ToucanConfigError(
                "mcp_session() needs an MCP endpoint, and preview mode has none (ask() is "
                "answered in process): run `flask toucan fake` and set TOUCAN_BASE_URL to it"
            )
        auth = TokenAuth(self.source, self.mcp_url)
        inner: list[BaseException] = []
        connect = self.timeout[0]  # reading waits on the assistant: up to the deadline
        scheme = "https" if self.mcp_url.startswith("https:") else "http"
        # As for minting: TOUCAN_PROXIES, else the environment's (NO_PROXY honoured), and
        # TOUCAN_VERIFY, else REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE.
        proxies = self.proxies or requests.utils.get_environ_proxies(self.mcp_url)
        verify = tls_context(self.verify)
        transport = CappedTransport(
            http.AsyncHTTPTransport(verify=verify, proxy=proxies.get(scheme), trust_env=False),
            MAX_ANSWER_BYTES,
        )
        # Each request of the session waits at most the deadline (1.x takes a timedelta).
        per_request: Any = self.deadline if MCP_MAJOR >= 2 else timedelta(seconds=self.deadline)
        try:
            async with (
                http.AsyncClient(
                    auth=auth,
                    timeout=http.Timeout(self.deadline, connect=connect),
                    transport=transport,
                    trust_env=False,
                ) as client,
                streamable_http_client(self.mcp_url, http_client=client) as streams,
                ClientSession(streams[0], streams[1], read_timeout_seconds=per_request) as session,
            ):
                with anyio.fail_after(self.deadline):
                    await transport.run(session.initialize())
                try:
                    yield session, transport
                except BaseException as exc:
                    inner.append(exc)
                    raise
        except Exception as exc:
            leaf = first_leaf(exc)
            if (inner and leaf is inner[0]) or isinstance(leaf, ToucanError):
                raise leaf from None
            raise transport.error or self._failure(leaf, auth) from None

    def _failure(self, exc: BaseException, auth: TokenAuth) -> ToucanAPIError:
        where = "Toucan's MCP endpoint (TOUCAN_MCP_URL)"
        if auth.refusal is not None:
            return auth.refusal
        if auth.refused == 401:
            return ToucanAuthError(
                f"{where} refused the user's embed token (HTTP 401) even freshly minted: "
                "check TOUCAN_MCP_URL and that the token's instance is the endpoint's",
                upstream_status=401,
            )
        if auth.refused == 403:
            return ToucanAuthError(
                f"{where} denied access (HTTP 403): check that your Toucan plan includes "
                "the MCP server (Toucan answers NO_ACTIVE_SUBSCRIPTION otherwise)",
                upstream_status=403,
            )
        if isinstance(exc, (TimeoutError, http.TimeoutException)):
            return ToucanUnavailable(
                f"{where} did not answer within TOUCAN_MCP_DEADLINE ({self.deadline:g} s)"
            )
        if isinstance(exc, (http.HTTPError, OSError)):
            return ToucanUnavailable(
                f"{where} could not be reached ({type(exc).__name__}); check TOUCAN_MCP_URL "
                "and the network"
            )
        if isinstance(exc, McpError):
            return ToucanResponseError(
                f"{where} answered with an MCP error (code {exc.error.code})"
            )
        logger.debug("MCP session failed", exc_info=exc)
        return ToucanResponseError(f"{where} failed: {type(exc).__name__}")

    async def ask(
        self,
        question: str,
        thread_id: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> ToucanAnswer:
        """Ask ``ask_toucan_assistant``, within ``deadline`` seconds in all; each progress
        notification of the call goes to ``on_progress(progress, total, message)``."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError("ask() needs a non-empty question string")
        if self.preview:
            token = await anyio.to_thread.run_sync(self.source, False)
            return answer_from(stand_in_answer(decode_fake_token(token.value), question, thread_id))
        with self.deadline_for("answer"):
            async with self._open() as (session, transport):
                tool = await transport.run(find_tool(session))
                schema = _field(tool, "input_schema", "inputSchema")
                arguments = arguments_for(schema, question, thread_id)
                progress = _ProgressRelay(on_progress) if on_progress is not None else None
                result = await transport.run(
                    session.call_tool(TOOL, arguments, progress_callback=progress)
                )
        if _field(result, "is_error", "isError"):
            raise ToucanResponseError(f"Toucan's assistant reported an error for {TOOL}")
        envelope: object = _field(result, "structured_content", "structuredContent")
        if envelope is None:
            texts = [c.text for c in result.content if isinstance(c, mcp_types.TextContent)]
            text = texts[0] if texts else None
            if text is None:
                raise ToucanResponseError(f"{TOOL} answered with neither JSON nor text")
            try:
                envelope = json.loads(text)
            except ValueError:
                raise ToucanResponseError(f"{TOOL} answered with text that is not JSON") from None
        return answer_from(envelope)

    def ask_blocking(
        self,
        question: str,
        thread_id: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> ToucanAnswer:
        """:meth:`ask` from synchronous code (a thread with no running event loop)."""
        return blocking(self.ask, question, thread_id, on_progress)

    async def tools(self) -> list[tuple[str, str, list[str]]]:
        """The tools the endpoint offers this identity: name, description, required
        arguments (every page), within the deadline."""
        found: list[tuple[str, str, list[str]]] = []

        async def collect(session: ClientSession) -> None:
            async for tool in listed_tools(session):
                schema = _field(tool, "input_schema", "inputSchema") or {}
                required = schema.get("required") or []
                found.append((tool.name, tool.description or "", list(required)))

        with self.deadline_for("list its tools"):
            async with self._open() as (session, transport):
                await transport.run(collect(session))
        return found

    @contextlib.contextmanager
    def deadline_for(self, doing: str) -> Iterator[None]:
        """At most TOUCAN_MCP_DEADLINE seconds for the whole block, then ToucanUnavailable."""
        try:
            with anyio.fail_after(self.deadline):
                yield
        except TimeoutError:
            raise ToucanUnavailable(
                f"Toucan's MCP endpoint did not {doing} within TOUCAN_MCP_DEADLINE "
                f"({self.deadline:g} s)"
            ) from None

    # -- REST -----------------------------------------------------------------

    def api_session(self) -> BearerSession:
        """A ``requests.Session`` for Toucan's REST API as this identity."""
        session = BearerSession(self.base_url, self.timeout)
        session.auth = BearerAuth(self.source, self.base_url)
        session.verify = self.verify
        if self.proxies:
            session.proxies.update(self.proxies)
        return session


class _ProgressRelay:
    """The SDK's progress callback, handing each notification to the app's callback.
    A callback that raises is logged once and the answer still arrives."""

    def __init__(self, callback: ProgressCallback) -> None:
        self.callback = callback
        self.failed = False

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        try:
            outcome = self.callback(progress, total, message)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            if not self.failed:
                self.failed = True
                logger.exception("the on_progress callback of toucan.ask() raised; ignored")


class MCPConnection:
    """Toucan's MCP endpoint as one user, for an agent framework: ``url``, an ``auth``
    that both httpx and httpx2 clients accept, and :meth:`headers` for code that takes
    headers only. Made by ``toucan.mcp_connection()``; it keeps working after the
    request that made it has ended (a streamed answer, a background task)."""

    __slots__ = ("_source", "auth", "url")

    def __init__(self, url: str, auth: TokenAuth, source: TokenSource) -> None:
        #: The user's MCP endpoint (TOUCAN_MCP_URL, or the user's instance's).
        self.url = url
        #: Pass as ``auth=``: the user's current token on every request (refresh-ahead
        #: keeps a long conversation alive), one fresh mint after a 401, nothing sent to
        #: another origin, never the API key.
        self.auth = auth
        self._source = source

    def headers(self) -> dict[str, str]:
        """``{"Authorization": "Bearer <the user's current token>"}``, read now."""
        return {"Authorization": f"Bearer {self._source(False).value}"}

    def __repr__(self) -> str:
        return f"MCPConnection(url={self.url!r}, auth=<token hidden>)"

    __str__ = __repr__


class _TokenFlow:
    """The Bearer flow of :class:`TokenAuth`, for httpx and httpx2 alike (only what the
    two share: the request's ``url`` and ``headers``, the response's ``status_code``)."""

    def __init__(self, source: TokenSource, url: str) -> None:
        self._source = source
        self.origin = origin(url)
        #: The status of a refusal that a fresh token did not cure (or could not be
        #: minted for), if any.
        self.refused: int | None = None
        #: Why no fresh token was tried (the identity's fresh mint was too recent).
        self.refusal: ToucanAuthError | None = None

    def _ours(self, request: Any) -> bool:
        return origin(str(request.url)) == self.origin

    def _fresh(self) -> EmbedToken | None:
        try:
            return self._source(True)
        except ToucanAuthError as exc:
            self.refusal = exc
            return None

    def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        request.headers.pop("x-api-key", None)
        if not self._ours(request):
            yield request  # never a token to another origin
            return
        request.headers["Authorization"] = f"Bearer {self._source(False).value}"
        response = yield request
        if response.status_code == 401 and self._ours(response.request):
            token = self._fresh()
            if token is not None:
                request.headers["Authorization"] = f"Bearer {token.value}"
                response = yield request
        if response.status_code in (401, 403) and self._ours(response.request):
            self.refused = response.status_code

    async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
        request.headers.pop("x-api-key", None)
        if not self._ours(request):
            yield request  # never a token to another origin
            return
        token = await anyio.to_thread.run_sync(self._source, False)
        request.headers["Authorization"] = f"Bearer {token.value}"
        response = yield request
        if response.status_code == 401 and self._ours(response.request):
            fresh = await anyio.to_thread.run_sync(self._fresh)
            if fresh is not None:
                request.headers["Authorization"] = f"Bearer {fresh.value}"
                response = yield request
        if response.status_code in (401, 403) and self._ours(response.request):
            self.refused = response.status_code

    def __repr__(self) -> str:
        return f"TokenAuth({self.origin[0]}://{self.origin[1]}, <token hidden>)"

    __str__ = __repr__


#: ``auth=`` for httpx and httpx2 clients alike: :class:`_TokenFlow` over both ``Auth``
#: classes that are installed (the flow's own methods come first).
if TYPE_CHECKING:
    TokenAuth = _TokenFlow
else:
    TokenAuth = type("TokenAuth", (_TokenFlow, *_auth_bases()), {"__module__": __name__})


async def listed_tools(session: ClientSession) -> AsyncGenerator[Any, None]:
    """Every tool the endpoint lists, page after page (a server paging forever stops
    after :data:`MAX_TOOL_PAGES`)."""
    cursor: str | None = None
    for _ in range(MAX_TOOL_PAGES):
        params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        for tool in page.tools:
            yield tool
        cursor = _field(page, "next_cursor", "nextCursor")
        if not cursor:
            return


async def find_tool(session: ClientSession) -> Any:
    """The ``ask_toucan_assistant`` tool as the server lists it (every page looked at)."""
    seen: list[str] = []
    async with contextlib.aclosing(listed_tools(session)) as tools:
        async for tool in tools:
            if tool.name == TOOL:
                return tool
            seen.append(tool.name)
    raise ToucanResponseError(
        f"Toucan's MCP endpoint offers no {TOOL} tool (it offers {len(seen)}: "
        f"{', '.join(seen[:10]) or 'none'}); check TOUCAN_MCP_URL"
    )


class CappedStream(http.AsyncByteStream):  # type: ignore[misc]
    """A response body that ends in ToucanResponseError past ``limit`` bytes (told to
    ``overflow`` first: the SDK may keep the error from its caller)."""

    def __init__(self, inner: Any, limit: int, overflow: Callable[[ToucanError], None]) -> None:
        self.inner = inner
        self.limit = limit
        self.overflow = overflow

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self.inner:
            seen += len(chunk)
            if seen > self.limit:
                error = ToucanResponseError(
                    f"Toucan's MCP endpoint (TOUCAN_MCP_URL) sent an answer larger than "
                    f"{self.limit // (1024 * 1024)} MB"
                )
                self.overflow(error)
                raise error
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class CappedTransport(http.AsyncBaseTransport):  # type: ignore[misc]
    """The SDK's HTTP transport, every response body bounded (:class:`CappedStream`).

    SDK 1.x hands an error raised while reading an answer to its read stream without
    failing the request that waits for it (which would then wait for its timeout), so
    the first such error is kept here and :meth:`run` ends the waiting call with it.
    """

    def __init__(self, inner: Any, limit: int) -> None:
        self.inner = inner
        self.limit = limit
        #: The first bound an answer broke, if any.
        self.error: ToucanError | None = None
        self._broken = anyio.Event()

    def _overflow(self, error: ToucanError) -> None:
        if self.error is None:
            self.error = error
        self._broken.set()

    async def run(self, call: Awaitable[T]) -> T:
        """``await call``, or :attr:`error` as soon as an answer breaks a bound."""
        outcome: list[T] = []
        try:
            async with anyio.create_task_group() as group:

                async def wait_call() -> None:
                    outcome.append(await call)
                    group.cancel_scope.cancel()

                async def wait_broken() -> None:
                    await self._broken.wait()
                    group.cancel_scope.cancel()

                group.start_soon(wait_call)
                group.start_soon(wait_broken)
        except Exception as exc:  # the call's own error, out of the task group's wrapping
            raise first_leaf(exc) from None
        if not outcome:
            assert self.error is not None
            raise self.error
        return outcome[0]

    async def handle_async_request(self, request: Any) -> Any:
        response = await self.inner.handle_async_request(request)
        assert isinstance(response.stream, http.AsyncByteStream)
        response.stream = CappedStream(response.stream, self.limit, self._overflow)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class BearerAuth(AuthBase):
    """requests auth: the user's embed token, sent only to the instance's own origin;
    one fresh mint and one retry after a 401 from that origin (never after a redirect
    elsewhere: the other host neither gets a token nor causes a mint)."""

    def __init__(self, source: TokenSource, base_url: str) -> None:
        self.source = source
        self.origin = origin(base_url)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if origin(request.url or "") != self.origin:
            return request  # never hand the token to another host
        request.headers["Authorization"] = f"Bearer {self.source(False).value}"
        request.hooks["response"].append(self._again_after_401)
        return request

    def _again_after_401(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        if response.status_code != 401:
            return response
        if origin(response.request.url or "") != self.origin:
            return response  # a redirect took the request elsewhere: no token goes there
        response.content  # noqa: B018 - read it, so the connection can be reused
        response.close()
        retry = response.request.copy()
        retry.hooks["response"] = [h for h in retry.hooks["response"] if h != self._again_after_401]
        try:
            fresh = self.source(True)
        except ToucanAuthError:
            return response  # minted afresh too recently: the 401 stands
        retry.headers["Authorization"] = f"Bearer {fresh.value}"
        answer: requests.Response = response.connection.send(retry, **kwargs)
        answer.history.append(response)
        answer.request = retry
        return answer

    def __repr__(self) -> str:
        return f"BearerAuth({self.origin}, <token hidden>)"


class BearerSession(requests.Session):
    """A ``requests.Session`` whose relative URLs start at the Toucan instance and
    whose requests time out after ``TOUCAN_TIMEOUT`` unless told otherwise."""

    def __init__(self, base_url: str, timeout: tuple[float, float]) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/") + "/"
        self.default_timeout = timeout

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        if isinstance(url, bytes):
            url = url.decode()
        kwargs.setdefault("timeout", self.default_timeout)
        return super().request(method, urljoin(self.base_url, url.lstrip("/")), *args, **kwargs)


def blocking(func: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run the coroutine function ``func(*args)`` to its end from synchronous code."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return anyio.run(func, *args)
    raise RuntimeError(
        "toucan.ask() waits for the answer and cannot run inside an event loop "
        "(an async view?): use `await toucan.ask_async(...)` there"
    )


def tls_context(verify: bool | str) -> ssl.SSLContext | bool:
    """TOUCAN_VERIFY for the SDK's HTTP client: False, the default trust, or a context of
    the CA bundle in force (:func:`~flask_toucan.settings.ca_bundle`, as for minting)."""
    bundle = ca_bundle(verify)
    if bundle is not None:
        return bundle_context(bundle)
    return verify is not False  # True: the library's default trust; False: no check


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return (parts.scheme, (parts.hostname or "").lower(), port)


def first_leaf(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups, or ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
