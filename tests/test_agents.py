"""The recipes of docs/guides/own-chat.md, run: Toucan's tools handed to pydantic-ai,
LangChain, the OpenAI Agents SDK and the plain MCP SDK through ``toucan.mcp_connection()``,
against FakeToucan's MCP endpoint (the SDK's own server). For each: two users whose
answers never cross, and a token revoked mid-conversation (one fresh mint, no error).
No LLM: pydantic-ai runs on its ``FunctionModel``; the other two call the tools directly.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from flask_toucan import Toucan
from flask_toucan.mcp import MCPConnection
from flask_toucan.testing import FakeToucan, decode_fake_token

from .conftest import USERS

#: A recipe asks one question over a connection; a conversation is two of them, the
#: second after ``between()`` (the token revoked), on the same client where the
#: framework has one. It returns the answers' text.
Conversation = Callable[[MCPConnection, list[str], Callable[[], None]], list[str]]


def pydantic_ai_conversation(
    conn: MCPConnection, questions: list[str], between: Callable[[], None]
) -> list[str]:
    from pydantic_ai import Agent
    from pydantic_ai.mcp import MCPToolset
    from pydantic_ai.messages import (
        ModelMessage,
        ModelResponse,
        TextPart,
        ToolCallPart,
        ToolReturnPart,
        UserPromptPart,
    )
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        """Data questions go to Toucan's tool; its answer is the reply."""
        assert "ask_toucan_assistant" in [tool.name for tool in info.function_tools]
        for part in messages[-1].parts:
            if isinstance(part, ToolReturnPart):
                content = part.content
                text = content if isinstance(content, str) else json.dumps(content)
                return ModelResponse(parts=[TextPart(text)])
        prompt = next(p for p in messages[-1].parts if isinstance(p, UserPromptPart))
        question = str(prompt.content)
        return ModelResponse(parts=[ToolCallPart("ask_toucan_assistant", {"question": question})])

    # The recipe of the guide, in one line:
    agent = Agent(FunctionModel(model), toolsets=[MCPToolset(conn.url, auth=conn.auth)])

    async def run() -> list[str]:
        # agent.run in asyncio.run, not run_sync: the event loop is closed when done
        # (run_sync keeps one open for the thread).
        answers: list[str] = []
        history: list[ModelMessage] = []
        for i, question in enumerate(questions):
            if i:
                between()
            result = await agent.run(question, message_history=history)
            history = result.all_messages()
            answers.append(result.output)
        return answers

    return asyncio.run(run())


def langchain_conversation(
    conn: MCPConnection, questions: list[str], between: Callable[[], None]
) -> list[str]:
    from langchain_mcp_adapters.client import MultiServerMCPClient

    async def run() -> list[str]:
        client = MultiServerMCPClient(
            {"toucan": {"transport": "streamable_http", "url": conn.url, "auth": conn.auth}}
        )
        tools = await client.get_tools()
        ask = next(tool for tool in tools if tool.name == "ask_toucan_assistant")
        answers = []
        for i, question in enumerate(questions):
            if i:
                between()
            answers.append(json.dumps(await ask.ainvoke({"question": question})))
        return answers

    return asyncio.run(run())


def openai_agents_conversation(
    conn: MCPConnection, questions: list[str], between: Callable[[], None]
) -> list[str]:
    from agents.mcp import MCPServerStreamableHttp

    async def run() -> list[str]:
        answers = []
        async with MCPServerStreamableHttp(params={"url": conn.url, "auth": conn.auth}) as server:
            names = [tool.name for tool in await server.list_tools()]
            assert "ask_toucan_assistant" in names
            for i, question in enumerate(questions):
                if i:
                    between()
                result = await server.call_tool("ask_toucan_assistant", {"question": question})
                answers.append(result.content[0].text)
        return answers

    return asyncio.run(run())


RECIPES: dict[str, Conversation] = {
    "pydantic-ai": pydantic_ai_conversation,
    "langchain": langchain_conversation,
    "openai-agents": openai_agents_conversation,
}


def _bearer_subjects(fake: FakeToucan) -> list[str]:
    subjects = []
    for request in fake.requests:
        if request.path == "/api/mcp":
            token = str(request.headers.get("Authorization", "")).partition(" ")[2]
            subjects.append(str(decode_fake_token(token)["sub"]))
    return subjects


# openai-agents still calls the MCP SDK's older streamablehttp_client (its deprecation is
# theirs to act on; flask_toucan uses streamable_http_client).
@pytest.mark.filterwarnings("ignore:Use `streamable_http_client` instead:DeprecationWarning")
@pytest.mark.parametrize("framework", sorted(RECIPES))
def test_a_framework_asks_as_each_user_and_survives_a_revoked_token(
    make_app: Callable[..., Flask], fake: FakeToucan, framework: str
) -> None:
    app = make_app()
    toucan: Toucan = app.extensions["test_toucan"]
    # Resolved in each user's own request; used after it ended, as a chat's task would.
    with app.test_request_context(headers={"X-User": "alice"}):
        alice = toucan.mcp_connection()
    with app.test_request_context(headers={"X-User": "carol"}):
        carol = toucan.mcp_connection()
    conversation = RECIPES[framework]

    carols = conversation(carol, ["What sold best?"], lambda: None)
    minted_before = len(fake.mints)
    alices = conversation(alice, ["What sold best?", "And by region?"], fake.revoke)

    assert all("`carol`" in a and "globex" in a for a in carols), carols
    assert all("`alice`" in a and "acme" in a for a in alices), alices
    assert not any("globex" in a for a in alices) and not any("acme" in a for a in carols)
    # alice's first token, then exactly one fresh mint after the revocation: no error.
    assert len(fake.mints) == minted_before + 2
    assert [who for who, _, _ in fake.questions] == ["carol", "alice", "alice"]
    # Every MCP request carried the token of the user it spoke for.
    assert set(_bearer_subjects(fake)) == {"alice", "carol"}


def test_the_plain_mcp_sdk_recipe_survives_a_revoked_token(
    make_app: Callable[..., Flask], fake: FakeToucan
) -> None:
    app = make_app()
    toucan: Toucan = app.extensions["test_toucan"]

    async def conversation() -> list[Any]:
        with app.app_context():
            async with toucan.mcp_session(user=USERS["alice"]) as session:
                first = await session.call_tool("ask_toucan_assistant", {"question": "q1"})
                fake.revoke()
                second = await session.call_tool("ask_toucan_assistant", {"question": "q2"})
                return [first, second]

    first, second = asyncio.run(conversation())
    for result in (first, second):
        assert "`alice`" in result.content[0].text
    assert len(fake.mints) == 2
    assert [who for who, _, _ in fake.questions] == ["alice", "alice"]
