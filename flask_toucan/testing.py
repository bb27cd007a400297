"""A fake Toucan served over real HTTP, for tests: the token endpoint, and (with the
``mcp`` extra) the MCP endpoint and a REST call, authenticated by the tokens it minted.

>>> with FakeToucan() as fake:
...     app.config.update(TOUCAN_BASE_URL=fake.url, TOUCAN_API_KEY=fake.api_key)

Tokens it issues are ``fake.<base64 JSON>.<random>``: still opaque to
flask_toucan, but :func:`decode_fake_token` (and the preview components) can read
who they were minted for.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import random
import secrets
import socket
import ssl
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from .preview import decode_fake_token, encode_fake_token
from .settings import DEFAULTS
from .tokens import now, parse_expires_in

__all__ = ["Failure", "FakeToucan", "RecordedRequest", "decode_fake_token"]

TOKEN_PATH: str = DEFAULTS["TOUCAN_TOKEN_PATH"]
MCP_PATH = "/api/mcp"
REST_PREFIX = "/api/v1/"
HOP_BY_HOP = ("content-length", "connection", "transfer-encoding", "keep-alive")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received (whatever it answered)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    status: int = 0
    minted: bool = False

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Failure:
    """How the fake should misbehave for one request.

    ``status`` with optional ``body``/``headers``/``retry_after``; ``drop`` closes
    the connection without answering; ``delay`` waits first (a read timeout);
    ``drip`` sends the body one byte every ``drip`` seconds; ``header_drip`` sends
    the whole answer, status line and headers included, one byte every
    ``header_drip`` seconds (no per-read timeout ever fires). ``path`` limits the
    failure to requests whose path starts with it (e.g. ``"/api/mcp"``).
    """

    status: int = 500
    body: bytes | str | dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: str | int | None = None
    drop: bool = False
    delay: float = 0.0
    drip: float = 0.0
    header_drip: float = 0.0
    path: str | None = None


class FakeToucan:
    """Toucan's token endpoint on ``127.0.0.1`` and a random port.

    It checks the ``x-api-key`` header (401 otherwise), validates the body (400
    with ``{"code", "message"}``), records every request in :attr:`requests`, and
    misbehaves on demand with :meth:`fail`.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        expires_in: str | int | float | None = "1h",
        token_path: str = TOKEN_PATH,
        delay: float = 0.0,
        host: str = "127.0.0.1",
        failure_rate: float = 0.0,
        failure_status: int = 503,
        seed: int | None = None,
        compress: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        port: int = 0,
    ) -> None:
        self.api_key = api_key or "fake-" + secrets.token_urlsafe(16)
        self.expires_in = expires_in
        self.token_path = token_path
        self.delay = delay
        self.host = host
        #: Share of requests (beyond those queued with fail()) answered with failure_status.
        self.failure_rate = failure_rate
        self.failure_status = failure_status
        self.random = random.Random(seed)
        #: "gzip" or "deflate": JSON answers are sent compressed, as a CDN would.
        self.compress = compress
        self.ssl_context = ssl_context
        self._port = port
        self._per_request = threading.local()  # the answer being sent by this thread
        self.requests: list[RecordedRequest] = []
        self.connections = 0
        self.tokens_issued: list[str] = []
        self._failures: deque[Failure] = deque()
        self._lock = threading.Lock()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        #: Tokens the MCP and REST endpoints refuse from now on (see :meth:`revoke`).
        self.revoked: set[str] = set()
        #: Questions its assistant tool was asked: (distinctId, question, threadId).
        self.questions: list[tuple[str, str, str | None]] = []
        self._mcp: McpBackend | None = None  # the server behind /api/mcp, made on first use

    # -- lifecycle --------------------------------------------------------

    def start(self) -> FakeToucan:
        if self._server is not None:
            return self
        server = Server(
            self.host, self._port, no_wsgi_app, handler=Handler, ssl_context=self.ssl_context
        )
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="FakeToucan",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._mcp is not None:
            self._mcp.stop()
            self._mcp = None
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeToucan:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(
                "FakeToucan is not running; call start() or use it as a context manager"
            )
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        """Base URL, to use as ``TOUCAN_BASE_URL``."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"FakeToucan({where}, api_key=<hidden>)"

    # -- behaviour --------------------------------------------------------

    def fail(self, status: int = 500, *, times: int = 1, **options: Any) -> None:
        """Answer the next ``times`` requests with a :class:`Failure`."""
        for _ in range(times):
            self._failures.append(Failure(status=status, **options))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.tokens_issued.clear()
            self._failures.clear()
            self.revoked.clear()
            self.questions.clear()
            self.connections = 0

    def revoke(self, token: str | None = None) -> None:
        """Make the MCP and REST endpoints refuse ``token`` (default: every token issued
        so far) with 401, as Toucan does with a revoked or rotated one."""
        with self._lock:
            self.revoked.update([token] if token is not None else self.tokens_issued)

    @property
    def mcp_url(self) -> str:
        """Its MCP endpoint: ``TOUCAN_MCP_URL``'s default for :attr:`url` as base."""
        return self.url + MCP_PATH

    @property
    def mints(self) -> list[RecordedRequest]:
        """Requests that were answered with a real token (not a simulated failure)."""
        return [r for r in self.requests if r.minted]

    # -- internals --------------------------------------------------------

    def _take(self, path: str, *, drop_only: bool = False) -> Failure | None:
        """The first queued failure that applies to ``path``, taken off the queue (with
        ``drop_only``, only if it is a dropped connection)."""
        with self._lock:
            for failure in self._failures:
                if failure.path is None or path.startswith(failure.path):
                    if drop_only and not failure.drop:
                        return None
                    self._failures.remove(failure)
                    return failure
        return None

    def _next_failure(self, path: str) -> Failure | None:
        failure = self._take(path)
        if failure is not None:
            return failure
        with self._lock:
            if self.failure_rate and self.random.random() < self.failure_rate:
                return Failure(status=self.failure_status)
            return None

    def _record(
        self, method: str, path: str, headers: dict[str, str], body: bytes, status: int
    ) -> int:
        with self._lock:
            self.requests.append(RecordedRequest(method, path, headers, body, time.time(), status))
            return len(self.requests) - 1

    def _handle(self, request: Request) -> Response:
        body = request.get_data(cache=False)
        # Recorded on arrival, so a request the client gave up on still counts.
        index = self._record(request.method, request.path, dict(request.headers), body, 0)
        failure = self._next_failure(request.path)
        delay = self.delay + (failure.delay if failure else 0.0)
        if delay:
            time.sleep(delay)
        response = self._answer(request, body, failure)
        with self._lock:
            self.requests[index] = replace(
                self.requests[index],
                status=response.status_code,
                minted=failure is None
                and response.status_code == 200
                and request.path == self.token_path,
            )
        self._per_request.header_drip = failure.header_drip if failure is not None else 0.0
        if self.compress and response.mimetype == "application/json":
            response = compressed(response, self.compress)
        if failure is not None and failure.drip:
            return self._drip(response, failure.drip)
        return response

    def _drip(self, response: Response, interval: float) -> Response:
        data = response.get_data()

        def chunks() -> Any:
            for i in range(len(data)):
                time.sleep(interval)
                yield data[i : i + 1]

        return Response(chunks(), status=response.status_code, content_type=response.content_type)

    def _answer(self, request: Request, body: bytes, failure: Failure | None) -> Response:
        if request.method == "GET" and request.path == "/embed/embed.js":
            return stand_in_script()
        if failure is not None:
            return self._failure_response(failure)
        if request.path == MCP_PATH or request.path.startswith(REST_PREFIX):
            claims = self._bearer(request)
            if claims is None:
                return error(401, "unauthorized", "missing, unknown or revoked embed token")
            if request.path == MCP_PATH:
                return self._mcp_answer(request, body)
            return rest_answer(request, claims)
        if request.path != self.token_path:
            return error(404, "not_found", "no such endpoint")
        if request.method != "POST":
            return error(405, "method_not_allowed", "use POST")
        if not secrets.compare_digest(request.headers.get("x-api-key", ""), self.api_key):
            return error(401, "unauthorized", "invalid API key")
        if request.mimetype != "application/json":
            return error(400, "bad_request", "Content-Type must be application/json")
        problem, payload = validate(body)
        if problem:
            return error(400, "bad_request", problem)
        token = self._issue(payload)
        answer: dict[str, Any] = {"token": token}
        if self.expires_in is not None:
            answer["expiresIn"] = self.expires_in
        return Response(json.dumps(answer), status=200, content_type="application/json")

    def _issue(self, payload: dict[str, Any]) -> str:
        seconds = parse_expires_in(self.expires_in) if self.expires_in is not None else 3600
        token = encode_fake_token(payload, seconds, now())
        with self._lock:
            self.tokens_issued.append(token)
        return token

    def _bearer(self, request: Request) -> dict[str, Any] | None:
        """The claims of the valid embed token the request carries, or None."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        with self._lock:
            known = token in self.tokens_issued and token not in self.revoked
        if scheme.lower() != "bearer" or not known:
            return None
        claims = decode_fake_token(token)
        return claims if claims.get("exp", 0) > now() else None

    def _mcp_answer(self, request: Request, body: bytes) -> Response:
        with self._lock:
            if self._mcp is None:
                try:
                    self._mcp = McpBackend(self).start()
                except ModuleNotFoundError:
                    return error(
                        501,
                        "not_implemented",
                        "the MCP endpoint of FakeToucan needs the MCP SDK: "
                        'pip install "flask-toucan[mcp]"',
                    )
            backend = self._mcp
        return backend.forward(request, body)

    def _failure_response(self, failure: Failure) -> Response:
        body = failure.body
        if body is None:
            body = {"code": "error", "message": f"simulated failure {failure.status}"}
        if isinstance(body, dict):
            data = json.dumps(body).encode()
            content_type = "application/json"
        else:
            data = body.encode() if isinstance(body, str) else body
            content_type = "text/plain"
        response = Response(data, status=failure.status, content_type=content_type)
        for name, value in failure.headers.items():
            response.headers[name] = value
        if failure.retry_after is not None:
            response.headers["Retry-After"] = str(failure.retry_after)
        return response


# -- the HTTP side: a keep-alive werkzeug handler that can drop, drip and compress --


class Handler(WSGIRequestHandler):
    server: Server
    # Keep-alive, as Toucan's own servers do, so connection reuse can be counted.
    # werkzeug's own run_wsgi always closes the connection, so the fake answers
    # with this short version; it reads every request body in full, which is
    # what makes keeping the connection open safe.
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections end on their own

    def log_error(self, format: str, *args: Any) -> None:
        pass  # idle timeouts and clients that hung up are expected here

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # tests read fake.requests instead

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without TCP_NODELAY a reused
        # connection waits ~40 ms for the client's delayed ACK between them.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.fake._lock:
            self.server.fake.connections += 1

    def run_wsgi(self) -> None:
        fake = self.server.fake
        if fake._take(self.path.split("?")[0], drop_only=True) is not None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fake._record(self.command, self.path, dict(self.headers), body, 0)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        response = fake._handle(Request(self.make_environ()))
        header_drip = getattr(fake._per_request, "header_drip", 0.0)
        if header_drip:
            self._drip_everything(response, header_drip)
            return
        try:
            self.send_response(response.status_code)
            for name, value in response.headers.items():
                self.send_header(name, value)
            if response.content_length is None:  # a dripped body: end it by closing
                self.send_header("Connection", "close")
            self.end_headers()
            for chunk in response.iter_encoded():
                self.wfile.write(chunk)
                self.wfile.flush()
        except (TimeoutError, ConnectionError):
            self.close_connection = True

    def _drip_everything(self, response: Response, interval: float) -> None:
        head = [f"HTTP/1.1 {response.status}"]
        head += [f"{name}: {value}" for name, value in response.headers.items()]
        data = ("\r\n".join(head) + "\r\nConnection: close\r\n\r\n").encode()
        data += response.get_data()
        self.close_connection = True
        try:
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                time.sleep(interval)
        except (TimeoutError, ConnectionError, OSError):
            pass  # the client gave up, as it should


class Server(ThreadedWSGIServer):
    fake: FakeToucan
    daemon_threads = True


def stand_in_script() -> Response:
    """The preview stand-ins as Toucan's ``embed.js``, so a page pointed at the fake shows
    components; module scripts from another origin need CORS."""
    source = resources.files("flask_toucan").joinpath("static/toucan-preview.js").read_bytes()
    response = Response(source, content_type="text/javascript; charset=utf-8")
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def compressed(response: Response, encoding: str) -> Response:
    data = response.get_data()
    if encoding == "gzip":
        packed = gzip.compress(data)
    elif encoding == "deflate":
        packed = zlib.compress(data)
    else:
        raise ValueError(f"unknown compression {encoding!r}")
    out = Response(packed, status=response.status_code, content_type=response.content_type)
    for name, value in response.headers.items():
        if name.lower() not in ("content-length", "content-type"):
            out.headers[name] = value
    out.headers["Content-Encoding"] = encoding
    return out


def no_wsgi_app(environ: Any, start_response: Any) -> Any:
    raise AssertionError("FakeToucan answers in its request handler")


def error(status: int, code: str, message: str) -> Response:
    return Response(
        json.dumps({"code": code, "message": message}),
        status=status,
        content_type="application/json",
    )


def validate(body: bytes) -> tuple[str | None, dict[str, Any]]:
    try:
        payload = json.loads(body)
    except ValueError:
        return "body is not JSON", {}
    if not isinstance(payload, dict) or not isinstance(payload.get("user"), dict):
        return "body must be an object with a 'user' object", {}
    user = payload["user"]
    if not isinstance(user.get("distinctId"), str) or not user["distinctId"]:
        return "user.distinctId must be a non-empty string", {}
    if not isinstance(user.get("role"), str) or not user["role"]:
        return "user.role must be a non-empty string", {}
    if not isinstance(user.get("attributes"), dict):
        return "user.attributes must be an object", {}
    extra = set(payload) - {"user", "permissions"}
    if extra:
        return f"unknown fields: {sorted(extra)}", {}
    if "permissions" in payload and not isinstance(payload["permissions"], dict):
        return "permissions must be an object", {}
    return None, payload


def rest_answer(request: Request, claims: dict[str, Any]) -> Response:
    """``GET /api/v1/dashboards/<id>``: a stand-in of Toucan's REST API, showing whom
    the Bearer token was minted for."""
    parts = request.path[len(REST_PREFIX) :].split("/")
    if request.method != "GET" or len(parts) != 2 or parts[0] != "dashboards":
        return error(404, "not_found", "no such endpoint")
    body = {
        "id": parts[1],
        "title": f"Dashboard {parts[1]}",
        "viewer": claims.get("sub"),
        "attributes": claims.get("attributes"),
    }
    return Response(json.dumps(body), status=200, content_type="application/json")


class McpBackend:
    """The MCP SDK's own server (:mod:`flask_toucan.fake_mcp`) on a private loopback
    port; the fake checks the Bearer token, then hands the request over."""

    def __init__(self, fake: FakeToucan) -> None:
        # Imported here: a test session that never asks the MCP endpoint loads none of it.
        from .fake_mcp import McpServer

        def on_question(user: str, question: str, thread_id: str | None) -> None:
            with fake._lock:
                fake.questions.append((user, question, thread_id))

        self.server = McpServer(on_question)
        self.port = self.server.port

    def start(self) -> McpBackend:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def forward(self, request: Request, body: bytes) -> Response:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in (*HOP_BY_HOP, "host")
        }
        try:
            connection.request(request.method, MCP_PATH, body=body, headers=headers)
            answer = connection.getresponse()
            data = answer.read()
        finally:
            connection.close()
        response = Response(data, status=answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in (*HOP_BY_HOP, "date", "server"):
                response.headers[name] = value
        return response
