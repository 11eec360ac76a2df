"""How people are named on the wire, how they are found, and who is suppressed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

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


def find_person(session: Session, workspace_id: int, ident: Identifier) -> Person | None:
    query = select(Person).where(Person.workspace_id == workspace_id)
    if ident.type == "id":
        query = query.where(Person.customer_id == ident.value)
    elif ident.type == "email":
        query = query.where(Person.email_key == email_key(ident.value))
    else:
        query = query.where(Person.cio_id == ident.value)
    return session.scalars(query).first()


def suppression_value(ident: Identifier) -> str:
    return email_key(ident.value) if ident.type == "email" else ident.value


def suppressed_identifier(session: Session, workspace_id: int, idents: list[Identifier]) -> Identifier | None:
    for ident in idents:
        hit = session.scalar(
            select(Suppression.id).where(
                Suppression.workspace_id == workspace_id,
                Suppression.identifier_type == ident.type,
                Suppression.value == suppression_value(ident),
            )
        )
        if hit is not None:
            return ident
    return None


def refuse_suppressed(session: Session, workspace_id: int, idents: list[Identifier]) -> None:
    hit = suppressed_identifier(session, workspace_id, idents)
    if hit is not None:
        raise Suppressed(f"{hit} is suppressed; unsuppress it before sending data for it")


def identifiers_of(person: Person) -> dict[str, str | None]:
    return {"id": person.customer_id, "email": person.email, "cio_id": person.cio_id}
