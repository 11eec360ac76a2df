"""Waking this process's worker as soon as a transaction commits new due work (a triggered journey, a
queued delivery), instead of at its next poll. Other processes still find the work by polling."""

from __future__ import annotations

import threading

from sqlalchemy import event
from sqlalchemy.orm import Session

WORK = threading.Event()
_FLAG = "tidings.wake"


def soon(session: Session) -> None:
    """Wake the worker once this transaction has committed."""
    session.info[_FLAG] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(_FLAG, False):
        WORK.set()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_FLAG, None)
