"""Output fields of an LLM action: how they are written, the JSON schema asked of the model, and how an
answer is checked and coerced to the field types.

A field is ``{name, type, description, required, options?, target?, fallback?}``. The ten types are
Customer.io's: text, number, integer, boolean, date, datetime, time, list, single_select, multi_select.
``target`` is ``journey`` (default: a journey attribute, gone when the journey ends) or ``customer`` (a
customer attribute, described in the workspace's data index).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, Literal

from tidings.errors import InvalidInput

TYPES = (
    "text",
    "number",
    "integer",
    "boolean",
    "date",
    "datetime",
    "time",
    "list",
    "single_select",
    "multi_select",
)
TARGETS = ("journey", "customer")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_FIELDS = 30
MAX_OPTIONS = 50
_FORMATS = {"date": "YYYY-MM-DD", "datetime": "ISO 8601, e.g. 2026-03-31T14:30:00Z", "time": "HH:MM:SS"}


@dataclass(frozen=True)
class OutputField:
    name: str
    type: str
    description: str = ""
    required: bool = True
    options: tuple[str, ...] = ()
    target: Literal["journey", "customer"] = "journey"
    has_fallback: bool = False
    fallback: Any = None

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "description": self.description,
            "required": self.required,
            "target": self.target,
        }
        if self.options:
            out["options"] = list(self.options)
        if self.has_fallback:
            out["fallback"] = self.fallback
        return out


def parse_fields(
    raw: Any, path: str = "output_fields", *, allow_empty: bool = False
) -> tuple[OutputField, ...]:
    """Check a list of output fields, naming the offending path in the error."""
    if not isinstance(raw, list) or (not raw and not allow_empty):
        raise InvalidInput(f"{path} must be a non-empty list of fields", field=path)
    if len(raw) > MAX_FIELDS:
        raise InvalidInput(f"{path}: at most {MAX_FIELDS} fields", field=path)
    fields: list[OutputField] = []
    for index, item in enumerate(raw):
        fields.append(parse_field(item, f"{path}[{index}]"))
    names = [f.name for f in fields]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise InvalidInput(f"{path}: field {duplicate!r} appears twice", field=path)
    return tuple(fields)


def parse_field(item: Any, path: str) -> OutputField:
    if not isinstance(item, dict):
        raise InvalidInput(f"{path} must be an object", field=path)
    unknown = sorted(set(item) - {"name", "type", "description", "required", "options", "target", "fallback"})
    if unknown:
        raise InvalidInput(f"{path}: unknown key {unknown[0]!r}", field=f"{path}.{unknown[0]}")
    name = item.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInput(
            f"{path}.name must be a Liquid-friendly name (letters, digits, _; not starting with a digit)",
            field=f"{path}.name",
        )
    kind = item.get("type", "text")
    if kind not in TYPES:
        raise InvalidInput(f"{path}.type must be one of {', '.join(TYPES)}", field=f"{path}.type")
    description = item.get("description", "")
    if not isinstance(description, str) or len(description) > 1000:
        raise InvalidInput(
            f"{path}.description must be text (≤ 1000 characters)", field=f"{path}.description"
        )
    required = item.get("required", True)
    if not isinstance(required, bool):
        raise InvalidInput(f"{path}.required must be true or false", field=f"{path}.required")
    target = item.get("target", "journey")
    if target not in TARGETS:
        raise InvalidInput(f"{path}.target must be journey or customer", field=f"{path}.target")
    options: tuple[str, ...] = ()
    if kind in ("single_select", "multi_select"):
        raw = item.get("options")
        if (
            not isinstance(raw, list)
            or not raw
            or len(raw) > MAX_OPTIONS
            or not all(isinstance(o, str) and o for o in raw)
            or len(set(raw)) != len(raw)
        ):
            raise InvalidInput(
                f"{path}.options must be a list of 1 to {MAX_OPTIONS} distinct strings",
                field=f"{path}.options",
            )
        options = tuple(raw)
    elif item.get("options") is not None:
        raise InvalidInput(f"{path}.options only belongs to select fields", field=f"{path}.options")
    field = OutputField(name, kind, description, required, options, target)
    if "fallback" in item and item["fallback"] is not None:
        value, problem = coerce_value(field, item["fallback"])
        if problem:
            raise InvalidInput(f"{path}.fallback: {problem}", field=f"{path}.fallback")
        field = OutputField(name, kind, description, required, options, target, True, value)
    return field


def _value_schema(field: OutputField) -> dict[str, Any]:
    if field.type in ("text", "date", "datetime", "time"):
        schema: dict[str, Any] = {"type": "string"}
        if field.type in _FORMATS:
            schema["description"] = _FORMATS[field.type]
        return schema
    if field.type == "number":
        return {"type": "number"}
    if field.type == "integer":
        return {"type": "integer"}
    if field.type == "boolean":
        return {"type": "boolean"}
    if field.type == "list":
        return {"type": "array", "items": {"type": "string"}}
    if field.type == "single_select":
        return {"type": "string", "enum": list(field.options)}
    return {"type": "array", "items": {"type": "string", "enum": list(field.options)}}


def json_schema(fields: tuple[OutputField, ...]) -> dict[str, Any]:
    """The object the model must produce. Every property is listed as required (strict structured output
    asks for that); an optional field may be null instead."""
    properties: dict[str, Any] = {}
    for field in fields:
        schema = _value_schema(field)
        if not field.required:
            schema = {"anyOf": [schema, {"type": "null"}]}
        if field.description:
            schema = {**schema, "description": field.description}
        properties[field.name] = schema
    return {
        "type": "object",
        "properties": properties,
        "required": [f.name for f in fields],
        "additionalProperties": False,
    }


def coerce_value(field: OutputField, value: Any) -> tuple[Any, str | None]:
    """The value in the field's type, or a reason it cannot be."""
    kind = field.type
    if kind == "text":
        if isinstance(value, str):
            return value, None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value), None
        return None, "expected text"
    if kind in ("number", "integer"):
        number = value
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                return None, f"expected {'a whole number' if kind == 'integer' else 'a number'}"
        if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
            return None, f"expected {'a whole number' if kind == 'integer' else 'a number'}"
        if kind == "integer":
            if float(number) != int(number):
                return None, "expected a whole number"
            return int(number), None
        return number, None
    if kind == "boolean":
        if isinstance(value, bool):
            return value, None
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true", None
        return None, "expected true or false"
    if kind in ("date", "datetime", "time"):
        return _moment(kind, value)
    if kind == "list":
        if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
            return None, "expected a list of text"
        return [str(v) for v in value], None
    if kind == "single_select":
        if isinstance(value, str) and value in field.options:
            return value, None
        return None, f"expected one of {', '.join(field.options)}"
    if not isinstance(value, list) or not all(isinstance(v, str) and v in field.options for v in value):
        return None, f"expected a list of values from {', '.join(field.options)}"
    return list(dict.fromkeys(value)), None


def _moment(kind: str, value: Any) -> tuple[Any, str | None]:
    if not isinstance(value, str):
        return None, f"expected {_FORMATS[kind]}"
    text = value.strip()
    try:
        if kind == "date":
            return date.fromisoformat(text).isoformat(), None
        if kind == "time":
            return time.fromisoformat(text).isoformat(), None
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None, f"expected {_FORMATS[kind]}"
    return text if "T" in text else moment.isoformat(), None


def coerce(fields: tuple[OutputField, ...], data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Values for the fields found in ``data``, and the problems: a required field missing or invalid is a
    problem; an optional one that is null or invalid is left out."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for field in fields:
        raw = data.get(field.name)
        if raw is None:
            if field.required:
                problems.append(f"{field.name}: missing")
            continue
        value, problem = coerce_value(field, raw)
        if problem is None:
            values[field.name] = value
        elif field.required:
            problems.append(f"{field.name}: {problem} (got {str(raw)[:80]!r})")
    return values, problems
