"""Reading request bodies: size limits before parsing, gzip, and JSON errors as domain errors."""

from __future__ import annotations

import re
import zlib
from typing import Any

import orjson
from starlette.requests import Request

from tidings.errors import InvalidInput, PayloadTooLarge


async def read_bytes(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes")
    raw = await request.body()
    if request.headers.get("content-encoding", "").lower() == "gzip":
        try:
            decompressor = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
            raw = decompressor.decompress(raw, max_bytes + 1)
        except zlib.error as exc:
            raise InvalidInput("body is not valid gzip") from exc
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes")
    return raw


# An escaped NUL (\u0000 not itself escaped). PostgreSQL cannot store NUL in text or JSON, so it is
# refused up front for every store rather than accepted on one and failing on the other.
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def parse_json(raw: bytes, *, empty: Any = None) -> Any:
    if not raw.strip():
        if empty is not None:
            return empty
        raise InvalidInput("request body is empty; a JSON object is required")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from exc
    if b"\\u0000" in raw and _ESCAPED_NUL.search(raw):
        raise InvalidInput("strings may not contain the NUL character (\\u0000)")
    return parsed


async def read_json(request: Request, max_bytes: int, *, empty: Any = None) -> Any:
    return parse_json(await read_bytes(request, max_bytes), empty=empty)


async def read_object(request: Request, max_bytes: int, *, allow_empty: bool = False) -> dict[str, Any]:
    body = await read_json(request, max_bytes, empty={} if allow_empty else None)
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    return body
