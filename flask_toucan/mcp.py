"""Toucan's MCP server and REST API, spoken as one user with that user's embed token.

Toucan's guide "Integrate Toucan into your own AI chat" documents an MCP endpoint
(``TOUCAN_MCP_URL``, Streamable HTTP) authenticated by the user's embed token as a
Bearer token, so Row-Level Security applies to every question; its data-question tool
``ask_toucan_assistant`` answers with a ``toucan-mcp-v1`` envelope. Everything here
gets that token from a :data:`TokenSource` (the token service's cached token for one
resolved identity), re-mints once when the endpoint answers 401, and never sends the
API key. Needs the optional extra: ``pip install "flask-toucan[mcp]"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, field
from typing import Any, TypeVar
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

try:
    import anyio
    import httpx2
    from mcp import types as mcp_types
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError
except ImportError as exc:  # pragma: no cover - exercised by the installation test
    raise ImportError(
        f"toucan.ask(), mcp_session() and api_session() need the MCP SDK ({exc.name} is "
        'missing): pip install "flask-toucan[mcp]"'
    ) from exc

__all__ = [
    "TOOL",
    "BearerSession",
    "Caller",
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

#: ``source(force)``: the user's embed token; ``force`` mints afresh (after a 401).
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

    def source(force: bool) -> EmbedToken:
        return service.get(resolved, force=force)[0]

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

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[ClientSession]:
        """An initialized MCP ``ClientSession`` to ``mcp_url`` as this identity.

        Errors of the endpoint are typed (ToucanAuthError after a refused fresh token,
        ToucanUnavailable when it cannot be reached or is too slow); an error raised
        by the code inside the ``async with`` goes out unchanged.
        """
        if self.preview:
            raise ToucanConfigError(
                "mcp_session() needs an MCP endpoint, and preview mode has none (ask() is "
                "answered in process): run `flask toucan fake` and set TOUCAN_BASE_URL to it"
            )
        auth = BearerFlow(self.source)
        inner: list[BaseException] = []
        connect = self.timeout[0]  # reading waits on the assistant: up to the deadline
        scheme = "https" if self.mcp_url.startswith("https:") else "http"
        # As for minting: TOUCAN_PROXIES, else the environment's (NO_PROXY honoured), and
        # TOUCAN_VERIFY, else REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE.
        proxies = self.proxies or requests.utils.get_environ_proxies(self.mcp_url)
        verify = tls_context(self.verify)
        transport = CappedTransport(
            httpx2.AsyncHTTPTransport(verify=verify, proxy=proxies.get(scheme), trust_env=False),
            MAX_ANSWER_BYTES,
        )
        try:
            async with (
                httpx2.AsyncClient(
                    auth=auth,
                    timeout=httpx2.Timeout(self.deadline, connect=connect),
                    transport=transport,
                    trust_env=False,
                ) as http,
                streamable_http_client(self.mcp_url, http_client=http) as (
                    read_stream,
                    write_stream,
                ),
                ClientSession(
                    read_stream, write_stream, read_timeout_seconds=self.deadline
                ) as session,
            ):
                with anyio.fail_after(self.deadline):
                    await session.initialize()
                try:
                    yield session
                except BaseException as exc:
                    inner.append(exc)
                    raise
        except Exception as exc:
            leaf = first_leaf(exc)
            if (inner and leaf is inner[0]) or isinstance(leaf, ToucanError):
                raise leaf from None
            raise self._failure(leaf, auth) from None

    def _failure(self, exc: BaseException, auth: BearerFlow) -> ToucanAPIError:
        where = "Toucan's MCP endpoint (TOUCAN_MCP_URL)"
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
        if isinstance(exc, (TimeoutError, httpx2.TimeoutException)):
            return ToucanUnavailable(
                f"{where} did not answer within TOUCAN_MCP_DEADLINE ({self.deadline:g} s)"
            )
        if isinstance(exc, (httpx2.HTTPError, OSError)):
            return ToucanUnavailable(
                f"{where} could not be reached ({type(exc).__name__}); check TOUCAN_MCP_URL "
                "and the network"
            )
        if isinstance(exc, MCPError):
            return ToucanResponseError(
                f"{where} answered with an MCP error (code {exc.error.code})"
            )
        logger.debug("MCP session failed", exc_info=exc)
        return ToucanResponseError(f"{where} failed: {type(exc).__name__}")

    async def ask(self, question: str, thread_id: str | None = None) -> ToucanAnswer:
        """Ask ``ask_toucan_assistant``, within ``deadline`` seconds in all."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError("ask() needs a non-empty question string")
        if self.preview:
            token = await anyio.to_thread.run_sync(self.source, False)
            return answer_from(stand_in_answer(decode_fake_token(token.value), question, thread_id))
        with self.deadline_for("answer"):
            async with self.session() as session:
                tool = await find_tool(session)
                arguments = arguments_for(tool.input_schema, question, thread_id)
                result = await session.call_tool(TOOL, arguments)
        if result.is_error:
            raise ToucanResponseError(f"Toucan's assistant reported an error for {TOOL}")
        envelope: object = result.structured_content
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

    def ask_blocking(self, question: str, thread_id: str | None = None) -> ToucanAnswer:
        """:meth:`ask` from synchronous code (a thread with no running event loop)."""
        return blocking(self.ask, question, thread_id)

    async def tools(self) -> list[tuple[str, str, list[str]]]:
        """The tools the endpoint offers this identity: name, description, required
        arguments (every page), within the deadline."""
        found: list[tuple[str, str, list[str]]] = []
        with self.deadline_for("list its tools"):
            async with self.session() as session:
                async for tool in listed_tools(session):
                    required = tool.input_schema.get("required") or []
                    found.append((tool.name, tool.description or "", list(required)))
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


