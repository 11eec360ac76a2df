"""The assistant's conversations in the store.

A conversation is the provider-neutral message list (``tidings.ai.providers.Message``) of every request
made in it, stored as JSON: tool calls and tool results become plain objects and come back as
``ToolCall`` / ``ToolResult``. Each belongs to the App API key that started it; for any other key it does
not exist (404, never 403, so ids cannot be probed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from tidings.ai import providers
from tidings.errors import InvalidInput, NotFound
from tidings.ids import is_ulid, new_ulid
from tidings.models.assistant import AssistantConversation
from tidings.workspaces.schemas import WorkspaceContext

Stored = dict[str, Any]

# Every request sends the whole stored conversation to the model (each turn is paid for, and bounded by
# the model's context window) and the row holds it as one JSON document, so only the latest requests are
# kept: whole ones (an instruction and everything its loop added), newest first, while they fit in
# MAX_MESSAGES. Cutting only before an instruction never separates an assistant message's tool calls from
# their results, and leaves the conversation starting with a user message, as the providers require. The
# newest request is always kept whole, so a conversation may hold 41 messages (an instruction and
# 20 steps, each a model turn and its tool results).
MAX_MESSAGES = 40
TITLE_LENGTH = 80
MAX_PAGE = 100


@dataclass(frozen=True)
class Conversation:
    """A stored conversation, ready to continue."""

    id: str
    messages: list[providers.Message]
    model: str


def dump(messages: list[providers.Message]) -> list[Stored]:
    """Messages as JSON-ready objects."""
    stored: list[Stored] = []
    for message in messages:
        if message["role"] == "assistant":
            calls = [asdict(call) for call in message.get("tool_calls") or []]
            stored.append({"role": "assistant", "text": message.get("text"), "tool_calls": calls})
        elif message["role"] == "tool":
            stored.append({"role": "tool", "results": [asdict(result) for result in message["results"]]})
        else:
            stored.append({"role": "user", "text": message["text"]})
    return stored


def load(stored: list[Stored]) -> list[providers.Message]:
    """``dump``'s objects as messages again."""
    messages: list[providers.Message] = []
    for message in stored:
        if message["role"] == "assistant":
            calls = [providers.ToolCall(**call) for call in message["tool_calls"]]
            messages.append({"role": "assistant", "text": message["text"], "tool_calls": calls})
        elif message["role"] == "tool":
            results = [providers.ToolResult(**result) for result in message["results"]]
            messages.append({"role": "tool", "results": results})
        else:
            messages.append({"role": "user", "text": message["text"]})
    return messages


def keep_recent(stored: list[Stored]) -> list[Stored]:
    """The latest whole requests that fit in ``MAX_MESSAGES`` (at least the newest one)."""
    starts = [index for index, message in enumerate(stored) if message["role"] == "user"]
    for start in starts:
        if len(stored) - start <= MAX_MESSAGES:
            return stored[start:]
    return stored[starts[-1] :] if starts else stored


def _owned(
    session: Session, ws: WorkspaceContext, conversation_id: str, *, lock: bool = False
) -> AssistantConversation:
    # Writers lock the row (PostgreSQL; SQLite has one writer anyway) so concurrent appends queue.
    found = session.get(AssistantConversation, conversation_id, with_for_update=lock)
    if found is None or (found.workspace_id, found.credential_id) != (ws.workspace_id, ws.credential_id):
        raise NotFound(f"conversation {conversation_id} not found")
    return found


def find(session: Session, ws: WorkspaceContext, conversation_id: Any) -> Conversation:
    """The caller's conversation to continue (NotFound when it is another key's or does not exist)."""
    if not isinstance(conversation_id, str):
        raise InvalidInput("conversation_id must be text", field="conversation_id")
    found = _owned(session, ws, conversation_id)
    return Conversation(found.id, load(found.messages), found.model)


def record(
    session: Session,
    ws: WorkspaceContext,
    conversation_id: str | None,
    turns: list[providers.Message],
    *,
    model: str,
    now: int,
) -> str:
    """Append one request's ``turns`` to the conversation (a new one when ``conversation_id`` is None) and
    return its id.

    The turns go after whatever the row holds now, not after what the request started from, so two
    requests continuing one conversation at once both keep their turns."""
    if conversation_id is None:
        title = " ".join(str(turns[0]["text"]).split())
        if len(title) > TITLE_LENGTH:
            title = title[: TITLE_LENGTH - 1] + "…"
        conversation = AssistantConversation(
            id=new_ulid(),
            workspace_id=ws.workspace_id,
            credential_id=ws.credential_id,
            title=title,
            messages=[],
            created_at=now,
        )
        session.add(conversation)
    else:
        conversation = _owned(session, ws, conversation_id, lock=True)
    # A new list, not an in-place change: the ORM only notices a JSON column being reassigned.
    conversation.messages = keep_recent([*conversation.messages, *dump(turns)])
    conversation.model = model
    conversation.updated_at = now
    return conversation.id


def _summary(conversation: AssistantConversation) -> Stored:
    return {
        "id": conversation.id,
        "title": conversation.title,
        "model": conversation.model,
        "created_at": conversation.created_at,
        "updated_at": conversation.updated_at,
    }


def list_conversations(session: Session, ws: WorkspaceContext, *, start: str | None, limit: int) -> Stored:
    """The caller's conversations, newest first (by when they were started), without their messages."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    query = (
        select(AssistantConversation)
        .options(defer(AssistantConversation.messages))
        .where(
            AssistantConversation.workspace_id == ws.workspace_id,
            AssistantConversation.credential_id == ws.credential_id,
        )
    )
    if start:
        if not is_ulid(start):
            raise InvalidInput("start must be a cursor returned as next", field="start")
        # Ids are ULIDs, whose canonical (upper-case) text sorts by creation time.
        query = query.where(AssistantConversation.id < start.upper())
    rows = list(session.scalars(query.order_by(AssistantConversation.id.desc()).limit(limit + 1)))
    page = rows[:limit]
    return {
        "conversations": [_summary(row) for row in page],
        "next": page[-1].id if len(rows) > limit else "",
    }


def get(session: Session, ws: WorkspaceContext, conversation_id: str) -> Stored:
    """One of the caller's conversations with its messages as stored, tool calls and results included."""
    found = _owned(session, ws, conversation_id)
    return {**_summary(found), "messages": found.messages}


def delete(session: Session, ws: WorkspaceContext, conversation_id: str) -> None:
    session.delete(_owned(session, ws, conversation_id))
