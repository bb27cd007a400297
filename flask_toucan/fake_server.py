"""The HTTP side of :class:`~flask_toucan.testing.FakeToucan`: a keep-alive werkzeug
request handler that can drop, drip and compress, and the helpers behind its answers."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import time
import zlib
from importlib import resources
from typing import TYPE_CHECKING, Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler
from werkzeug.wrappers import Request, Response

if TYPE_CHECKING:
    from .testing import FakeToucan

__all__ = ["Handler", "Server", "compressed", "error", "no_wsgi_app", "stand_in_script", "validate"]


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
        if fake._peek_drop() is not None:
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
