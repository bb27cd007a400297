"""Your own AI chat on a real agent, with Toucan's answers and charts.

A pydantic-ai agent (your LLM: ``CHAT_MODEL``, or an offline stand-in without it) gets
Toucan's tools as the signed-in user through ``toucan.mcp_connection()``, so Row-Level
Security scopes every answer, plus one tool of the app's own (the user's open orders).
Each user's conversation is kept on the server; answers stream to the browser with
Toucan's progress; markdown is rendered by markdown-it-py and sanitized by nh3; charts
go through ``toucan_result()``. Every POST carries a CSRF token; the page runs under a
strict CSP; without JavaScript it still works, as plain form posts.

Runs with no account and no key (preview mode), or against ``flask toucan fake``::

    pip install -e ".[chat]"
    flask --app examples.own_chat.app run

Sign in as alice (tenant acme) or chen (tenant globex) and ask the same question.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import nh3
from flask import (
    Flask,
    Response,
    current_app,
    jsonify,
    redirect,
    render_template,
    render_template_string,
    request,
    stream_with_context,
    url_for,
)
from flask_caching import Cache
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
)
from flask_talisman import Talisman
from flask_wtf.csrf import CSRFProtect
from markdown_it import MarkdownIt
from markupsafe import Markup
from pydantic_ai.messages import ModelMessage

from flask_toucan import (
    Toucan,
    ToucanAuthError,
    ToucanError,
    ToucanUnavailable,
    ToucanUser,
)
from flask_toucan.views import refresh_token

from .agent import ChatDeps, build_agent
from .history import Conversation, Conversations

logger = logging.getLogger(__name__)

#: Questions longer than this (bytes, UTF-8) are refused with a message.
MAX_QUESTION = 4096
#: The longest a turn may take before the chat says so (Toucan's own deadline is shorter).
TURN_DEADLINE = 120.0


class Account(UserMixin):
    def __init__(self, id: str, tenant: str) -> None:
        self.id = id
        self.tenant = tenant


ACCOUNTS = {a.id: a for a in (Account("alice", "acme"), Account("chen", "globex"))}

login_manager = LoginManager()
login_manager.login_view = "sign_in"
toucan = Toucan()
csrf = CSRFProtect()
cache = Cache()


@login_manager.user_loader
def load_account(account_id: str) -> Account | None:
    return ACCOUNTS.get(account_id)


@toucan.user_loader
def load_toucan_user() -> ToucanUser | None:
    if not current_user.is_authenticated:
        return None
    return ToucanUser(
        current_user.id,
        attributes={"tenant": current_user.tenant},
        permissions={"ai": "can_query"},  # the user's own permission to ask the assistant
    )


# -- rendering ---------------------------------------------------------------------------

_markdown = MarkdownIt("commonmark", {"html": False}).enable("table")


def answer_html(markdown: str) -> Markup:
    """An answer's markdown as HTML: rendered by markdown-it-py (raw HTML off), then
    sanitized by nh3 (no script, no event handler, no ``javascript:`` link)."""
    html = nh3.clean(
        _markdown.render(markdown),
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
    return Markup(html)


RESULTS = "{% for v in visualizations %}{{ toucan_result(v) }}{% endfor %}"


def results_html(visualizations: list[dict[str, Any]]) -> str:
    return render_template_string(RESULTS, visualizations=visualizations)


# -- one turn of the conversation -------------------------------------------------------


@dataclass
class Outcome:
    """What a turn produced: the answer's markdown and charts, or the error to show."""

    text: str | None = None
    visualizations: list[dict[str, Any]] | None = None
    thread_id: str | None = None
    messages: list[ModelMessage] | None = None
    error: str | None = None


def failure_text(exc: BaseException) -> str:
    """What the chat says when a turn fails: typed, never a trace."""
    seen: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.append(current)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    for error in seen:
        if isinstance(error, ToucanAuthError):
            return "Toucan refused this question's access. Try again in a moment."
        if isinstance(error, ToucanUnavailable):
            return "Toucan is unavailable right now: it did not answer in time or was not reached."
        if isinstance(error, ToucanError):
            return "Toucan could not answer this question."
    return "The assistant could not answer right now (Toucan may be unavailable)."


async def run_turn(
    agent: Any, question: str, history: list[ModelMessage], deps: ChatDeps
) -> Outcome:
    """Run the agent on ``question``; its text streams to ``deps.emit`` as it comes."""
    from flask_toucan.mcp import answer_from

    try:
        async with agent.run_stream(question, message_history=history, deps=deps) as result:
            async for delta in result.stream_text(delta=True, debounce_by=None):
                deps.emit({"event": "delta", "text": delta})
            text = await result.get_output()
            messages = result.new_messages()
    except Exception as exc:
        logger.exception("a chat turn failed")
        return Outcome(error=failure_text(exc))
    answers = [answer_from(envelope) for envelope in deps.envelopes]
    visualizations = [dict(v) for a in answers for v in a.visualizations]
    thread_id = next((a.thread_id for a in reversed(answers) if a.thread_id), None)
    return Outcome(str(text), visualizations, thread_id, messages)


