"""A workspace's definition versions, read once per transaction.

Each process caches a workspace's segment definitions and campaign triggers, keyed by
``workspaces.segments_version`` and ``campaigns_version``, which saving a segment or a campaign bumps.
Every write that touches people checks both before it commits. One statement reads the pair, and the
transaction keeps it: on PostgreSQL the second read was one more round trip in a write transaction of
eight or nine.

``lock=True`` (segments) reads with a share lock on the workspace row on PostgreSQL, which saving a
segment's definition takes exclusively, so no evaluation runs against a definition being replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session, SessionTransaction

from tidings.models import Workspace

_KEY = "tidings.workspace_versions"
_TABLE = Workspace.__tablename__
_COLUMNS = f"SELECT segments_version, campaigns_version FROM {_TABLE} WHERE id = "
# By ``postgresql``: the driver's placeholder differs.
_SELECT = {False: _COLUMNS + "?", True: _COLUMNS + "%s"}
_SELECT_POSTGRES_LOCKED = _COLUMNS + "%s FOR SHARE"


@dataclass
class _Read:
    segments: int
    campaigns: int
    locked: bool


@dataclass
class _Cache:
    transaction: SessionTransaction
    found: dict[int, _Read] = field(default_factory=dict)


def _cache(session: Session) -> _Cache:
    transaction = session.get_transaction()
    assert transaction is not None, "read inside a transaction"
    cache: _Cache | None = session.info.get(_KEY)
    if cache is None or cache.transaction is not transaction:
        cache = session.info[_KEY] = _Cache(transaction)
    return cache


def read(session: Session, workspace_id: int, *, lock: bool = False) -> tuple[int, int]:
    """(segments_version, campaigns_version) as this transaction sees them."""
    cache = _cache(session)
    found = cache.found.get(workspace_id)
    if found is None or (lock and not found.locked):
        connection = session.connection()
        postgres = connection.dialect.name == "postgresql"
        # Straight to the driver: every write that touches people runs this once, and SQLAlchemy's
        # statement building and result processing were most of its cost (a tenth of B1's writer).
        sql = _SELECT_POSTGRES_LOCKED if postgres and lock else _SELECT[postgres]
        cursor = connection.connection.cursor()
        try:
            cursor.execute(sql, (workspace_id,))
            row = cursor.fetchone()
        finally:
            cursor.close()
        segments, campaigns = (row[0] or 0, row[1] or 0) if row is not None else (0, 0)
        found = cache.found[workspace_id] = _Read(segments, campaigns, locked=lock)
    return found.segments, found.campaigns


def forget(session: Session, workspace_id: int) -> None:
    """This transaction bumped a version: the next read goes to the database."""
    cache: _Cache | None = session.info.get(_KEY)
    if cache is not None:
        cache.found.pop(workspace_id, None)
