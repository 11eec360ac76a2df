"""The public side of a message's links: open pixel, click redirects, unsubscribe, the subscription center
and view in browser. No credentials: the signed token in the path is the capability (tidings.tracking).

People reach these pages from their mail, so errors are HTML pages, not an API envelope. Each handler
first checks the token in a read (tokens verify against cached keys), so forged or mangled tokens, which
scanners and guessers send in bulk, never reach the group-commit writer, where a failing unit makes its
whole batch run again.

GET never changes a subscription: mail security scanners fetch every link in a message. Unsubscribing
takes a POST, either from the confirmation page or RFC 8058 one-click from the mail client
(``List-Unsubscribe=One-Click``, form-encoded or multipart; either way a POST without ``action=resubscribe``
unsubscribes).

Pages link to each other with relative URLs and post forms to their own URL, so they work wherever the
server is mounted behind ``TIDINGS_PUBLIC_URL``.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from tidings.api.auth import runtime_of
from tidings.api.body import read_bytes
from tidings.errors import InvalidInput, TidingsError
from tidings.runtime import Runtime
from tidings.tracking import links
from tidings.tracking import service as tracking
from tidings.tracking.service import Preferences, PreferencesKind, Subscription

MAX_FORM_BYTES = 100_000
# The smallest transparent GIF (1x1, one transparent colour).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
# Every open must reach the server to be counted: no cache may keep the pixel.
NO_CACHE = {
    "Cache-Control": "no-cache, no-store, must-revalidate, max-age=0, private",
    "Pragma": "no-cache",
    "Expires": "0",
}
# Pages: personal (never cached), nothing external, and no Referer leaking the token to linked sites.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}
# A stored message is the sender's HTML, served from Tidings' own origin: the CSP sandbox gives it an
# opaque origin with scripts and forms off, so whatever it contains cannot act as this site. Images,
# styles and fonts load as in a mail client; links open at the reader's click.
VIEW_HEADERS = {
    **PAGE_HEADERS,
    "Content-Security-Policy": (
        "sandbox allow-popups allow-popups-to-escape-sandbox allow-top-navigation-by-user-activation; "
        "default-src 'none'; img-src * data:; style-src * 'unsafe-inline'; font-src * data:"
    ),
}

_STYLE = """
body{margin:0;background:#f5f5f4;color:#1c1917;font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif}
main{max-width:36rem;margin:3rem auto;padding:2rem;background:#fff;border-radius:8px}
h1{font-size:1.5rem;margin-top:0}
fieldset{border:1px solid #d6d3d1;border-radius:6px;margin:1rem 0;padding:.5rem 1rem}
legend{font-weight:600;padding:0 .25rem}
label{display:block;margin:.5rem 0}
.hint{display:block;margin-left:1.6rem;color:#57534e;font-size:.9rem}
button{font:inherit;padding:.5rem 1.25rem;border:0;border-radius:6px;background:#1c1917;color:#fff}
button.secondary{background:#e7e5e4;color:#1c1917}
.notice{padding:.5rem 1rem;background:#ecfccb;border-radius:6px}
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, body: str, *, status_code: int = 200) -> HTMLResponse:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex, nofollow">'
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{_esc(title)}</h1>{body}</main></body></html>"
    )
    return HTMLResponse(document, status_code=status_code, headers=PAGE_HEADERS)


def error_page(exc: TidingsError) -> HTMLResponse:
    titles = {404: "Link not found", 410: "Link expired", 413: "Too much data"}
    title = titles.get(exc.status_code, "Something is not right")
    return page(title, f"<p>{_esc(exc.message)}</p>", status_code=exc.status_code)


class PageRoute(APIRoute):
    """Domain errors become HTML pages (people read these, not programs)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except TidingsError as exc:
                return error_page(exc)
            except RequestValidationError:
                return error_page(InvalidInput("this request is not valid"))

        return guarded


router = APIRouter(route_class=PageRoute, tags=["Tracking and subscription pages"])


async def _checked(runtime: Runtime, ws: str, purpose: str, token: str) -> int:
    """The workspace id, once the token is known to be good (see the module docstring)."""
    workspace_id = tracking.workspace_id_of(ws)
    await runtime.db.read(lambda s: tracking.check_link(s, workspace_id, purpose, token))
    return workspace_id


async def _form(request: Request) -> dict[str, list[str]]:
    """An urlencoded form's fields (a multipart one-click post reads as empty: it needs no fields)."""
    raw = await read_bytes(request, MAX_FORM_BYTES)
    fields: dict[str, list[str]] = {}
    if "multipart/" in request.headers.get("content-type", ""):
        return fields
    for name, value in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(name, []).append(value)
    return fields


# -- open pixel and click redirects ----------------------------------------------------------------------


@router.get("/o/{ws}/{token}", summary="Open pixel: a 1x1 GIF that records an open")
async def open_pixel(ws: str, token: str, request: Request) -> Response:
    runtime = runtime_of(request)
    workspace_id = await _checked(runtime, ws, links.OPEN, token)
    now = runtime.clock.now_int()
    await runtime.db.write(lambda s: tracking.open(s, workspace_id, token, now))
    return Response(PIXEL, media_type="image/gif", headers=NO_CACHE)


@router.get("/c/{ws}/{token}", summary="Click redirect to the URL signed into the token")
async def click(ws: str, token: str, request: Request) -> Response:
    runtime = runtime_of(request)
    workspace_id = await _checked(runtime, ws, links.CLICK, token)
    now = runtime.clock.now_int()
    url = await runtime.db.write(lambda s: tracking.click(s, workspace_id, token, now))
    # Not cached, so every click comes back here and is counted.
    return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})


# -- view in browser -------------------------------------------------------------------------------------


@router.get("/v/{ws}/{token}", summary="The message as sent, in the browser")
async def view(ws: str, token: str, request: Request) -> Response:
    runtime = runtime_of(request)
    workspace_id = tracking.workspace_id_of(ws)
    document = await runtime.db.read(lambda s: tracking.view(s, workspace_id, token))
    if document is None:
        return page(
            "This message is not available",
            "<p>The content of this message was not kept, so it cannot be shown here.</p>",
        )
    return HTMLResponse(document, headers=VIEW_HEADERS)


# -- unsubscribe -----------------------------------------------------------------------------------------


def _unsubscribe_page(ws: int, state: Subscription, *, notice: str = "") -> HTMLResponse:
    address = f" for <strong>{_esc(state.email)}</strong>" if state.email else ""
    parts = [f'<p class="notice" role="status">{_esc(notice)}</p>' if notice else ""]
    if state.unsubscribed:
        parts.append(f"<p>Email{address} is unsubscribed: you will not get these messages any more.</p>")
        # No token means the person is gone: there is nobody to subscribe again.
        if state.preferences_token is not None:
            parts.append(
                '<form method="post"><input type="hidden" name="action" value="resubscribe">'
                '<button type="submit" class="secondary">Subscribe again</button></form>'
            )
        title = "You are unsubscribed"
    else:
        parts.append(f"<p>Do you want to stop getting these messages{address}?</p>")
        parts.append(
            '<form method="post"><input type="hidden" name="action" value="unsubscribe">'
            '<button type="submit">Unsubscribe</button></form>'
        )
        title = "Unsubscribe"
    if state.preferences_token is not None:
        # Relative to /u/{ws}/{token}: works under any public URL prefix.
        href = f"../../p/{ws}/{state.preferences_token}"
        parts.append(f'<p><a href="{_esc(href)}">Choose which messages you get</a></p>')
    return page(title, "".join(parts))


@router.get("/u/{ws}/{token}", summary="Unsubscribe page (changes nothing until its form is posted)")
async def unsubscribe_page(ws: str, token: str, request: Request) -> Response:
    runtime = runtime_of(request)
    workspace_id = tracking.workspace_id_of(ws)
    state = await runtime.db.read(lambda s: tracking.subscription(s, workspace_id, token))
    return _unsubscribe_page(workspace_id, state)


@router.post(
    "/u/{ws}/{token}",
    summary="Unsubscribe (RFC 8058 one-click, or the page's form); action=resubscribe undoes it",
)
async def unsubscribe(ws: str, token: str, request: Request) -> Response:
    runtime = runtime_of(request)
    workspace_id = await _checked(runtime, ws, links.UNSUBSCRIBE, token)
    form = await _form(request)
    now = runtime.clock.now_int()
    if form.get("action", [""])[-1] == "resubscribe":
        state = await runtime.db.write(lambda s: tracking.resubscribe(s, workspace_id, token, now))
        return _unsubscribe_page(workspace_id, state, notice="You are subscribed again.")
    state = await runtime.db.write(lambda s: tracking.unsubscribe(s, workspace_id, token, now))
    return _unsubscribe_page(workspace_id, state)


# -- subscription center ---------------------------------------------------------------------------------


def _preferences_page(prefs: Preferences, *, notice: str = "") -> HTMLResponse:
    parts = [f'<p class="notice" role="status">{_esc(notice)}</p>' if notice else ""]
    if prefs.email:
        parts.append(f"<p>Messages to <strong>{_esc(prefs.email)}</strong></p>")
    parts.append('<form method="post"><input type="hidden" name="form" value="preferences">')
    if prefs.topics:
        parts.append("<fieldset><legend>Topics</legend>")
        for topic in prefs.topics:
            field = f"topic_{topic.id}"
            checked = " checked" if topic.subscribed else ""
            hint = f'<span class="hint">{_esc(topic.description)}</span>' if topic.description else ""
            parts.append(
                f'<input type="hidden" name="shown" value="{topic.id}">'
                f'<label><input type="checkbox" name="{field}" value="on"{checked}> '
                f"{_esc(topic.name)}{hint}</label>"
            )
        parts.append("</fieldset>")
    checked = " checked" if prefs.unsubscribed else ""
    parts.append(
        "<fieldset><legend>All messages</legend>"
        f'<label><input type="checkbox" name="unsubscribed" value="on"{checked}> '
        "Unsubscribe from all messages</label></fieldset>"
        '<button type="submit">Save preferences</button></form>'
    )
    return page("Your subscription preferences", "".join(parts))


def _topic_choices(form: dict[str, list[str]]) -> dict[int, bool]:
    """Every topic the page showed gets the state of its checkbox: an unchecked box sends nothing, so
    the ``shown`` list is what tells "unchecked" from "not on the page"."""
    choices: dict[int, bool] = {}
    for value in form.get("shown", []):
        if value.isascii() and value.isdigit() and len(value) <= 19:
            choices[int(value)] = f"topic_{value}" in form
    return choices


async def _show_preferences(request: Request, ws: str, token: str, kind: PreferencesKind) -> Response:
    runtime = runtime_of(request)
    workspace_id = tracking.workspace_id_of(ws)
    now = runtime.clock.now_int()
    prefs = await runtime.db.read(lambda s: tracking.preferences(s, workspace_id, kind, token, now=now))
    return _preferences_page(prefs)


async def _save_preferences(request: Request, ws: str, token: str, kind: PreferencesKind) -> Response:
    runtime = runtime_of(request)
    purpose = tracking.PERSON_PREFERENCES if kind == "person" else links.PREFERENCES
    workspace_id = await _checked(runtime, ws, purpose, token)
    form = await _form(request)
    if form.get("form") != ["preferences"]:
        # Only the page's own form saves: an empty post would otherwise read as "every box unchecked".
        raise InvalidInput("nothing to save: use the form on the subscription page")
    topics = _topic_choices(form)
    unsubscribed = "unsubscribed" in form
    now = runtime.clock.now_int()
    prefs = await runtime.db.write(
        lambda s: tracking.update_preferences(
            s, workspace_id, kind, token, topics=topics, unsubscribed=unsubscribed, now=now
        )
    )
    return _preferences_page(prefs, notice="Your preferences are saved.")


@router.get("/p/{ws}/{token}", summary="Subscription center of a message's recipient")
async def preferences_page(ws: str, token: str, request: Request) -> Response:
    return await _show_preferences(request, ws, token, "delivery")


@router.post("/p/{ws}/{token}", summary="Save the subscription center")
async def save_preferences(ws: str, token: str, request: Request) -> Response:
    return await _save_preferences(request, ws, token, "delivery")


@router.get(
    "/p/{ws}/person/{token}",
    summary="Subscription center from a person-bound token (GET /v1/subscription_center/{id}/token)",
)
async def person_preferences_page(ws: str, token: str, request: Request) -> Response:
    return await _show_preferences(request, ws, token, "person")


@router.post("/p/{ws}/person/{token}", summary="Save the subscription center (person-bound token)")
async def save_person_preferences(ws: str, token: str, request: Request) -> Response:
    return await _save_preferences(request, ws, token, "person")
