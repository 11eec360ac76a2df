"""API-triggered broadcasts: validating a trigger request, and expanding its audience into journeys.

``trigger`` checks the request (exactly one audience style of Customer.io's ``POST
/v1/campaigns/{id}/triggers``), writes a :class:`BroadcastTrigger` and queues an expansion job. The job
(:func:`expand`) resolves the audience one chunk per run, each run its own transaction that inserts the
chunk's journeys, moves ``BroadcastTrigger.cursor`` on and queues the next run, so a crash resumes where
the last committed chunk ended and nobody is messaged twice.

Explicit audiences (``emails``, ``ids``, ``per_user_data``, ``data_file_url``) name people who must
exist: as in Customer.io, a trigger naming unknown people fails as a whole (each unknown recipient is
listed by ``…/errors``) unless the matching ``*_ignore_missing`` flag is set, in which case they are
skipped. So that nobody is messaged by a trigger that then fails, such a trigger is first checked in a
pass of its own (phase ``check``) before any journey is written (phase ``send``).
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from tidings.campaigns.definition import Definition
from tidings.campaigns.service import get_campaign
from tidings.config import Settings
from tidings.errors import Conflict, InvalidInput, NotFound, RateLimited
from tidings.journeys.engine import definition_of
from tidings.messaging.outbound import OutboundRefused, check_url, http_client
from tidings.models import (
    BroadcastTrigger,
    BroadcastTriggerError,
    Campaign,
    Journey,
    Person,
    Segment,
    Workspace,
)
from tidings.people.identifiers import email_key
from tidings.segments import compiler
from tidings.segments.conditions import ConditionError, dependencies, parse
from tidings.worker import queue, wake
from tidings.workspaces.limits import WorkspaceSettings

EXPAND_JOB = "broadcasts.expand"
CHUNK = 1000
STYLES = ("recipients", "emails", "ids", "per_user_data", "data_file_url")
FLAGS = ("email_ignore_missing", "email_add_duplicates", "id_ignore_missing")
ALLOWED_FLAGS: dict[str, tuple[str, ...]] = {
    "default": (),
    "recipients": (),
    "emails": ("email_ignore_missing", "email_add_duplicates"),
    "ids": ("id_ignore_missing",),
    "per_user_data": FLAGS,
    "data_file_url": FLAGS,
}
MAX_LIST = 100_000
MAX_FILE_BYTES = 50_000_000
DOWNLOAD_TIMEOUT = 30.0
MAX_ERROR_PAGE = 1000

Json = dict[str, Any]


# -- the trigger request --------------------------------------------------------------------------------


def _identifier(value: Any, key: str, path: str) -> str:
    if key == "id" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{path} must be a non-empty string", field=path)
    return value


def _entries(value: Any, style: str) -> list[Json]:
    """emails / ids / per_user_data → a list of {"id"|"email": …, "data"?: {…}}."""
    if not isinstance(value, list) or not value:
        raise InvalidInput(f"{style} must be a non-empty list", field=style)
    if len(value) > MAX_LIST:
        raise InvalidInput(f"{style} may hold at most {MAX_LIST} entries", field=style)
    if style in ("emails", "ids"):
        key = "email" if style == "emails" else "id"
        return [{key: _identifier(item, key, f"{style}[{i}]")} for i, item in enumerate(value)]
    return [_per_user_entry(item, f"per_user_data[{i}]") for i, item in enumerate(value)]


def _per_user_entry(item: Any, path: str) -> Json:
    if not isinstance(item, dict):
        raise InvalidInput(f"{path} must be an object with id or email, and data", field=path)
    unknown = sorted(set(item) - {"id", "email", "data"})
    if unknown:
        raise InvalidInput(f"{path}.{unknown[0]} is not a field; expected id or email, and data", field=path)
    named = [key for key in ("id", "email") if item.get(key) not in (None, "")]
    if len(named) != 1:
        raise InvalidInput(f"{path} must hold exactly one of id or email", field=path)
    key = named[0]
    entry: Json = {key: _identifier(item[key], key, f"{path}.{key}")}
    data = item.get("data")
    if data is not None:
        if not isinstance(data, dict):
            raise InvalidInput(f"{path}.data must be an object", field=f"{path}.data")
        entry["data"] = data
    return entry


def _check_segments(session: Session, workspace_id: int, document: Any) -> None:
    used = dependencies(parse(document, "recipients")).segments
    if not used:
        return
    known = set(
        session.scalars(select(Segment.id).where(Segment.workspace_id == workspace_id, Segment.id.in_(used)))
    )
    for segment_id in sorted(used - known):
        raise ConditionError(f"recipients: segment {segment_id} does not exist", field="recipients")


def validate(session: Session, workspace_id: int, body: Any) -> Json:
    """Check a trigger request; return it normalised ({"style", "data", flags, and the audience})."""
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    # Clients leave out what they do not use; an explicit null counts as left out.
    given = {key: value for key, value in body.items() if value is not None}
    unknown = sorted(set(given) - {"data", *STYLES, *FLAGS})
    if unknown:
        raise InvalidInput(
            f"{unknown[0]} is not a field of a broadcast trigger; expected data and one of "
            f"{', '.join(STYLES)}",
            field=unknown[0],
        )
    styles = [style for style in STYLES if style in given]
    if len(styles) > 1:
        raise InvalidInput(
            f"a trigger names its audience one way only, not with both {styles[0]} and {styles[1]}",
            field=styles[1],
        )
    style = styles[0] if styles else "default"
    for flag in FLAGS:
        if flag in given and flag not in ALLOWED_FLAGS[style]:
            users = [s for s, flags in ALLOWED_FLAGS.items() if flag in flags]
            raise InvalidInput(
                f"{flag} applies only to {' or '.join(users)} audiences, not to "
                + ("the default audience" if style == "default" else f"{style}"),
                field=flag,
            )
        if flag in given and not isinstance(given[flag], bool):
            raise InvalidInput(f"{flag} must be true or false", field=flag)
    data = given.get("data", {})
    if not isinstance(data, dict):
        raise InvalidInput("data must be an object", field="data")
    request: Json = {"style": style, "data": data}
    request.update({flag: given[flag] for flag in FLAGS if flag in given})
    if style == "recipients":
        recipients = given["recipients"]
        if not isinstance(recipients, dict):
            raise InvalidInput("recipients must be a filter object", field="recipients")
        if not recipients:
            raise InvalidInput("empty recipients filter is not valid", field="recipients")
        _check_segments(session, workspace_id, recipients)
        request["recipients"] = recipients
    elif style == "data_file_url":
        url = given["data_file_url"]
        if not isinstance(url, str) or not url:
            raise InvalidInput("data_file_url must be a URL", field="data_file_url")
        try:
            check_url(url, allow_private=True)  # the shape only: the address is checked on download
        except OutboundRefused as exc:
            raise InvalidInput(f"data_file_url: {exc}", field="data_file_url") from None
        request["data_file_url"] = url
    elif style != "default":
        request["entries"] = _dedupe(_entries(given[style], style), request)
    return request


def _dedupe(entries: list[Json], request: Json) -> list[Json]:
    """The same person named twice is messaged once: repeated ids always collapse (the first entry wins),
    repeated email addresses unless ``email_add_duplicates``."""
    seen: set[tuple[str, str]] = set()
    out: list[Json] = []
    for entry in entries:
        if "error" in entry:
            out.append(entry)
            continue
        key = ("id", entry["id"]) if "id" in entry else ("email", email_key(entry["email"]))
        if key[0] == "email" and request.get("email_add_duplicates"):
            out.append(entry)
            continue
        if key not in seen:
            seen.add(key)
            out.append(entry)
    return out


def _explicit(request: Json) -> bool:
    return request["style"] not in ("default", "recipients")


def _must_check(request: Json) -> bool:
    """Whether unknown recipients fail the trigger (and so need a pass before anyone is messaged)."""
    return _explicit(request) and not (
        request.get("id_ignore_missing") and request.get("email_ignore_missing")
        if request["style"] in ("per_user_data", "data_file_url")
        else request.get("email_ignore_missing" if request["style"] == "emails" else "id_ignore_missing")
    )


def trigger(session: Session, workspace_id: int, broadcast_id: int, body: Any, now: int) -> Json:
    campaign = get_campaign(session, workspace_id, broadcast_id, kind="broadcast")
    if campaign.state != "active":
        raise Conflict(
            f"broadcast {broadcast_id} is {campaign.state}; only an active broadcast can be triggered"
        )
    request = validate(session, workspace_id, body)
    _rate_limit(session, campaign, now)
    return {"id": queue_audience(session, campaign, request, now).id}


TRIGGER_WINDOW = 10


def _rate_limit(session: Session, campaign: Campaign, now: int) -> None:
    """A workspace may limit how often each broadcast is triggered (``rate_limits.broadcast_triggers``
    per 10 seconds; Customer.io's limit is 1). Off by default, like the other rate limits."""
    workspace = session.get(Workspace, campaign.workspace_id)
    limit = WorkspaceSettings.from_stored(
        workspace.settings if workspace else None
    ).rate_limits.broadcast_triggers
    if limit <= 0:
        return
    recent = list(
        session.scalars(
            select(BroadcastTrigger.created_at)
            .where(
                BroadcastTrigger.campaign_id == campaign.id,
                BroadcastTrigger.created_at > now - TRIGGER_WINDOW,
            )
            .order_by(BroadcastTrigger.created_at)
        )
    )
    if len(recent) >= limit:
        wait = max(recent[0] + TRIGGER_WINDOW - now, 1)
        raise RateLimited(
            f"broadcast {campaign.id} may be triggered {limit:g} time(s) per {TRIGGER_WINDOW} seconds",
            retry_after=wait,
        )


def queue_audience(session: Session, campaign: Campaign, request: Json, now: int) -> BroadcastTrigger:
    """Record a checked trigger request and queue the job that turns its audience into journeys (also how
    a scheduled campaign's run reaches its audience)."""
    workspace_id = campaign.workspace_id
    row = BroadcastTrigger(
        workspace_id=workspace_id,
        campaign_id=campaign.id,
        request=request,
        state="queued",
        recipients=0,
        errors=0,
        cursor=0,
        created_at=now,
    )
    session.add(row)
    session.flush()
    payload: Json = {"trigger_id": row.id, "version": campaign.version}
    if request["style"] == "data_file_url":
        payload["download"] = request["data_file_url"]
    elif _must_check(request):
        payload["phase"] = "check"
    queue.enqueue(session, EXPAND_JOB, run_at=now, now=now, workspace_id=workspace_id, payload=payload)
    wake.soon(session)
    return row


# -- the expansion job ----------------------------------------------------------------------------------


def _download(url: str, settings: Settings) -> tuple[bytes | None, str | None]:
    """The file's bytes, or why it could not be had."""
    try:
        with (
            http_client(allow_private=settings.outbound_allow_private, timeout=DOWNLOAD_TIMEOUT) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                return None, (
                    "failed to download data file, server responded with code "
                    f"{response.status_code} {response.reason_phrase}"
                ).rstrip()
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_FILE_BYTES:
                    return None, f"failed to download data file, it is larger than {MAX_FILE_BYTES} bytes"
                chunks.append(chunk)
            return b"".join(chunks), None
    except httpx.HTTPError as exc:
        return None, f"failed to download data file: {exc}"


def _file_entries(content: bytes) -> list[Json]:
    """Newline-delimited JSON objects, each like a per_user_data entry; bad lines become error entries."""
    entries: list[Json] = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(_per_user_entry(orjson.loads(line), f"line {number}"))
        except orjson.JSONDecodeError:
            entries.append({"error": f"line {number} is not valid JSON"})
        except InvalidInput as exc:
            entries.append({"error": exc.message})
    return entries


def _fail(session: Session, row: BroadcastTrigger, reason: str, now: int) -> None:
    row.state, row.failure, row.processed_at = "failed", reason, int(now)
    _error(session, row, reason, None, now)


def expand(session: Session, payload: dict[str, Any], now: float, settings: Settings) -> None:
    """One chunk of a trigger's audience: resolve it, write its journeys, queue the next chunk."""
    content: bytes | None = None
    download_failure: str | None = None
    if "download" in payload:
        # Before the first statement, so no transaction (and on SQLite, no write lock) waits on the network.
        content, download_failure = _download(str(payload["download"]), settings)
    row = session.get(BroadcastTrigger, int(payload["trigger_id"]))
    if row is None or row.state in ("processed", "failed"):
        return
    campaign = session.get(Campaign, row.campaign_id)
    if campaign is None:
        return
    stamp = int(now)
    if campaign.state == "archived":
        _fail(session, row, "the broadcast was archived before its audience was resolved", stamp)
        return
    request = dict(row.request)
    payload = {key: value for key, value in payload.items() if key != "download"}
    if content is not None or download_failure is not None:
        if download_failure is not None:
            _fail(session, row, download_failure, stamp)
            return
        assert content is not None
        request["entries"] = _dedupe(_file_entries(content), request)
        row.request = request
        if _must_check(request):
            payload["phase"] = "check"
    row.state = "processing"
    phase = payload.get("phase", "send")
    if phase == "check":
        done = _check_chunk(session, row, request, stamp)
        if done:
            if row.errors:
                row.state, row.processed_at = "failed", stamp
                row.failure = f"{row.errors} recipient(s) could not be found or read"
                return
            row.cursor = 0
            payload["phase"] = "send"
    else:
        version = int(payload.get("version", campaign.version))
        if _explicit(request):
            people = _entries_chunk(session, row, request)
        else:
            people = _audience_chunk(session, row, campaign, version, request, stamp)
        if people is None:
            row.state, row.processed_at = "processed", stamp
            return
        if people:
            data = request.get("data") or {}
            session.execute(
                insert(Journey),
                [
                    {
                        "workspace_id": row.workspace_id,
                        "campaign_id": campaign.id,
                        "version": version,
                        "person_id": person_id,
                        "state": "pending",
                        "due_at": stamp,
                        "trigger": {"data": {**data, **extra}},
                        "attributes": {},
                        "steps": 0,
                        "created_at": stamp,
                        "broadcast_trigger_id": row.id,
                    }
                    for person_id, extra in people
                ],
            )
            row.recipients += len(people)
            wake.soon(session)
    queue.enqueue(session, EXPAND_JOB, run_at=now, now=now, workspace_id=row.workspace_id, payload=payload)
    wake.soon(session)


def _lookup(
    session: Session, workspace_id: int, entries: list[Json]
) -> tuple[dict[str, int], dict[str, int]]:
    """The people these entries name: by id and by email key (the lowest person key wins a shared email)."""
    ids = sorted({e["id"] for e in entries if "id" in e})
    emails = sorted({email_key(e["email"]) for e in entries if "email" in e})
    by_id: dict[str, int] = {}
    by_email: dict[str, int] = {}
    if ids:
        for person_id, customer_id in session.execute(
            select(Person.id, Person.customer_id).where(
                Person.workspace_id == workspace_id, Person.customer_id.in_(ids)
            )
        ):
            by_id[str(customer_id)] = person_id
    if emails:
        for person_id, key in session.execute(
            select(func.min(Person.id), Person.email_key)
            .where(Person.workspace_id == workspace_id, Person.email_key.in_(emails))
            .group_by(Person.email_key)
        ):
            by_email[str(key)] = person_id
    return by_id, by_email


def _person_of(entry: Json, by_id: dict[str, int], by_email: dict[str, int]) -> int | None:
    if "id" in entry:
        return by_id.get(entry["id"])
    return by_email.get(email_key(entry["email"]))


def _ignored(entry: Json, request: Json) -> bool:
    return bool(request.get("id_ignore_missing" if "id" in entry else "email_ignore_missing"))


def _check_chunk(session: Session, row: BroadcastTrigger, request: Json, now: int) -> bool:
    """Record this chunk's unknown recipients; return whether every entry has been checked."""
    entries: list[Json] = request.get("entries") or []
    chunk = entries[row.cursor : row.cursor + CHUNK]
    if not chunk:
        return True
    by_id, by_email = _lookup(session, row.workspace_id, [e for e in chunk if "error" not in e])
    for entry in chunk:
        if "error" in entry:
            _error(session, row, entry["error"], None, now)
        elif _person_of(entry, by_id, by_email) is None and not _ignored(entry, request):
            kind = "id" if "id" in entry else "email"
            _error(session, row, f"no person with {kind} {entry[kind]!r}", {kind: entry[kind]}, now)
    row.cursor += len(chunk)
    return row.cursor >= len(entries)


def _error(session: Session, row: BroadcastTrigger, reason: str, recipient: Json | None, now: int) -> None:
    session.add(
        BroadcastTriggerError(
            trigger_id=row.id,
            workspace_id=row.workspace_id,
            reason=reason,
            recipient=recipient,
            created_at=now,
        )
    )
    row.errors += 1


def _entries_chunk(session: Session, row: BroadcastTrigger, request: Json) -> list[tuple[int, Json]] | None:
    """The next chunk of an explicit audience as (person key, per-user data); None when it is done.
    Unknown recipients left at this point were either ignored or already failed the check."""
    entries: list[Json] = request.get("entries") or []
    chunk = entries[row.cursor : row.cursor + CHUNK]
    if not chunk:
        return None
    valid = [e for e in chunk if "error" not in e]
    by_id, by_email = _lookup(session, row.workspace_id, valid)
    people = []
    for entry in valid:
        person_id = _person_of(entry, by_id, by_email)
        if person_id is not None:
            people.append((person_id, dict(entry.get("data") or {})))
    row.cursor += len(chunk)
    return people


def _audience_chunk(
    session: Session, row: BroadcastTrigger, campaign: Campaign, version: int, request: Json, now: int
) -> list[tuple[int, Json]] | None:
    """The next chunk (in person-key order) of a filter audience; None when it is done."""
    document = request.get("recipients")
    if document is None:
        document = _definition(session, campaign.id, version).trigger.get("audience")
    query = select(Person.id).where(Person.workspace_id == row.workspace_id, Person.id > row.cursor)
    if document is not None:
        condition = parse(document, "recipients")
        query = query.where(
            compiler.predicate(condition, compiler.Context(workspace_id=row.workspace_id, now=now))
        )
    found = list(session.scalars(query.order_by(Person.id).limit(CHUNK)))
    if not found:
        return None
    row.cursor = found[-1]
    return [(person_id, {}) for person_id in found]


def _definition(session: Session, campaign_id: int, version: int) -> Definition:
    return definition_of(session, campaign_id, version)


# -- views ----------------------------------------------------------------------------------------------


def get_trigger(session: Session, workspace_id: int, broadcast_id: int, trigger_id: int) -> BroadcastTrigger:
    get_campaign(session, workspace_id, broadcast_id, kind="broadcast")
    row = session.get(BroadcastTrigger, trigger_id)
    if row is None or row.campaign_id != broadcast_id or row.workspace_id != workspace_id:
        raise NotFound(f"trigger {trigger_id} of broadcast {broadcast_id} not found")
    return row


def trigger_view(row: BroadcastTrigger) -> Json:
    return {
        "id": row.id,
        "broadcast_id": row.campaign_id,
        "created_at": row.created_at,
        "processed_at": row.processed_at,
        # Tidings: how far it got.
        "state": row.state,
        "recipients": row.recipients,
        "errors": row.errors,
        "failure": row.failure,
    }


def list_triggers(session: Session, workspace_id: int, broadcast_id: int) -> list[Json]:
    get_campaign(session, workspace_id, broadcast_id, kind="broadcast")
    rows = session.scalars(
        select(BroadcastTrigger)
        .where(BroadcastTrigger.campaign_id == broadcast_id, BroadcastTrigger.workspace_id == workspace_id)
        .order_by(BroadcastTrigger.id.desc())
    )
    return [trigger_view(row) for row in rows]


def list_errors(
    session: Session, workspace_id: int, broadcast_id: int, trigger_id: int, *, start: str | None, limit: int
) -> Json:
    """Customer.io's shape: ``errors`` are messages; ``next`` is the cursor of the next page (0: none).
    Tidings adds ``details`` (each error's recipient) in the same order."""
    row = get_trigger(session, workspace_id, broadcast_id, trigger_id)
    if not 1 <= limit <= MAX_ERROR_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_ERROR_PAGE}", field="limit")
    after = 0
    if start not in (None, ""):
        if not str(start).isdigit():
            raise InvalidInput("start is not a cursor this endpoint returned", field="start")
        after = int(str(start))
    found = list(
        session.scalars(
            select(BroadcastTriggerError)
            .where(BroadcastTriggerError.trigger_id == row.id, BroadcastTriggerError.id > after)
            .order_by(BroadcastTriggerError.id)
            .limit(limit + 1)
        )
    )
    page = found[:limit]
    return {
        "errors": [error.reason for error in page],
        "details": [{"reason": error.reason, "recipient": error.recipient} for error in page],
        "next": page[-1].id if len(found) > limit else 0,
    }
