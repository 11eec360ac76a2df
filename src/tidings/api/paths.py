"""Path segments that carry identifiers.

Clients escape ``/`` inside identifiers as ``%2F``; routing works on the decoded path, where that slash
would split the identifier. :class:`EncodedSlashMiddleware` carries it through routing as a private-use
character and :func:`path_value` turns it back into a slash.
"""

from __future__ import annotations

from urllib.parse import unquote

from starlette.types import ASGIApp, Receive, Scope, Send

from tidings.errors import InvalidInput

SLASH_STAND_IN = "\uf8ff"


def path_value(raw: str) -> str:
    if "\x00" in raw:
        # PostgreSQL cannot store NUL; refuse it on every store alike.
        raise InvalidInput("path segments may not contain the NUL character")
    return raw.replace(SLASH_STAND_IN, "/")


class EncodedSlashMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw: bytes = scope.get("raw_path") or b""
            if b"%2F" in raw or b"%2f" in raw:
                path = raw.split(b"?", 1)[0].decode("latin-1")
                path = path.replace("%2F", SLASH_STAND_IN).replace("%2f", SLASH_STAND_IN)
                scope = {**scope, "path": unquote(path)}
        await self.app(scope, receive, send)
