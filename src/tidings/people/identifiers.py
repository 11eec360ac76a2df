"""How people are named on the wire, how they are found, and who is suppressed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.orm import Session

from tidings.db.lookup import select_in
from tidings.errors import InvalidInput, Suppressed
from tidings.models import Person, Suppression

IdentifierType = Literal["id", "email", "cio_id"]
IDENTIFIER_TYPES: tuple[IdentifierType, ...] = ("id", "email", "cio_id")


@dataclass(frozen=True)
class Identifier:
    type: IdentifierType
    value: str

    def __str__(self) -> str:
        return f"{self.type} {self.value!r}"


def email_key(email: str) -> str:
    return email.strip().lower()


def parse_path_identifier(raw: str, *, identify_by_email: bool = True) -> Identifier:
    """Track v1 infers the identifier type from the value: ``cio_…`` is a cio_id, an email-shaped
    value is an email (in workspaces that identify by email), anything else is an id."""
    if not raw:
        raise InvalidInput("identifier is empty", field="identifier")
    if raw.startswith("cio_"):
        return Identifier("cio_id", raw[4:])
    if identify_by_email and "@" in raw:
        return Identifier("email", raw)
    return Identifier("id", raw)


def identifier_from_object(obj: Any, *, field: str = "identifiers") -> Identifier:
    """Read ``{"id": …}`` / ``{"email": …}`` / ``{"cio_id": …}`` holding exactly one identifier."""
    if not isinstance(obj, dict):
        raise InvalidInput(f"{field} must be an object", field=field)
    present = [key for key in IDENTIFIER_TYPES if obj.get(key) not in (None, "")]
    if len(present) != 1 or len(obj) != 1:
        raise InvalidInput(f"{field} must hold exactly one of id, email or cio_id", field=field)
    key = present[0]
    value = obj[key]
    if isinstance(value, int | float) and not isinstance(value, bool) and key == "id":
        value = str(value)
    if not isinstance(value, str):
        raise InvalidInput(f"{field}.{key} must be a string", field=f"{field}.{key}")
    return Identifier(key, value)


_COLUMNS = {"id": Person.customer_id, "email": Person.email_key, "cio_id": Person.cio_id}

# Built once: these run several times per ingested request, and constructing a statement costs more
# than executing it.
_FIND_PERSON = {
    kind: select(Person).where(Person.workspace_id == bindparam("w"), column == bindparam("v")).limit(1)
    for kind, column in _COLUMNS.items()
}
# Straight to the driver (tidings.db.lookup): these run several times per group commit.
_SUPPRESSED = (
    f"SELECT identifier_type, value FROM {Suppression.__tablename__} WHERE workspace_id = ? AND value IN (*)"
)

_FIND_PERSON_ID = {
    kind: select(Person.id).where(Person.workspace_id == bindparam("w"), column == bindparam("v")).limit(1)
    for kind, column in _COLUMNS.items()
}


def find_person_id(session: Session, workspace_id: int, ident: Identifier) -> int | None:
    """The person's key alone, without loading the person (the event path needs nothing more)."""
    value = email_key(ident.value) if ident.type == "email" else ident.value
    found: int | None = (
        session.connection().execute(_FIND_PERSON_ID[ident.type], {"w": workspace_id, "v": value}).scalar()
    )
    return found


# Many at once, one statement per identifier type named: a batch of events resolves its people in one
# round trip instead of one each.
_FIND_PERSON_IDS = {
    kind: f"SELECT id, {name} FROM {Person.__tablename__} WHERE workspace_id = ? AND {name} IN (*)"
    for kind, name in ((kind, column.key) for kind, column in _COLUMNS.items())
}


def find_person_ids(
    session: Session, workspace_id: int, idents: Iterable[Identifier]
) -> dict[Identifier, int]:
    """The keys of everyone named by ``idents``; identifiers naming nobody are absent."""
    wanted: dict[IdentifierType, dict[str, list[Identifier]]] = {}
    for ident in idents:
        wanted.setdefault(ident.type, {}).setdefault(suppression_value(ident), []).append(ident)
    found: dict[Identifier, int] = {}
    for kind, by_value in wanted.items():
        for person_id, value in select_in(session, _FIND_PERSON_IDS[kind], (workspace_id,), list(by_value)):
            for ident in by_value.get(value or "", ()):
                found[ident] = person_id
    return found


def find_person(session: Session, workspace_id: int, ident: Identifier) -> Person | None:
    value = email_key(ident.value) if ident.type == "email" else ident.value
    return session.scalars(_FIND_PERSON[ident.type], {"w": workspace_id, "v": value}).first()


# One slot per identifier type; an absent one is bound to NULL, which matches nothing. The workspace is
# repeated inside each branch on purpose: SQLite plans ``w AND (a OR b OR c)`` as a scan of the whole
# workspace, but ``(w AND a) OR (w AND b) OR …`` as one index search per branch.
_FIND_PEOPLE = select(Person).where(
    or_(
        *[
            and_(Person.workspace_id == bindparam("w"), column == bindparam(kind))
            for kind, column in _COLUMNS.items()
        ]
    )
)


def find_people(session: Session, workspace_id: int, idents: list[Identifier]) -> dict[Identifier, Person]:
    """Everyone named by ``idents``, keyed by the identifier that found them; identifiers naming nobody
    are absent. One query for the first identifier of each type (the common case is all of them)."""
    params: dict[str, Any] = {"w": workspace_id, "id": None, "email": None, "cio_id": None}
    rest: list[Identifier] = []
    for ident in idents:
        if params[ident.type] is None:
            params[ident.type] = suppression_value(ident)
        else:
            rest.append(ident)
    found: dict[Identifier, Person] = {}
    for person in session.scalars(_FIND_PEOPLE, params):
        for ident in idents:
            if _names(person, ident):
                found[ident] = person
    for ident in rest:
        if ident not in found and (other := find_person(session, workspace_id, ident)) is not None:
            found[ident] = other
    return found


def _names(person: Person, ident: Identifier) -> bool:
    if ident.type == "id":
        return person.customer_id == ident.value
    if ident.type == "email":
        return person.email_key == email_key(ident.value)
    return person.cio_id == ident.value


def suppression_value(ident: Identifier) -> str:
    return email_key(ident.value) if ident.type == "email" else ident.value


def suppressed_identifier(session: Session, workspace_id: int, idents: list[Identifier]) -> Identifier | None:
    wanted: dict[tuple[str, str], Identifier] = {
        (ident.type, suppression_value(ident)): ident for ident in idents
    }
    values = list({value for _, value in wanted})
    for kind, value in select_in(session, _SUPPRESSED, (workspace_id,), values):
        if (kind, value) in wanted:
            return wanted[(kind, value)]
    return None


def refuse_suppressed(session: Session, workspace_id: int, idents: list[Identifier]) -> None:
    """Refuse data for a suppressed identifier. Callers only ask about identifiers that name nobody yet:
    suppressing deletes the person holding the identifiers, and every way of giving a person an
    identifier passes through here, so an identifier a live person holds is never suppressed."""
    if not idents:
        return
    hit = suppressed_identifier(session, workspace_id, idents)
    if hit is not None:
        raise Suppressed(f"{hit} is suppressed; unsuppress it before sending data for it")


def identifiers_of(person: Person) -> dict[str, str | None]:
    return {"id": person.customer_id, "email": person.email, "cio_id": person.cio_id}
