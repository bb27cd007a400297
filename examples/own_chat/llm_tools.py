"""Handing Toucan's MCP tools to your own LLM, as the signed-in user.

Toucan's tool list is discovered at run time: list it, describe each tool to the model
in the shape its API expects, and run the tool calls the model asks for through the
same MCP session. The LLM client itself is yours (any SDK with tool calling); here it
is a parameter, so this file runs without one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from flask_toucan import Toucan

#: What your LLM client is given: the tool descriptions, and a way to run a tool call.
#: It returns the model's final text.
ToolRunner = Callable[[str, dict[str, Any]], Awaitable[Any]]
Model = Callable[[list[dict[str, Any]], ToolRunner], Awaitable[str]]


async def chat_turn(toucan: Toucan, model: Model, user: Any = None) -> str:
    """One chat turn in which the model may call any of Toucan's tools as ``user``
    (default: the request's signed-in user)."""
    async with toucan.mcp_session(user=user) as session:
        listed = await session.list_tools()
        # The function-calling shape most LLM APIs take: name, description, JSON schema.
        tools = [
            {"name": t.name, "description": t.description or "", "input_schema": t.input_schema}
            for t in listed.tools
        ]

        async def run(name: str, arguments: dict[str, Any]) -> Any:
            result = await session.call_tool(name, arguments)
            # Toucan's structured answer when there is one (ask_toucan_assistant's
            # toucan-mcp-v1 envelope), else its text.
            if result.structured_content is not None:
                return result.structured_content
            return [getattr(c, "text", None) for c in result.content]

        return await model(tools, run)
