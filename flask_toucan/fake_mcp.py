"""FakeToucan's MCP endpoint: the MCP SDK's own server, in either major version.

Imported only when a test first asks the fake's ``/api/mcp``: a test session that never
does loads neither the SDK nor uvicorn. 1.x serves with ``mcp.server.fastmcp.FastMCP``,
2.x with ``mcp.server.mcpserver.MCPServer``: both through their public API. The tools
answer as the user the Bearer token was minted for, and the assistant reports its
progress (``notifications/progress``) as Toucan's does, so the answers stream as
server-sent events.
"""

# No ``from __future__ import annotations`` here: the SDK reads the tools' annotations
# (``Context``) at registration, and they must be the real classes.

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from .preview import decode_fake_token, stand_in_answer

# Each major's server, typed against either (hence the ignores).
try:  # 2.x
    from mcp.server.mcpserver import (  # type: ignore[import-not-found, unused-ignore]
        Context,
        MCPServer,
    )

    MAJOR = 2
except ImportError:  # 1.x
    from mcp.server.fastmcp import (  # type: ignore[no-redef, attr-defined, unused-ignore]
        Context,
        FastMCP,
    )

    MAJOR = 1

__all__ = ["MCP_PATH", "McpServer"]

MCP_PATH = "/api/mcp"
#: What the stand-in assistant reports while it works (as Toucan's does).
PROGRESS = (
    (0.2, "reading the question"),
    (0.5, "querying the data"),
    (0.8, "drawing the chart"),
)


def _claims(ctx: Any) -> dict[str, Any]:
    """Whom the request's Bearer token was minted for (the fake checked it already)."""
    headers = getattr(ctx, "headers", None)  # 2.x
    if headers is None:  # 1.x: the HTTP request the message came with
        headers = ctx.request_context.request.headers
    return decode_fake_token(str(headers.get("authorization", "")).partition(" ")[2])


def build_app(on_question: Callable[[str, str, str | None], None]) -> Any:
    """The ASGI app of the fake's MCP endpoint (stateless; server-sent events)."""
    if MAJOR == 2:
        server: Any = MCPServer("Toucan (FakeToucan)")
    else:
        server = FastMCP(
            "Toucan (FakeToucan)",
            stateless_http=True,
            json_response=False,
            streamable_http_path=MCP_PATH,
        )

    @server.tool(  # type: ignore[untyped-decorator]
        description="Ask Toucan's AI assistant a question about your data."
    )
    async def ask_toucan_assistant(
        question: str, ctx: Context, threadId: str | None = None
    ) -> dict[str, Any]:
        claims = _claims(ctx)
        on_question(str(claims.get("sub")), question, threadId)
        for progress, message in PROGRESS:
            await ctx.report_progress(progress, 1.0, message)
        return stand_in_answer(claims, question, threadId)

    @server.tool(description="List the dashboards this user may see.")  # type: ignore[untyped-decorator]
    def list_dashboards(ctx: Context) -> dict[str, Any]:
        return {"dashboards": ["sales", "ops"], "viewer": _claims(ctx).get("sub")}

    if MAJOR == 2:
        return server.streamable_http_app(
            streamable_http_path=MCP_PATH, stateless_http=True, json_response=False
        )
    return server.streamable_http_app()


class McpServer:
    """:func:`build_app` served by uvicorn on a private loopback port, in a thread."""

    def __init__(self, on_question: Callable[[str, str, str | None], None]) -> None:
        app = build_app(on_question)
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = int(self.socket.getsockname()[1])
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [self.socket]},
            daemon=True,
            name="FakeToucan-MCP",
        )

    def start(self) -> "McpServer":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the FakeToucan MCP server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)
        self.socket.close()
