"""AI credits: a balance and a ledger per account.

Every model call the provider answers spends the model's credits (runs, previews and field generation);
requests the provider refused or never answered (rate limits, errors, timeouts) cost nothing. The balance
is checked before each call and charged when the answer is stored, in that transaction, so calls already
in flight when it runs out may take it a little below zero; the next call then finds it empty.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from tidings.ai.settings import Actor, account_row, loaded_row
from tidings.audit import service as audit
from tidings.config import get_settings
from tidings.errors import Forbidden, InvalidInput
from tidings.models import AccountAi, CreditEntry
from tidings.people.queries import decode_cursor

MAX_GRANT = 10_000_000


def millis(credits: float) -> int:
    return round(credits * 1000)


def _balance_millis(session: Session, account_id: int) -> int:
    """Without writing: an account that has no AI row yet has its starting credits."""
    row = loaded_row(session, account_id)
    return row.credit_millis if row is not None else millis(get_settings().ai_initial_credits)


def balance(session: Session, account_id: int) -> float:
    return _balance_millis(session, account_id) / 1000


def can_spend(session: Session, account_id: int, credits: float) -> bool:
    return _balance_millis(session, account_id) >= millis(credits)


def spend(
    session: Session,
    account_id: int,
    credits: float,
    *,
    kind: str,
    model: str,
    now: int,
    workspace_id: int | None = None,
    campaign_id: int | None = None,
    journey_id: int | None = None,
    actor: str | None = None,
) -> None:
    amount = millis(credits)
    row = account_row(session, account_id, now=now)
    # One statement: concurrent spenders each take their amount off the stored balance.
    after = session.execute(
        update(AccountAi)
        .where(AccountAi.account_id == account_id)
        .values(credit_millis=AccountAi.credit_millis - amount)
        .returning(AccountAi.credit_millis)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    session.add(
        CreditEntry(
            account_id=account_id,
            workspace_id=workspace_id,
            at=now,
            kind=kind,
            delta_millis=-amount,
            balance_millis=after,
            model=model,
            campaign_id=campaign_id,
            journey_id=journey_id,
            actor=actor,
        )
    )
    # The row in this session now says what the database says, without a read or a later UPDATE.
    set_committed_value(row, "credit_millis", after)


def grant(
    session: Session, account_id: int, credits: float, *, actor: Actor, note: str = "", now: int
) -> float:
    """Add credits (admins only); audited. Returns the new balance."""
    if not actor.admin:
        raise Forbidden("only an account admin may add AI credits (use an admin key or the CLI)")
    if isinstance(credits, bool) or not isinstance(credits, int | float) or not 0 < credits <= MAX_GRANT:
        raise InvalidInput(f"credits must be a number above 0 and at most {MAX_GRANT}", field="credits")
    row = account_row(session, account_id, now=now)
    before = row.credit_millis
    amount = millis(credits)
    after = session.execute(
        update(AccountAi)
        .where(AccountAi.account_id == account_id)
        .values(credit_millis=AccountAi.credit_millis + amount)
        .returning(AccountAi.credit_millis)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    session.add(
        CreditEntry(
            account_id=account_id,
            at=now,
            kind="grant",
            delta_millis=amount,
            balance_millis=after,
            actor=actor.name,
            note=note or None,
        )
    )
    audit.record(
        session,
        account_id,
        actor=actor.name,
        action="ai_credits.grant",
        target=f"account:{account_id}",
        old=before / 1000,
        new=after / 1000,
        now=now,
    )
    set_committed_value(row, "credit_millis", after)
    return after / 1000


def _entry_view(entry: CreditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at,
        "kind": entry.kind,
        "credits": entry.delta_millis / 1000,
        "balance": entry.balance_millis / 1000,
        "model": entry.model,
        "workspace_id": entry.workspace_id,
        "campaign_id": entry.campaign_id,
        "journey_id": entry.journey_id,
        "actor": entry.actor,
        "note": entry.note,
    }


def summary(session: Session, account_id: int, *, since: int | None = None) -> dict[str, Any]:
    """The balance and what was spent (since a time, or ever), by kind and by model."""
    query = select(
        CreditEntry.kind, CreditEntry.model, func.count(), func.sum(CreditEntry.delta_millis)
    ).where(CreditEntry.account_id == account_id, CreditEntry.delta_millis < 0)
    if since is not None:
        query = query.where(CreditEntry.at >= since)
    by_kind: dict[str, dict[str, float]] = {}
    by_model: dict[str, dict[str, float]] = {}
    total = 0
    for kind, model, count, spent in session.execute(query.group_by(CreditEntry.kind, CreditEntry.model)):
        used = -int(spent or 0)
        total += used
        for bucket, key in ((by_kind, kind), (by_model, model or "")):
            entry = bucket.setdefault(key, {"calls": 0, "credits": 0.0})
            entry["calls"] += count
            entry["credits"] = round(entry["credits"] + used / 1000, 3)
    return {
        "balance": balance(session, account_id),
        "used": total / 1000,
        "since": since,
        "by_kind": by_kind,
        "by_model": by_model,
    }


def ledger(
    session: Session, account_id: int, *, start: str | None = None, limit: int = 100
) -> dict[str, Any]:
    query = select(CreditEntry).where(CreditEntry.account_id == account_id)
    cursor = decode_cursor(start)
    if cursor is not None:
        query = query.where(CreditEntry.id < cursor)
    limit = max(1, min(limit, 1000))
    rows = list(session.scalars(query.order_by(CreditEntry.id.desc()).limit(limit + 1)))
    page = rows[:limit]
    return {"entries": [_entry_view(r) for r in page], "next": str(page[-1].id) if len(rows) > limit else ""}