async def listed_tools(session: ClientSession) -> AsyncGenerator[Any, None]:
    """Every tool the endpoint lists, page after page (a server paging forever stops
    after :data:`MAX_TOOL_PAGES`)."""
    cursor: str | None = None
    for _ in range(MAX_TOOL_PAGES):
        params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        for tool in page.tools:
            yield tool
        cursor = page.next_cursor
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


class CappedStream(httpx2.AsyncByteStream):
    """A response body that ends in ToucanResponseError past ``limit`` bytes."""

    def __init__(self, inner: httpx2.AsyncByteStream, limit: int) -> None:
        self.inner = inner
        self.limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self.inner:
            seen += len(chunk)
            if seen > self.limit:
                raise ToucanResponseError(
                    f"Toucan's MCP endpoint (TOUCAN_MCP_URL) sent an answer larger than "
                    f"{self.limit // (1024 * 1024)} MB"
                )
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class CappedTransport(httpx2.AsyncBaseTransport):
    """httpx2's transport, every response body bounded (:class:`CappedStream`)."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, limit: int) -> None:
        self.inner = inner
        self.limit = limit

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.inner.handle_async_request(request)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = CappedStream(response.stream, self.limit)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class BearerFlow(httpx2.Auth):
    """The user's embed token on every MCP request; one fresh mint after a 401."""

    def __init__(self, source: TokenSource) -> None:
        self.source = source
        #: The status of a refusal that a fresh token did not cure, if any.
        self.refused: int | None = None

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        request.headers.pop("x-api-key", None)
        token = await anyio.to_thread.run_sync(self.source, False)
        request.headers["Authorization"] = f"Bearer {token.value}"
        response = yield request
        if response.status_code == 401:
            token = await anyio.to_thread.run_sync(self.source, True)
            request.headers["Authorization"] = f"Bearer {token.value}"
            response = yield request
        if response.status_code in (401, 403):
            self.refused = response.status_code

    def __repr__(self) -> str:
        return "BearerFlow(<token hidden>)"


class BearerAuth(AuthBase):
    """requests auth: the user's embed token, sent only to the instance's own origin;
    one fresh mint and one retry after a 401."""

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
        response.content  # noqa: B018 - read it, so the connection can be reused
        response.close()
        retry = response.request.copy()
        retry.hooks["response"] = [h for h in retry.hooks["response"] if h != self._again_after_401]
        retry.headers["Authorization"] = f"Bearer {self.source(True).value}"
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
    """TOUCAN_VERIFY for httpx2: False, the default trust, or a context of the CA bundle
    in force (:func:`~flask_toucan.settings.ca_bundle`, as for minting)."""
    bundle = ca_bundle(verify)
    if bundle is not None:
        return bundle_context(bundle)
    return verify is not False  # True: httpx2's default trust; False: no check


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return (parts.scheme, (parts.hostname or "").lower(), port)


def first_leaf(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups, or ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
