"""The chat's agent: your app's own LLM, with Toucan's tools as the signed-in user and
one tool of the app's own, so the model really chooses between them.

- The model is ``CHAT_MODEL`` (any pydantic-ai model name, e.g. ``openai:gpt-4o``, with that
  provider's key in its usual environment variable). Without it, :func:`offline_model`, a
  deterministic stand-in: questions about orders go to the app's tool, the rest to Toucan.
- Toucan's tools come from its MCP server through ``toucan.mcp_connection()``: the user's
  token on every request, refreshed from the cache, minted afresh once after a 401. In
  preview mode there is no MCP server, so the one data tool is ``toucan.ask_async``.
- A follow-up question continues Toucan's thread: the thread id of the conversation is
  added to ``ask_toucan_assistant``'s arguments when the model leaves it out.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import (
    ModelMessage,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import Model
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset

from flask_toucan import Toucan, ToucanUser

TOUCAN_TOOL = "ask_toucan_assistant"
ORDERS_TOOL = "open_orders"

INSTRUCTIONS = (
    "You are the analytics assistant of this app. For questions about the user's business "
    f"data, call {TOUCAN_TOOL}. For the user's own open orders, call {ORDERS_TOOL}. Answer "
    "in short markdown, from what the tools returned only."
)

#: Each account's open orders: the app's own data, not Toucan's.
ORDERS: dict[str, list[dict[str, Any]]] = {
    "alice": [
        {"id": "A-1001", "item": "Espresso beans, 5 kg", "total": 120},
        {"id": "A-1002", "item": "Paper cups, 1000", "total": 45},
    ],
    "chen": [{"id": "G-2001", "item": "Green tea, 2 kg", "total": 64}],
}

#: ``emit(event)``: one event of the turn for the browser (status, progress, delta).
Emit = Callable[[dict[str, Any]], None]


@dataclass
class ChatDeps:
    """What one turn's tools need: whose turn it is, Toucan's thread, where events go."""

    account_id: str
    user: ToucanUser
    thread_id: str | None
    emit: Emit
    #: Toucan's envelopes answered in this turn (charts and thread id come from them).
    envelopes: list[dict[str, Any]] = field(default_factory=list)


def chat_model() -> Model | str:
    """``CHAT_MODEL`` when set, else the offline stand-in."""
    return os.environ.get("CHAT_MODEL") or offline_model()


def build_agent(toucan: Toucan, deps: ChatDeps) -> Agent[ChatDeps, str]:
    """The agent of one turn: the model, Toucan's tools as ``deps.user``, the app's tool."""
    return Agent(
        chat_model(),
        deps_type=ChatDeps,
        instructions=INSTRUCTIONS,
        toolsets=[toucan_tools(toucan, deps), app_tools()],
    )


def toucan_tools(toucan: Toucan, deps: ChatDeps) -> AbstractToolset[ChatDeps]:
    """Toucan's tools as the user: its MCP server, or ``ask_async`` in preview mode."""
    from flask import current_app

    def progress(progress: float, total: float | None, message: str | None) -> None:
        deps.emit({"event": "progress", "text": message or "working…", "progress": progress})

    if current_app.config.get("TOUCAN_PREVIEW"):
        tools: FunctionToolset[ChatDeps] = FunctionToolset()

        @tools.tool
        async def ask_toucan_assistant(
            ctx: RunContext[ChatDeps], question: str, threadId: str | None = None
        ) -> dict[str, Any]:
            """Ask Toucan's AI assistant a question about your data."""
            ctx.deps.emit({"event": "status", "text": "Asking Toucan…"})
            answer = await toucan.ask_async(
                question,
                thread_id=threadId or ctx.deps.thread_id,
                user=ctx.deps.user,
                on_progress=progress,
            )
            ctx.deps.envelopes.append(answer.envelope)
            return answer.envelope

        return tools

    from pydantic_ai.mcp import MCPToolset

    conn = toucan.mcp_connection(user=deps.user)

    async def continue_thread(
        ctx: RunContext[ChatDeps], call_tool: Any, name: str, arguments: dict[str, Any]
    ) -> Any:
        if name == TOUCAN_TOOL:
            ctx.deps.emit({"event": "status", "text": "Asking Toucan…"})
            if ctx.deps.thread_id and not arguments.get("threadId"):
                arguments = {**arguments, "threadId": ctx.deps.thread_id}
        result = await call_tool(name, arguments)
        if name == TOUCAN_TOOL and isinstance(result, dict):
            ctx.deps.envelopes.append(result)
        return result

    async def on_progress(progress_: float, total: float | None, message: str | None) -> None:
        progress(progress_, total, message)

    return MCPToolset(
        conn.url,
        auth=conn.auth,
        progress_handler=on_progress,
        process_tool_call=continue_thread,
        tool_error_behavior="error",
    )


def app_tools() -> FunctionToolset[ChatDeps]:
    tools: FunctionToolset[ChatDeps] = FunctionToolset()

    @tools.tool
    def open_orders(ctx: RunContext[ChatDeps]) -> list[dict[str, Any]]:
        """The signed-in user's open orders (id, item, total)."""
        ctx.deps.emit({"event": "status", "text": "Looking up your orders…"})
        return ORDERS.get(ctx.deps.account_id, [])

    return tools


# -- the offline stand-in model ----------------------------------------------------------


def _decide(messages: list[ModelMessage]) -> tuple[str, Any]:
    """("call", (tool, arguments)) or ("text", reply): what the stand-in does next."""
    last = messages[-1]
    returns = [p for p in last.parts if isinstance(p, ToolReturnPart)]
    if returns:
        return "text", "\n\n".join(_reply_from(r) for r in returns)
    prompt = next((p for p in reversed(last.parts) if isinstance(p, UserPromptPart)), None)
    question = str(prompt.content) if prompt is not None else ""
    if re.search(r"\border", question, re.IGNORECASE):
        return "call", (ORDERS_TOOL, {})
    return "call", (TOUCAN_TOOL, {"question": question})


def _reply_from(part: ToolReturnPart) -> str:
    content = part.content
    if part.tool_name == ORDERS_TOOL:
        orders = content if isinstance(content, list) else []
        if not orders:
            return "You have no open orders."
        lines = [f"- **{o['id']}**: {o['item']} ({o['total']} €)" for o in orders]
        return "Your open orders:\n\n" + "\n".join(lines)
    if isinstance(content, str):
        try:
            content = json.loads(content)
        except ValueError:
            return content
    if isinstance(content, dict):
        return str(content.get("answer", ""))
    return str(content)


def offline_model() -> FunctionModel:
    """A deterministic model for running the example with no LLM and no key."""

    def reply(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        kind, value = _decide(messages)
        if kind == "call":
            name, arguments = value
            return ModelResponse(parts=[ToolCallPart(name, arguments)])
        return ModelResponse(parts=[TextPart(value)])

    async def stream(
        messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | DeltaToolCalls]:
        kind, value = _decide(messages)
        if kind == "call":
            name, arguments = value
            yield {0: DeltaToolCall(name=name, json_args=json.dumps(arguments))}
            return
        for word in re.findall(r"\S+\s*", value):  # as an LLM streams: a word at a time
            yield word

    return FunctionModel(reply, stream_function=stream, model_name="offline-stand-in")
