"""Attribute limits and updates, shared by people and objects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from tidings.errors import InvalidInput
from tidings.workspaces.limits import Limits

TRUE_STRINGS = frozenset({"true", "1"})


def byte_len(value: str) -> int:
    return len(value.encode())


def value_size(value: Any) -> int:
    if isinstance(value, str):
        return byte_len(value)
    return len(orjson.dumps(value))


def check_identifier(value: str, limits: Limits, *, field_name: str) -> None:
    if byte_len(value) > limits.max_identifier_bytes:
        raise InvalidInput(
            f"{field_name} is longer than {limits.max_identifier_bytes} bytes", field=field_name
        )


def check_attributes(attributes: Mapping[str, Any], limits: Limits, *, field_prefix: str = "") -> None:
    if len(attributes) > limits.max_attributes:
        raise InvalidInput(
            f"too many attributes: {len(attributes)} > {limits.max_attributes}", field=field_prefix or None
        )
    for name, value in attributes.items():
        if byte_len(name) > limits.max_attribute_name_bytes:
            raise InvalidInput(
                f"attribute name {name[:40]!r}… is longer than {limits.max_attribute_name_bytes} bytes",
                field=f"{field_prefix}{name[:40]}",
            )
        if value is not None and value_size(value) > limits.max_attribute_value_bytes:
            raise InvalidInput(
                f"attribute {name!r} value is longer than {limits.max_attribute_value_bytes} bytes",
                field=f"{field_prefix}{name}",
            )


def truthy(value: Any) -> bool:
    """Customer.io's ``unsubscribed`` rule: any case of true, 1 or "1" is true, anything else false."""
    if value is True:
        return True
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value == 1
    return isinstance(value, str) and value.strip().lower() in TRUE_STRINGS


@dataclass
class AttributeChanges:
    changed: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.changed)


def apply_attributes(
    current: dict[str, Any],
    timestamps: dict[str, int],
    updates: Mapping[str, Any],
    *,
    at: int,
    limits: Limits,
    ordered: bool = False,
) -> tuple[dict[str, Any], dict[str, int], AttributeChanges]:
    """Return new attribute and timestamp maps. ``None`` or ``""`` removes an attribute. With
    ``ordered`` (a ``_timestamp`` was sent), an update older than the stored value is skipped."""
    attributes = dict(current)
    stamps = dict(timestamps)
    changes = AttributeChanges()
    for name, value in updates.items():
        if ordered and stamps.get(name, 0) > at:
            continue
        old = attributes.get(name)
        if value is None or value == "":
            if name in attributes:
                del attributes[name]
                stamps.pop(name, None)
                changes.changed[name] = {"from": old, "to": None}
            continue
        if old != value or name not in attributes:
            changes.changed[name] = {"from": old, "to": value}
        attributes[name] = value
        stamps[name] = at
    if len(attributes) > limits.max_attributes:
        raise InvalidInput(f"a profile may hold at most {limits.max_attributes} attributes")
    return attributes, stamps, changes
