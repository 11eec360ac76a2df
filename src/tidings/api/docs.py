"""Request-body descriptions for the OpenAPI document.

Handlers read raw bytes (size limits before parsing, gzip, orjson), so FastAPI cannot infer bodies; these
small schemas put them back into the published document.
"""

from __future__ import annotations

from typing import Any

OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}


def json_body(schema: dict[str, Any], *, required: bool = True, example: Any = None) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"requestBody": {"required": required, "content": {"application/json": content}}}


def obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": True}
    if required:
        schema["required"] = required
    return schema


STRING = {"type": "string"}
UNIX = {"type": "integer", "description": "unix seconds"}
IDENTIFIERS = obj({"id": STRING, "email": STRING, "cio_id": STRING})
EVENT = obj(
    {
        "name": STRING,
        "type": {"enum": ["event", "page", "screen"]},
        "id": STRING,
        "timestamp": UNIX,
        "data": OBJECT,
    },
    ["name"],
)