def start_turn(question: str, conversation: Conversation) -> tuple[queue.Queue[Any], ChatDeps]:
    """Start a turn in a worker thread (the agent is async; the view is not); its events
    and, last, its :class:`Outcome` arrive on the queue."""
    events: queue.Queue[Any] = queue.Queue()
    user = toucan.current_user()
    assert user is not None  # @login_required
    deps = ChatDeps(current_user.id, user, conversation.thread_id, events.put)
    agent = build_agent(toucan, deps)  # here: the user and connection resolve in the request
    history = conversation.messages()
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def work() -> None:
        with app.app_context():
            events.put(anyio.run(run_turn, agent, question, history, deps))

    threading.Thread(target=work, daemon=True, name="own-chat-turn").start()
    return events, deps


def finish(question: str, outcome: Outcome) -> dict[str, Any]:
    """Keep the turn in the user's conversation; the turn as the page shows it."""
    turn: dict[str, Any] = {"question": question}
    if outcome.error is not None:
        turn["error"] = outcome.error
    else:
        turn.update(answer=outcome.text, visualizations=outcome.visualizations or [])
    conversations().add_turn(current_user.id, turn, outcome.messages, outcome.thread_id)
    return turn


def conversations() -> Conversations:
    return Conversations(cache)


# -- the app ----------------------------------------------------------------------------


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.environ.get("EXAMPLE_SECRET_KEY", "example-only-not-secret"),
        TOUCAN_PREVIEW=not os.environ.get("TOUCAN_API_KEY"),
        # Conversations live in the app's own cache (SimpleCache here; Redis in production).
        CACHE_TYPE="SimpleCache",
        CACHE_THRESHOLD=1000,
        # Over plain http on your machine; True behind HTTPS.
        SESSION_COOKIE_SECURE=False,
    )
    app.config.update(config or {})
    login_manager.init_app(app)
    toucan.init_app(app)
    cache.init_app(app)
    csrf.init_app(app)
    csrf.exempt(refresh_token)  # its own defence: a header and Origin checks (refresh guide)
    toucan_origin = _origin(app.extensions["toucan"].service.settings.script_url)
    Talisman(
        app,
        force_https=False,
        session_cookie_secure=app.config["SESSION_COOKIE_SECURE"],
        content_security_policy={
            "default-src": "'self'",
            "script-src": ["'self'", toucan_origin],
            "connect-src": ["'self'", toucan_origin],
            "style-src": ["'self'", "'unsafe-inline'"],  # components' style attributes
            "img-src": ["'self'", "data:"],
            "object-src": "'none'",
            "base-uri": "'none'",
            "frame-ancestors": "'none'",
        },
        content_security_policy_nonce_in=["script-src"],
    )

    @app.get("/sign-in")
    def sign_in() -> str:
        return render_template("chat_sign_in.html", accounts=ACCOUNTS)

    @app.post("/sign-in")
    def do_sign_in() -> Response:
        account = ACCOUNTS.get(request.form.get("account", ""))
        if account is None:
            return redirect(url_for("sign_in"))
        login_user(account)
        return redirect(url_for("chat"))

    @app.post("/sign-out")
    def sign_out() -> Response:
        logout_user()
        return redirect(url_for("sign_in"))

    @app.get("/")
    @login_required
    def chat() -> str:
        conversation = conversations().load(current_user.id)
        return render_template(
            "chat.html", turns=conversation.turns, answer_html=answer_html, notice=None
        )

    @app.post("/new")
    @login_required
    def new_conversation() -> Response:
        conversations().clear(current_user.id)
        return redirect(url_for("chat"))

    @app.post("/ask")
    @login_required
    def ask() -> Any:
        question = request.form.get("question", "").strip()
        streaming = request.headers.get("Accept") == "application/x-ndjson"
        notice = None
        if not question:
            notice = "Type a question first."
        elif len(question.encode()) > MAX_QUESTION:
            notice = f"Questions are limited to {MAX_QUESTION // 1024} KB: please shorten it."
        if notice is not None:
            if streaming:
                return jsonify(error=notice), 413 if question else 400
            turns = conversations().load(current_user.id).turns
            page = render_template("chat.html", turns=turns, answer_html=answer_html,
                                   notice=notice)  # fmt: skip
            return page, 413 if question else 400
        events, _ = start_turn(question, conversations().load(current_user.id))
        if not streaming:
            # Without JavaScript: wait for the answer, then show the conversation.
            finish(question, _wait(events))
            return redirect(url_for("chat", _anchor="latest"))
        return Response(
            stream_with_context(_stream(question, events)),
            mimetype="application/x-ndjson",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return app


def _next(events: queue.Queue[Any]) -> Any:
    """The turn's next event, its :class:`Outcome`, or a timeout message as the outcome."""
    try:
        return events.get(timeout=TURN_DEADLINE)
    except queue.Empty:
        return Outcome(error="The assistant took too long to answer.")


def _wait(events: queue.Queue[Any]) -> Outcome:
    """The turn's outcome (its events dropped)."""
    while not isinstance(item := _next(events), Outcome):
        pass
    return item


def _stream(question: str, events: queue.Queue[Any]) -> Iterator[str]:
    """The turn as newline-delimited JSON events: status, progress and text deltas as
    they come, then ``done`` (the sanitized answer and its charts) or ``error``."""
    while not isinstance(item := _next(events), Outcome):
        yield json.dumps(item) + "\n"
    turn = finish(question, item)
    if "error" in turn:
        yield json.dumps({"event": "error", "text": turn["error"], "question": question}) + "\n"
        return
    yield (
        json.dumps(
            {
                "event": "done",
                "answer_html": str(answer_html(turn["answer"])),
                "results_html": results_html(turn["visualizations"]),
            }
        )
        + "\n"
    )


app = create_app()
