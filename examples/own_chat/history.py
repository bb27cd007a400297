"""Each signed-in user's conversation, kept on the server in the app's cache (never in the
cookie), bounded in turns, size and age: the agent's message history, Toucan's thread id,
and what the page shows of each turn."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from flask_caching import Cache
from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter

#: Turns kept per user (the oldest go first), bytes of one stored conversation, and
#: seconds a conversation is kept after its last turn.
MAX_TURNS = 20
MAX_BYTES = 256 * 1024
MAX_AGE = 24 * 3600


@dataclass
class Conversation:
    """One user's conversation: Toucan's thread, and the turns (question, markdown answer,
    visualizations, the agent's messages of that turn, or an error)."""

    thread_id: str | None = None
    turns: list[dict[str, Any]] = field(default_factory=list)

    def messages(self) -> list[ModelMessage]:
        """The agent's message history: every kept turn's messages, in order."""
        history: list[ModelMessage] = []
        for turn in self.turns:
            if turn.get("messages"):
                history.extend(ModelMessagesTypeAdapter.validate_json(turn["messages"]))
        return history


class Conversations:
    """Conversations by account id in a Flask-Caching ``Cache``, as JSON text."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    @staticmethod
    def _key(account_id: str) -> str:
        return f"own-chat:conversation:{account_id}"

    def load(self, account_id: str) -> Conversation:
        raw = self.cache.get(self._key(account_id))
        if not isinstance(raw, str):
            return Conversation()
        try:
            data = json.loads(raw)
            return Conversation(data.get("thread_id"), list(data.get("turns") or []))
        except (ValueError, AttributeError):
            return Conversation()

    def add_turn(
        self,
        account_id: str,
        turn: dict[str, Any],
        new_messages: list[ModelMessage] | None = None,
        thread_id: str | None = None,
    ) -> None:
        conversation = self.load(account_id)
        if new_messages:
            turn = {**turn, "messages": ModelMessagesTypeAdapter.dump_json(new_messages).decode()}
        conversation.turns.append(turn)
        conversation.thread_id = thread_id or conversation.thread_id
        del conversation.turns[:-MAX_TURNS]
        text = self._dump(conversation)
        while len(text.encode()) > MAX_BYTES and len(conversation.turns) > 1:
            del conversation.turns[0]
            text = self._dump(conversation)
        self.cache.set(self._key(account_id), text, timeout=MAX_AGE)

    def clear(self, account_id: str) -> None:
        self.cache.delete(self._key(account_id))

    @staticmethod
    def _dump(conversation: Conversation) -> str:
        return json.dumps({"thread_id": conversation.thread_id, "turns": conversation.turns})
