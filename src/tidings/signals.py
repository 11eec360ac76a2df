"""What happened in a transaction that other domains react to before it commits.

Ingestion notes facts (an event recorded, attributes changed, segment entries and exits, relationships);
just before the transaction commits, the reactions registered here (campaign triggers, woken journeys)
run in the same transaction, so a trigger and the change that caused it commit or roll back together.
Notes are kept on the session; a unit of a group commit that rolls back to its savepoint takes its notes
with it (see :func:`mark` and :func:`rewind`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

_NOTES = "tidings.signals"


@dataclass(frozen=True)
class EventRecorded:
    workspace_id: int
    person_id: int
    event_id: str
    name: str
    type: str
    data: dict[str, Any]
    timestamp: int
    can_trigger: bool


@dataclass(frozen=True)
class AttributesChanged:
    workspace_id: int
    person_id: int
    # name → {"from": old, "to": new}
    changes: dict[str, Any]
    created: bool


@dataclass(frozen=True)
class SegmentMoved:
    workspace_id: int
    segment_id: int
    person_id: int
    entered: bool


@dataclass(frozen=True)
class RelationshipChanged:
    workspace_id: int
    person_id: int
    object_type_id: str
    object_id: str
    added: bool


@dataclass(frozen=True)
class ObjectChanged:
    workspace_id: int
    object_type_id: str
    object_id: str
    # Attribute name → {"from", "to"}; empty for a new object with no attributes.
    changes: dict[str, Any]
    created: bool


Signal = EventRecorded | AttributesChanged | SegmentMoved | RelationshipChanged | ObjectChanged
Reaction = Callable[[Session, list[Signal], int], None]
_reactions: list[Reaction] = []
# Work that must run before reactions see the notes (the real-time segment pass, which notes moves).
_first: list[Callable[[Session], None]] = []


def note(session: Session, signal: Signal, *, now: int) -> None:
    notes: tuple[list[Signal], list[int]] | None = session.info.get(_NOTES)
    if notes is None:
        notes = session.info[_NOTES] = ([], [now])
    notes[0].append(signal)
    notes[1][0] = max(notes[1][0], now)


def mark(session: Session) -> int:
    """How many notes the session holds (before a unit of a group commit runs)."""
    notes = session.info.get(_NOTES)
    return len(notes[0]) if notes else 0


def rewind(session: Session, mark_: int) -> None:
    """Forget the notes taken since ``mark_`` (the unit that took them was rolled back)."""
    notes = session.info.get(_NOTES)
    if notes:
        del notes[0][mark_:]


def react(reaction: Reaction) -> Reaction:
    _reactions.append(reaction)
    return reaction


def before_reactions(work: Callable[[Session], None]) -> None:
    _first.append(work)


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    # Reactions may note more (a journey's "send event" block triggers other campaigns): drain until quiet.
    for _ in range(10):
        for work in _first:
            work(session)
        notes = session.info.pop(_NOTES, None)
        if not notes or not notes[0]:
            return
        session.flush()
        for reaction in _reactions:
            reaction(session, notes[0], notes[1][0])
