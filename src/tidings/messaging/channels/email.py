"""The email channel: builds a MIME message from a rendered delivery and hands it to an SMTP server.

``Outgoing.content`` keys (all strings already Liquid-rendered by the caller):

============================  ==========================================================================
``from``                      ``addr`` or ``Name <addr>``; falls back to ``EmailSettings.default_from``
``to``                        comma-separated, display names allowed (``"Doe, J" <j@x.com>, k@x.com``)
``cc``, ``bcc``               same syntax, optional
``fake_bcc``                  bool: instead of a real Bcc, each bcc address gets its own copy (see below)
``reply_to``                  same syntax, optional
``subject``, ``preheader``    str
``html``, ``text``, ``amp``   str or None; ``text`` is generated from ``html`` when missing
``headers``                   {name: value}; see ``validate_headers``
``attachments``               {filename: base64}; see ``validate_attachments``
``list_unsubscribe_url``      str or None: ``List-Unsubscribe`` + RFC 8058 one-click ``List-Unsubscribe-Post``
``list_unsubscribe_mailto``   str or None: a ``mailto:`` added to ``List-Unsubscribe``
``disable_css_preprocessing`` bool: send the HTML as written (no CSS inlining)
============================  ==========================================================================

``fake_bcc`` copies: the main message goes to the to and cc addresses only; every bcc address then receives a
copy whose ``To`` is that address, which has no ``Cc`` header, whose ``Message-ID`` is
``<{delivery_id}.copy{n}@{domain}>`` (n counts from 1) and whose subject is
``[Copy of message to {addresses}] {subject}`` where ``{addresses}`` are the bare to and cc addresses joined
with ``", "``. A copy that fails is logged and does not fail the delivery: the main message already went out,
so a retry would send it twice.

The MIME text is written directly rather than through ``email.message.EmailMessage`` and its generator:
building and flattening an EmailMessage cost about a millisecond per message, a broadcast sends thousands
a second, and the structure we need is small (text, optional AMP and HTML alternatives, attachments).
``build_message`` parses those exact bytes back into an ``EmailMessage`` for tests and tools. Every line is
ASCII: non-ASCII header text becomes RFC 2047 encoded words, bodies are quoted-printable, attachments base64.

The SMTP server comes from ``EmailSettings.smtp_url`` or the server-wide default (``TIDINGS_SMTP_URL``):

- ``smtp://[user:pass@]host[:port][?starttls=auto|require|off]``: port 25 by default; ``auto`` upgrades with
  STARTTLS when the server offers it, ``require`` refuses to send without it, ``off`` never upgrades.
- ``smtps://[user:pass@]host[:port]``: TLS from the first byte, port 465 by default.
- ``helo=name`` (either scheme) sets the EHLO name; the default is this machine's FQDN.

Credentials are percent-decoded. ``EmailSettings.tls_verify=False`` skips certificate checks.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import html as html_lib
import ipaddress
import logging
import mimetypes
import re
import secrets
import smtplib
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import encode_rfc2231, format_datetime
from functools import lru_cache
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

import css_inline

from tidings.errors import Forbidden, InvalidInput, PayloadTooLarge
from tidings.messaging.channels.base import Outgoing, SendError, Sent
from tidings.messaging.settings import EmailSettings

log = logging.getLogger(__name__)

# Customer.io's limits for transactional email.
MAX_RECIPIENTS = 15
MAX_ATTACHMENTS_BYTES = 2 * 1024 * 1024
# Executable and script types mail systems quarantine or refuse (Gmail's and Outlook's blocked lists share
# these); Customer.io refuses attachments "of some extensions" with a 403, so we refuse the usual suspects.
REFUSED_EXTENSIONS = frozenset(
    {
        ".exe", ".bat", ".cmd", ".com", ".scr", ".pif", ".msi", ".msp", ".vbs", ".vbe", ".js", ".jse",
        ".jar", ".ps1", ".sh", ".app", ".dll", ".cpl", ".hta", ".wsf", ".wsh", ".reg", ".lnk",
    }
)  # fmt: skip
# Headers the channel sets itself: a custom header may not replace them (addressing, threading, bounce
# matching, MIME structure and unsubscribe handling all depend on them).
RESERVED_HEADERS = frozenset(
    {
        "from", "to", "cc", "bcc", "subject", "message-id", "date", "mime-version", "reply-to",
        "x-cio-delivery-id", "return-path",
    }
)  # fmt: skip
RESERVED_HEADER_PREFIXES = ("content-", "list-unsubscribe")

# An SMTP line is at most 998 characters plus CRLF (RFC 5322 §2.1.1); 78 is the recommended length.
_MAX_LINE = 998
_FOLD_AT = 78
# RFC 2231-encoded names triple in size; 200 bytes keeps the Content-Disposition line under _MAX_LINE.
_MAX_FILENAME_BYTES = 200
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # printable ASCII without space and colon (RFC 5322 ftext)
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"^{_ATEXT}(?:\.{_ATEXT})*$")
_DOMAIN = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
# A display name that needs no quoting: atext words separated by spaces.
_PLAIN_PHRASE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
# One mailbox: `Name <addr>`, `"Quoted, Name" <addr>`, `<addr>` or a bare `addr`.
_MAILBOX = re.compile(
    r'^(?:(?P<name>"(?:[^"\\]|\\.)*"|[^<>"]*?)\s*<(?P<addr>[^<>\s]*)>|(?P<bare>[^<>\s"]+))$', re.S
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_WHITESPACE = re.compile(r"\s+")
_BODY_TAG = re.compile(r"<body\b[^>]*>", re.I)
_PREHEADER_STYLE = (
    "display:none;font-size:1px;line-height:1px;max-height:0;max-width:0;opacity:0;overflow:hidden;"
    "mso-hide:all;color:transparent"
)

# Media queries survive in a <style> element (they cannot be inlined); <link> stylesheets are kept for the
# clients that read them but never fetched: a send must not depend on a third-party server.
_INLINER = css_inline.CSSInliner(keep_at_rules=True, keep_link_tags=True, load_remote_stylesheets=False)


# --------------------------------------------------------------------------------------------------------
# Validation (the API calls these before queueing; the message builder runs the same checks)


class _AttachmentError(ValueError):
    def __init__(self, message: str, kind: Literal["invalid", "too_large", "forbidden"]) -> None:
        super().__init__(message)
        self.kind = kind


def validate_attachments(attachments: object) -> None:
    """Check a transactional ``attachments`` object: {filename: base64 content}.

    Raises ``InvalidInput`` (not an object, bad names, bad base64), ``Forbidden`` (a refused extension, 403)
    or ``PayloadTooLarge`` (decoded total of 2 MB or more, 413), as Customer.io answers.
    """
    try:
        _decode_attachments(attachments)
    except _AttachmentError as exc:
        if exc.kind == "too_large":
            raise PayloadTooLarge(str(exc), field="attachments") from None
        if exc.kind == "forbidden":
            raise Forbidden(str(exc), field="attachments") from None
        raise InvalidInput(str(exc), field="attachments") from None


def validate_headers(headers: object) -> None:
    """Check a transactional ``headers`` object: {name: value} with ASCII names without spaces or colons,
    values without line breaks, and no reserved header (``RESERVED_HEADERS``, ``Content-*``,
    ``List-Unsubscribe*``). Raises ``InvalidInput``."""
    try:
        _check_headers(headers)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="headers") from None


def parse_recipients(value: str) -> list[str]:
    """The bare addresses in a comma-separated recipient list (display names allowed, IDN domains turned
    into their ASCII form). An empty string gives an empty list. Raises ``InvalidInput`` for anything
    that is not a list of mailboxes."""
    try:
        return [mailbox.addr for mailbox in _parse_mailboxes(value, "recipients")]
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def validate_recipients(to: str | None, cc: str | None = None, bcc: str | None = None) -> list[str]:
    """Every address of a send (to, then cc, then bcc). Raises ``InvalidInput`` when ``to`` is empty, an
    address is malformed, or there are more than ``MAX_RECIPIENTS`` in all."""
    addresses: list[str] = []
    for field_name, value in (("to", to), ("cc", cc), ("bcc", bcc)):
        try:
            addresses += [mailbox.addr for mailbox in _parse_mailboxes(value, field_name)]
        except ValueError as exc:
            raise InvalidInput(str(exc), field=field_name) from None
        if field_name == "to" and not addresses:
            raise InvalidInput("to: at least one recipient is required", field="to")
    if len(addresses) > MAX_RECIPIENTS:
        raise InvalidInput(
            f"too many recipients: {len(addresses)} across to, cc and bcc (at most {MAX_RECIPIENTS})",
            field="to",
        )
    return addresses


def _decode_attachments(attachments: object) -> list[tuple[str, bytes]]:
    if attachments is None:
        return []
    if not isinstance(attachments, Mapping):
        raise _AttachmentError("attachments must be an object of filename to base64 content", "invalid")
    decoded: list[tuple[str, bytes]] = []
    total = 0
    for name, content in attachments.items():
        if not isinstance(name, str) or not name.strip():
            raise _AttachmentError("attachment names must be non-empty strings", "invalid")
        if _CONTROL.search(name) or "/" in name or "\\" in name:
            raise _AttachmentError(
                f"attachment {name!r}: the name may not contain a path or control characters", "invalid"
            )
        if len(name.encode("utf-8", "replace")) > _MAX_FILENAME_BYTES:
            raise _AttachmentError(
                f"attachment {name!r}: names are limited to {_MAX_FILENAME_BYTES} bytes", "invalid"
            )
        # Windows ignores trailing dots and spaces, so "a.exe." runs as "a.exe".
        stem = name.rstrip(". ")
        extension = "." + stem.rsplit(".", 1)[-1].lower() if "." in stem else ""
        if extension in REFUSED_EXTENSIONS:
            raise _AttachmentError(f"attachment {name!r}: {extension} files are not allowed", "forbidden")
        if not isinstance(content, str):
            raise _AttachmentError(f"attachment {name!r}: content must be a base64 string", "invalid")
        try:
            # MIME-style base64 wraps lines; anything else outside the alphabet is an error.
            data = base64.b64decode("".join(content.split()), validate=True)
        except (binascii.Error, ValueError):
            raise _AttachmentError(f"attachment {name!r}: content is not valid base64", "invalid") from None
        total += len(data)
        if total >= MAX_ATTACHMENTS_BYTES:
            raise _AttachmentError(
                f"attachments total {total} bytes or more; the limit is under {MAX_ATTACHMENTS_BYTES} bytes",
                "too_large",
            )
        decoded.append((name, data))
    return decoded


def _is_reserved(name: str) -> bool:
    lower = name.lower()
    return lower in RESERVED_HEADERS or lower.startswith(RESERVED_HEADER_PREFIXES)


def _check_headers(headers: object) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise ValueError("headers must be an object of header name to value")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ValueError(f"header {name!r}: names are printable ASCII without spaces or colons")
        if not isinstance(value, str):
            raise ValueError(f"header {name}: the value must be a string")
        if "\r" in value or "\n" in value or "\0" in value:
            raise ValueError(f"header {name}: the value may not contain line breaks")
        if _is_reserved(name):
            raise ValueError(f"header {name} is set by Tidings and cannot be overridden")
        # ASCII values are folded only at spaces, so one word must fit on a line.
        if value.isascii() and len(name) + 2 + max(map(len, value.split(" "))) > _MAX_LINE:
            raise ValueError(f"header {name}: longer than one SMTP line ({_MAX_LINE} characters)")
        checked[name] = value
    return checked


class _Mailbox(NamedTuple):
    name: str
    addr: str

    def header(self) -> str:
        """As written in a header: the name quoted or RFC 2047-encoded as needed."""
        return f"{_phrase(self.name)} <{self.addr}>" if self.name else self.addr

    def display(self) -> str:
        """As a person reads it (the name decoded)."""
        if not self.name:
            return self.addr
        name = self.name if _PLAIN_PHRASE.match(self.name) else _quoted(self.name)
        return f"{name} <{self.addr}>"


def _parse_mailboxes(value: object, field_name: str) -> list[_Mailbox]:
    if value is None:
        return []
    if not isinstance(value, str):
        raise ValueError(f"{field_name}: expected a comma-separated string of addresses")
    mailboxes = []
    for raw_chunk in _split_address_list(value):
        chunk = raw_chunk.strip()
        if not chunk:
            continue
        match = _MAILBOX.match(chunk)
        if match is None:
            raise ValueError(f"{field_name}: {chunk!r} is not an email address")
        name = (match.group("name") or "").strip()
        if name.startswith('"'):
            name = re.sub(r"\\(.)", r"\1", name[1:-1])
        name = " ".join(_CONTROL.sub(" ", name).split())
        addr = _normalise_addr_spec(match.group("addr") or match.group("bare") or "", field_name, chunk)
        mailboxes.append(_Mailbox(name, addr))
    return mailboxes


def _split_address_list(value: str) -> Iterator[str]:
    """Split on commas outside quotes and angle brackets (a display name may contain a quoted comma)."""
    start = 0
    quoted = angle = escaped = False
    for i, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "<" and not quoted:
            angle = True
        elif char == ">" and not quoted:
            angle = False
        elif char == "," and not quoted and not angle:
            yield value[start:i]
            start = i + 1
    yield value[start:]


def _normalise_addr_spec(addr: str, field_name: str, chunk: str) -> str:
    if addr.count("@") != 1 or len(addr) > 254:
        raise ValueError(f"{field_name}: {chunk!r} is not an email address")
    local, domain = addr.split("@")
    if not domain.isascii():
        # Internationalised domains travel as their ASCII (punycode) form; UTF-8 local parts would need
        # SMTPUTF8, which many servers lack, so they are refused below.
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"{field_name}: {chunk!r} has an invalid domain") from None
    if not _DOT_ATOM.match(local) or len(local) > 64 or not _DOMAIN.match(domain):
        raise ValueError(f"{field_name}: {chunk!r} is not an email address")
    return f"{local}@{domain.lower()}"


# --------------------------------------------------------------------------------------------------------
# HTML to plain text


class _TextExtractor:
    """What :func:`html_to_text` writes for each tag and text run (driven by :func:`_feed`)."""

    _SKIP = frozenset({"script", "style", "head", "title", "template", "noscript"})
    _BLOCK = frozenset(
        {
            "div", "section", "article", "header", "footer", "main", "nav", "aside", "table", "tbody",
            "thead", "tfoot", "tr", "ul", "ol", "dl", "dt", "dd", "center", "address", "figure", "form",
        }
    )  # fmt: skip
    _PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "hr"})
    # The tags whose start, or end, the handlers act on; _feed does not call them for the others (span,
    # strong, font, ...: about a third of an email's tags).
    STARTS = _SKIP | _BLOCK | _PARAGRAPH | frozenset({"body", "br", "li", "td", "th", "a", "img"})
    ENDS = _SKIP | _BLOCK | _PARAGRAPH | frozenset({"li", "a"})

    def __init__(self) -> None:
        self.parts: list[str] = []
        # Open skipped elements by tag, and their total (checked on every event, so kept as a number).
        self._skip: dict[str, int] = {}
        self._skipping = 0
        self._pre = 0
        # Open links: href, index into parts where the link text starts, alt texts of images inside.
        self._links: list[tuple[str | None, int, list[str]]] = []
        self._lists: list[int | None] = []  # None for <ul>, the next number for <ol>

    def _tail(self) -> str:
        parts = self.parts
        if parts and parts[-1]:
            return parts[-1]
        for part in reversed(parts):
            if part:
                return part
        return ""

    def _trim_spaces(self) -> None:
        parts = self.parts
        if parts and parts[-1] and parts[-1][-1] != " ":
            return  # the usual case: nothing to trim
        # Emptied parts stay in place: open links remember where their text starts by index.
        for i in range(len(parts) - 1, -1, -1):
            parts[i] = parts[i].rstrip(" ")
            if parts[i]:
                return

    def _text(self, text: str) -> None:
        if not self._pre:
            # Most text runs are the whitespace between two tags, and most others have no whitespace
            # but single spaces: every other whitespace character (\s) is also unprintable.
            if text.isspace():
                text = " "
            elif "  " in text or not text.isprintable():
                text = _WHITESPACE.sub(" ", text)
            if text[:1] == " ":
                tail = self._tail()
                if not tail or tail[-1] in " \n":
                    text = text[1:]
        if text:
            self.parts.append(text)

    def _break(self, newlines: int) -> None:
        """End the current line and leave ``newlines`` line breaks (1: new line, 2: new paragraph)."""
        self._trim_spaces()
        parts = self.parts
        if parts and parts[-1][-1:] not in ("\n", ""):
            # The usual case: the last part is text (trimmed of spaces above), so no line break yet.
            parts.append("\n" * newlines)
            return
        present = 0
        for part in reversed(parts):
            stripped = part.rstrip("\n")
            present += len(part) - len(stripped)
            if stripped:
                break
        else:
            return  # nothing written yet: no leading blank lines
        if present < newlines:
            self.parts.append("\n" * (newlines - present))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip[tag] = self._skip.get(tag, 0) + 1
            self._skipping += 1
            return
        if tag == "body":
            self._skipping -= self._skip.pop("head", 0)  # a <head> never closed ends where <body> starts
        if self._skipping:
            return
        if tag == "br":
            self._break_line()
        elif tag in self._PARAGRAPH:
            self._break(2)
            if tag == "pre":
                self._pre += 1
        elif tag in self._BLOCK:
            self._break(1)
            if tag == "ul":
                self._lists.append(None)
            elif tag == "ol":
                self._lists.append(1)
        elif tag == "li":
            self._break(1)
            number = self._lists[-1] if self._lists else None
            if number is None:
                self.parts.append("- ")
            else:
                self.parts.append(f"{number}. ")
                self._lists[-1] = number + 1
        elif tag in ("td", "th"):
            tail = self._tail()
            if tail and tail[-1] not in " \n":
                self.parts.append(" ")
        elif tag == "a":
            self._links.append((dict(attrs).get("href"), len(self.parts), []))
        elif tag == "img" and self._links:
            alt = dict(attrs).get("alt")
            if alt:
                self._links[-1][2].append(alt.strip())

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <br/>, <img/>: no end tag follows, so only the start-tag side applies.
        if tag in self._SKIP:
            return
        self.handle_starttag(tag, attrs)
        if tag == "a":
            self.handle_endtag(tag)

    def _break_line(self) -> None:
        self._trim_spaces()
        self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            if self._skip.get(tag):
                self._skip[tag] -= 1
                self._skipping -= 1
            return
        if self._skipping:
            return
        if tag in self._PARAGRAPH:
            if tag == "pre" and self._pre:
                self._pre -= 1
            self._break(2)
        elif tag in self._BLOCK:
            if tag in ("ul", "ol") and self._lists:
                self._lists.pop()
            self._break(1)
        elif tag == "li":
            self._break(1)
        elif tag == "a" and self._links:
            href, start, alts = self._links.pop()
            text = "".join(self.parts[start:]).strip()
            if not text and alts:
                self._text(" ".join(alts))
                text = " ".join(alts)
            href = (href or "").strip()
            if not href or href.startswith(("#", "javascript:")):
                return
            shown = href.removeprefix("mailto:")
            if not text:
                self._text(href)
            elif text not in (href, shown):
                self.parts.append(f" ({href})")


# One pass over the markup with a single pattern, driving _TextExtractor's handlers directly: the standard
# library's HTMLParser.feed does the same job several times slower (it was the largest cost of sending
# an email). Alternatives, in order: comment, doctype or CDATA (ignored), end tag, start tag with its
# attributes, text. Which one matched is the number of its last group (``Match.lastindex``). The attributes
# are matched possessively: runs at a time, never backtracking (there is only one way to match them).
_MARKUP = re.compile(
    r"(<!--.*?(?:-->|$)|<![^>]*>)|</([a-zA-Z][\w:-]*)\s*>"
    r"|<([a-zA-Z][\w:-]*)((?:[^>\"']++|\"[^\"]*+\"|'[^']*+')*+)>|([^<]+|<)",
    re.DOTALL,
)
_END_TAG, _START_TAG, _ATTRIBUTES, _TEXT = 2, 3, 4, 5
_ATTRIBUTE = re.compile(r"""([^\s=/>]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?""")
_RAW_TEXT = {"script": re.compile(r"</script\s*>", re.I), "style": re.compile(r"</style\s*>", re.I)}


def _attributes(text: str) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    for match in _ATTRIBUTE.finditer(text):
        name, double, single, bare = match.groups()
        value = double if double is not None else single if single is not None else bare
        found.append((name.lower(), html_lib.unescape(value) if value is not None else None))
    return found


def _feed(parser: _TextExtractor, markup: str) -> None:
    position, end = 0, len(markup)
    text = parser._text
    while position < end:
        for match in _MARKUP.finditer(markup, position):
            kind = match.lastindex
            if kind == _TEXT:
                if not parser._skipping:
                    data = match.group(_TEXT)
                    text(html_lib.unescape(data) if "&" in data else data)
            elif kind == _END_TAG:
                tag = match.group(_END_TAG).lower()
                if tag in _TextExtractor.ENDS:
                    parser.handle_endtag(tag)
            elif kind == _ATTRIBUTES:
                tag = match.group(_START_TAG).lower()
                if tag not in _TextExtractor.STARTS:
                    continue
                attrs = match.group(_ATTRIBUTES)
                wanted = _attributes(attrs) if tag in ("a", "img") else []
                if attrs.rstrip().endswith("/"):
                    parser.handle_startendtag(tag, wanted)
                    continue
                parser.handle_starttag(tag, wanted)
                if tag in _RAW_TEXT:
                    # Script and style content is not markup: skip to the end tag, and match again there.
                    found = _RAW_TEXT[tag].search(markup, match.end())
                    position = found.end() if found else end
                    parser.handle_endtag(tag)
                    break
        else:
            return


def html_to_text(html: str) -> str:
    """A readable plain-text version of an HTML body: paragraphs and ``<br>`` become line breaks, links
    become ``text (url)``, list items get ``-`` or numbers, scripts, styles and the head are dropped."""
    parser = _TextExtractor()
    _feed(parser, html)
    lines = [line.rstrip() for line in "".join(parser.parts).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n") + "\n"


# --------------------------------------------------------------------------------------------------------
# Building the message


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _encoded_words(text: str) -> str:
    """RFC 2047 ``B`` encoded words of whole characters, each short enough to keep lines under 78."""
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in text:
        width = len(char.encode("utf-8", "replace"))
        if size + width > 42 and chunk:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    if chunk:
        words.append("".join(chunk))
    return "\r\n ".join(
        f"=?utf-8?b?{base64.b64encode(word.encode('utf-8', 'replace')).decode('ascii')}?=" for word in words
    )


def _needs_encoding(text: str) -> bool:
    # ASCII that looks like an encoded word would be decoded by the reader, so it is encoded too.
    return not text.isascii() or "=?" in text


def _phrase(name: str) -> str:
    if _needs_encoding(name):
        return _encoded_words(name)
    return name if _PLAIN_PHRASE.match(name) else _quoted(name)


def _unstructured(name: str, value: str) -> str:
    """A header line (without CRLF) for free text, folded at spaces or RFC 2047-encoded."""
    value = _CONTROL.sub(" ", value)
    if _needs_encoding(value):
        return f"{name}: {_encoded_words(value)}"
    line = f"{name}: {value}"
    if len(line) <= _FOLD_AT:
        return line
    # Fold before a space (the space stays, so unfolding restores the value) without leaving a line of
    # whitespace alone.
    lines = [f"{name}:"]
    for piece in re.split(r"(?= )", " " + value):
        if piece.strip() and len(lines[-1]) + len(piece) > _FOLD_AT and len(lines[-1]) > len(name) + 1:
            lines.append(piece)
        else:
            lines[-1] += piece
    return "\r\n".join(lines)


def _address_header(name: str, mailboxes: list[_Mailbox]) -> str:
    line = f"{name}: "
    current = len(line)
    for i, mailbox in enumerate(mailboxes):
        text = mailbox.header()
        first = text.split("\r\n", 1)[0]
        if i and current + 2 + len(first) > _FOLD_AT:
            line += ",\r\n " + text
        else:
            line += (", " if i else "") + text
        current = len(line) - line.rfind("\n") - 1
    return line


def _quoted_printable(text: str) -> bytes:
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8", "replace")
    encoded = binascii.b2a_qp(data, istext=True)
    if not encoded.endswith(b"\n"):
        encoded += b"\n"
    return encoded.replace(b"\n", b"\r\n")


def _text_part(subtype: str, text: str) -> bytes:
    head = f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n'
    return head.encode("ascii") + b"\r\n" + _quoted_printable(text)


def _attachment_part(filename: str, data: bytes) -> bytes:
    mime_type, encoding = mimetypes.guess_type(filename, strict=False)
    if mime_type is None or encoding is not None:
        mime_type = "application/octet-stream"
    if filename.isascii() and '"' not in filename:
        name_param, filename_param = f'name="{filename}"', f'filename="{filename}"'
    else:
        # RFC 2231 for non-ASCII names, which every current client reads.
        encoded = encode_rfc2231(filename, "utf-8")
        name_param, filename_param = f"name*={encoded}", f"filename*={encoded}"
    head = (
        f"Content-Type: {mime_type};\r\n {name_param}\r\nContent-Transfer-Encoding: base64\r\n"
        f"Content-Disposition: attachment;\r\n {filename_param}\r\n\r\n"
    )
    return head.encode("ascii") + base64.encodebytes(data).replace(b"\n", b"\r\n")


def _multipart(subtype: str, parts: list[bytes]) -> bytes:
    # "=_" cannot occur in quoted-printable or base64 text, so the boundary never collides with a body.
    boundary = f"=_{secrets.token_hex(12)}".encode("ascii")
    chunks = [
        b"Content-Type: multipart/" + subtype.encode("ascii") + b';\r\n boundary="' + boundary + b'"\r\n'
    ]
    for part in parts:
        chunks += [b"\r\n--", boundary, b"\r\n", part]
    chunks += [b"\r\n--", boundary, b"--\r\n"]
    return b"".join(chunks)


def _prepare_html(html: str, preheader: str | None, inline_css: bool) -> str:
    if inline_css:
        try:
            html = _INLINER.inline(html)
        except css_inline.InlineError as exc:
            # Unusable CSS should not stop a send: the message goes out with its <style> as written.
            log.warning("CSS inlining failed, sending the HTML as written: %s", exc)
    if preheader:
        # After inlining, so no stylesheet rule can make the preview text visible.
        hidden = f'<div style="{_PREHEADER_STYLE}">{html_lib.escape(preheader)}</div>'
        match = _BODY_TAG.search(html)
        html = html[: match.end()] + hidden + html[match.end() :] if match else hidden + html
    return html


def _unsubscribe_uri(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    value = value.strip()
    if not value.isascii() or any(c in value for c in " \t\r\n<>\0"):
        raise ValueError(f"{what}: {value!r} is not a usable URI")
    # A comma separates List-Unsubscribe entries, so one inside a URI must be escaped.
    return value.replace(",", "%2C")


@dataclass
class _Rendered:
    data: bytes
    message_id: str
    to: str  # the To header as a person reads it
    mail_from: str
    recipients: list[str]
    # fake_bcc copies: (address, message bytes)
    copies: list[tuple[str, bytes]] = field(default_factory=list)


def _render(outgoing: Outgoing, domain: str) -> _Rendered:
    content = outgoing.content
    settings = _settings(outgoing)
    if not _DOMAIN.match(domain):
        raise ValueError(f"invalid Message-ID domain {domain!r}")
    delivery_id = outgoing.delivery_id
    if not _DOT_ATOM.match(delivery_id):
        raise ValueError(f"delivery id {delivery_id!r} cannot be used in a Message-ID")
    senders = _parse_mailboxes(content.get("from") or settings.default_from, "from")
    if len(senders) != 1:
        raise ValueError("from: exactly one sender address is required")
    to = _parse_mailboxes(content.get("to"), "to")
    if not to:
        raise ValueError("to: at least one recipient is required")
    cc = _parse_mailboxes(content.get("cc"), "cc")
    bcc = _parse_mailboxes(content.get("bcc"), "bcc")
    reply_to = _parse_mailboxes(content.get("reply_to"), "reply_to")
    custom_headers = _check_headers(content.get("headers"))
    attachments = _decode_attachments(content.get("attachments"))
    subject = str(content.get("subject") or "")
    message_id = f"<{delivery_id}@{domain}>"

    # Headers after the addressing ones, shared by the message and its fake_bcc copies.
    tail = [f"Date: {format_datetime(datetime.now(UTC))}"]
    if reply_to:
        tail.append(_address_header("Reply-To", reply_to))
    tail.append(f"X-CIO-Delivery-Id: {delivery_id}")
    uris = []
    if content.get("list_unsubscribe_url"):
        uris.append(_unsubscribe_uri(content["list_unsubscribe_url"], "list_unsubscribe_url"))
    if content.get("list_unsubscribe_mailto"):
        mailto = _unsubscribe_uri(content["list_unsubscribe_mailto"], "list_unsubscribe_mailto")
        uris.append(mailto if mailto.lower().startswith("mailto:") else f"mailto:{mailto}")
    if uris:
        # One URI per line: folding between entries keeps lines short without touching the URIs.
        tail.append("List-Unsubscribe: " + ",\r\n ".join(f"<{uri}>" for uri in uris))
        if content.get("list_unsubscribe_url"):
            # RFC 8058 one-click: receivers POST "List-Unsubscribe=One-Click" to the URL (they honour it
            # for https URLs only).
            tail.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    tail += [_unstructured(name, value) for name, value in custom_headers.items()]
    tail.append("MIME-Version: 1.0")

    html = content.get("html")
    text = content.get("text")
    amp = content.get("amp")
    if text is None:
        text = html_to_text(html) if html else ""
    # Quoted-printable keeps every part 7-bit with short lines: no server needs 8BITMIME, and long HTML
    # lines survive relays that would otherwise break them.
    alternatives = [_text_part("plain", str(text))]
    if amp:
        # AMP before HTML: clients show the last alternative they understand.
        alternatives.append(_text_part("x-amp-html", str(amp)))
    if html:
        inline_css = not content.get("disable_css_preprocessing")
        alternatives.append(
            _text_part("html", _prepare_html(str(html), str(content.get("preheader") or ""), inline_css))
        )
    body = alternatives[0] if len(alternatives) == 1 else _multipart("alternative", alternatives)
    if attachments:
        body = _multipart("mixed", [body] + [_attachment_part(name, data) for name, data in attachments])
    shared = ("\r\n".join(tail) + "\r\n").encode("ascii") + body

    def message(addressing: list[str], subject_text: str, mid: str) -> bytes:
        head = [_address_header("From", senders), *addressing, _unstructured("Subject", subject_text)]
        head.append(f"Message-ID: {mid}")
        return ("\r\n".join(head) + "\r\n").encode("ascii") + shared

    addressing = [_address_header("To", to)] + ([_address_header("Cc", cc)] if cc else [])
    fake_bcc = bool(content.get("fake_bcc")) and bool(bcc)
    rendered = _Rendered(
        data=message(addressing, subject, message_id),
        message_id=message_id,
        to=", ".join(mailbox.display() for mailbox in to),
        mail_from=senders[0].addr,
        recipients=[mailbox.addr for mailbox in (*to, *cc, *([] if fake_bcc else bcc))],
    )
    if fake_bcc:
        shown = ", ".join(mailbox.addr for mailbox in (*to, *cc))
        for n, mailbox in enumerate(bcc, start=1):
            copy = message(
                [_address_header("To", [mailbox])],
                f"[Copy of message to {shown}] {subject}",
                f"<{delivery_id}.copy{n}@{domain}>",
            )
            rendered.copies.append((mailbox.addr, copy))
    return rendered


def build_message(outgoing: Outgoing, *, domain: str) -> EmailMessage:
    """The MIME message for a delivery (see the module docstring for the content keys), parsed back from
    the exact bytes the channel sends.

    Structure: text/plain, optional text/x-amp-html, text/html in a multipart/alternative (just text/plain
    when there is no HTML or AMP), wrapped in multipart/mixed with the attachments.
    ``Message-ID: <{delivery_id}@{domain}>``; Bcc never appears. Raises ``ValueError`` for bad addresses,
    headers (naming the header), attachments or unsubscribe URIs. Pure apart from the clock (``Date``) and
    the random MIME boundaries.
    """
    return _parse(_render(outgoing, domain).data)


def render_message(outgoing: Outgoing, *, domain: str) -> bytes:
    """The message as sent over SMTP (CRLF line ends, before dot-stuffing): for benchmarks and tools."""
    return _render(outgoing, domain).data


def _parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.SMTP)
    assert isinstance(message, EmailMessage)
    return message


def _settings(outgoing: Outgoing) -> EmailSettings:
    settings = outgoing.settings
    if settings is None:
        return EmailSettings()
    if isinstance(settings, EmailSettings):
        return settings
    return EmailSettings.model_validate(settings)


def message_id_domain(public_url: str | None, from_address: str | None) -> str:
    """The domain for Message-IDs: the public URL's host when it is a real name, else the From domain.

    Loopback and IP hosts make poor Message-ID domains (spam filters score them), so a development server
    at http://127.0.0.1:8080 uses the sender's domain instead.
    """
    host = urlsplit(public_url).hostname if public_url else None
    if host and "." in host and not _is_ip(host):
        try:
            ascii_host = host.encode("idna").decode("ascii")
        except UnicodeError:
            ascii_host = ""
        if _DOMAIN.match(ascii_host):
            return ascii_host
    if from_address:
        try:
            mailboxes = _parse_mailboxes(from_address, "from")
        except ValueError:
            mailboxes = []
        if mailboxes:
            return mailboxes[0].addr.rsplit("@", 1)[1]
    return "localhost"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------------------
# SMTP transport


@dataclass(frozen=True)
class SmtpTarget:
    scheme: Literal["smtp", "smtps"]
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    starttls: Literal["auto", "require", "off"] = "auto"
    helo: str | None = None

    @property
    def where(self) -> str:
        """For messages and logs: never includes the credentials."""
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_smtp_url(url: str) -> SmtpTarget:
    """Parse an SMTP URL (see the module docstring). Raises ``ValueError``."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        raise ValueError(f"unsupported scheme {parts.scheme!r}: use smtp:// or smtps://")
    host = parts.hostname
    if not host:
        raise ValueError("the SMTP URL has no host")
    try:
        port = parts.port or (465 if scheme == "smtps" else 25)
    except ValueError:
        raise ValueError("the SMTP URL has an invalid port") from None
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"starttls", "helo"}
    if unknown:
        raise ValueError(f"unknown SMTP URL parameter(s): {', '.join(sorted(unknown))}")
    starttls = query.get("starttls", ["auto"])[-1].lower()
    if starttls not in ("auto", "require", "off"):
        raise ValueError("starttls must be auto, require or off")
    if scheme == "smtps" and "starttls" in query:
        raise ValueError("starttls applies to smtp:// only (smtps:// is TLS from the start)")
    helo = query.get("helo", [None])[-1] or None
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return SmtpTarget(
        scheme="smtps" if scheme == "smtps" else "smtp",
        host=host,
        port=port,
        username=username,
        password=password,
        starttls="require" if starttls == "require" else "off" if starttls == "off" else "auto",
        helo=helo,
    )


@lru_cache(maxsize=2)
def _ssl_context(verify: bool) -> ssl.SSLContext:
    # Built once: loading the CA store costs milliseconds, and contexts are safe to share between threads.
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@lru_cache(maxsize=1)
def _local_hostname() -> str:
    # smtplib would call getfqdn() for every connection; it can wait on DNS, so ask once.
    return socket.getfqdn()


class _Client(smtplib.SMTP):
    # smtplib's constructor connects and leaks the socket when the greeting fails (timeout, early close);
    # closing here keeps failed connects from surfacing later as ResourceWarnings.
    def connect(
        self, host: str = "localhost", port: int = 0, source_address: Any = None
    ) -> tuple[int, bytes]:
        try:
            return super().connect(host, port, source_address)
        except BaseException:
            self.close()
            raise


class _TlsClient(_Client, smtplib.SMTP_SSL):
    pass


def _connect(target: SmtpTarget, *, timeout: float, tls_verify: bool) -> smtplib.SMTP:
    helo = target.helo or _local_hostname()
    conn: smtplib.SMTP
    if target.scheme == "smtps":
        conn = _TlsClient(
            target.host, target.port, local_hostname=helo, timeout=timeout, context=_ssl_context(tls_verify)
        )
    else:
        conn = _Client(target.host, target.port, local_hostname=helo, timeout=timeout)
    try:
        conn.ehlo_or_helo_if_needed()
        if target.scheme == "smtp" and target.starttls != "off":
            if conn.has_extn("starttls"):
                conn.starttls(context=_ssl_context(tls_verify))
                conn.ehlo()
            elif target.starttls == "require":
                raise smtplib.SMTPNotSupportedError("the server does not offer STARTTLS (starttls=require)")
        if target.username is not None:
            conn.login(target.username, target.password or "")
    except BaseException:
        conn.close()
        raise
    return conn


class _Stale(Exception):
    """The server closed a connection before accepting anything: safe to retry on a new one."""


def _reply_text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _dot_stuffed(data: bytes) -> bytes:
    """DATA content: a line starting with a dot gets another (RFC 5321 §4.5.2), then the end marker.
    The renderer writes CRLF line ends only, so no line-end repair is needed."""
    return data.replace(b"\r\n.", b"\r\n..") + (b"" if data.endswith(b"\r\n") else b"\r\n") + b".\r\n"


def _rset(conn: smtplib.SMTP) -> None:
    try:
        conn.rset()
    except (smtplib.SMTPException, OSError):
        conn.close()


def _transaction(
    conn: smtplib.SMTP, mail_from: str, recipients: list[str], payload: bytes
) -> dict[str, tuple[int, bytes]]:
    """One MAIL/RCPT/DATA exchange; returns the refused recipients (when some were accepted).

    With PIPELINING (RFC 2920) the envelope goes out in one write and costs one round trip instead of
    two plus one per recipient. Raises ``_Stale`` when the connection died before the server accepted the
    sender, smtplib's exceptions otherwise (after RSET, so the connection stays usable).
    """
    options = f" SIZE={len(payload)}" if conn.has_extn("size") else ""
    commands = [f"MAIL FROM:<{mail_from}>{options}"] + [f"RCPT TO:<{r}>" for r in recipients]
    pipelining = conn.has_extn("pipelining")
    try:
        if pipelining:
            conn.send("\r\n".join([*commands, "DATA"]) + "\r\n")
        else:
            conn.putcmd(commands[0])
        code, reply = conn.getreply()
    except smtplib.SMTPServerDisconnected:
        raise _Stale from None
    if code == 421:  # the server is closing this connection (idle limit, messages-per-connection limit)
        conn.close()
        raise _Stale
    sender_reply = (code, reply)
    replies: list[tuple[int, bytes]] = []
    for command in commands[1:]:
        if not pipelining:
            if sender_reply[0] != 250:
                break
            conn.putcmd(command)
        replies.append(conn.getreply())
    data_reply = conn.getreply() if pipelining else None
    refused = {r: reply for r, reply in zip(recipients, replies, strict=False) if reply[0] not in (250, 251)}
    problem: smtplib.SMTPException | None = None
    if sender_reply[0] != 250:
        problem = smtplib.SMTPSenderRefused(sender_reply[0], sender_reply[1], mail_from)
    elif len(refused) == len(recipients):
        problem = smtplib.SMTPRecipientsRefused(refused)
    if problem is not None:
        if data_reply is not None and data_reply[0] == 354:
            # A pipelined DATA was accepted although nothing can be delivered: end it empty.
            conn.send(".\r\n")
            conn.getreply()
        _rset(conn)
        raise problem
    if data_reply is None:
        data_reply = conn.docmd("DATA")
    if data_reply[0] != 354:
        _rset(conn)
        raise smtplib.SMTPDataError(data_reply[0], data_reply[1])
    conn.send(payload)
    code, reply = conn.getreply()
    if code != 250:
        raise smtplib.SMTPDataError(code, reply)
    return refused


@dataclass(eq=False)
class _Pooled:
    conn: smtplib.SMTP
    last_used: float
    closed: bool = False


_PoolKey = tuple[str, bool, float]


class _ThreadConnections(dict[_PoolKey, _Pooled]):
    """One thread's connections. When the thread ends, Python drops its thread-local storage and with it
    this dict: the connections close then instead of lingering until ``EmailChannel.close``."""

    def __init__(self, pool: _ConnectionPool) -> None:
        super().__init__()
        self._pool = weakref.ref(pool)

    def __del__(self) -> None:
        pool = self._pool()
        for pooled in self.values():
            if pool is not None:
                pool.forget(pooled)
            _shut(pooled, polite=False)  # no network round trip inside a finaliser


class _ConnectionPool:
    """Open SMTP connections, one per (URL, tls_verify, timeout) per thread.

    smtplib connections are not thread-safe and an SMTP session carries one transaction at a time, so
    each sending thread owns its connections; a registry lets ``close_all`` reach every thread's.
    """

    MAX_PER_THREAD = 8  # distinct servers one thread keeps open (workspaces may each have their own)

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: set[_Pooled] = set()

    def _mine(self) -> _ThreadConnections:
        conns: _ThreadConnections | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = _ThreadConnections(self)
        return conns

    def get(self, key: _PoolKey) -> _Pooled | None:
        mine = self._mine()
        pooled = mine.get(key)
        if pooled is not None and pooled.closed:
            del mine[key]
            return None
        return pooled

    def put(self, key: _PoolKey, conn: smtplib.SMTP) -> _Pooled:
        mine = self._mine()
        pooled = _Pooled(conn, time.monotonic())
        with self._lock:
            self._all.add(pooled)
        mine[key] = pooled
        while len(mine) > self.MAX_PER_THREAD:
            oldest = min(mine, key=lambda k: mine[k].last_used)
            self.discard(oldest, mine[oldest], polite=True)
        return pooled

    def discard(self, key: _PoolKey, pooled: _Pooled, *, polite: bool = False) -> None:
        mine = self._mine()
        if mine.get(key) is pooled:
            del mine[key]
        self.forget(pooled)
        _shut(pooled, polite=polite)

    def forget(self, pooled: _Pooled) -> None:
        with self._lock:
            self._all.discard(pooled)

    def close_all(self) -> None:
        with self._lock:
            everything, self._all = self._all, set()
        for pooled in everything:
            _shut(pooled, polite=True)


def _shut(pooled: _Pooled, *, polite: bool) -> None:
    pooled.closed = True
    try:
        if polite:
            pooled.conn.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        pooled.conn.close()


def _send_error(exc: BaseException, target: SmtpTarget) -> SendError:
    where = target.where
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        details = "; ".join(
            f"{addr}: {code} {_reply_text(text)}" for addr, (code, text) in exc.recipients.items()
        )
        codes = [code for code, _ in exc.recipients.values()]
        status = codes[0] if codes else None
        if any(400 <= code < 500 for code in codes):
            return SendError(f"{where} deferred every recipient: {details}", transient=True, status=status)
        return SendError(
            f"{where} refused every recipient: {details}", transient=False, undeliverable=True, status=status
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        # Sender refused, data refused, greeting refused, authentication failed: the reply code decides
        # (4xx is a temporary condition per RFC 5321 §4.2.1, e.g. 454 "temporary authentication failure").
        code = exc.smtp_code
        what = "authentication failed" if isinstance(exc, smtplib.SMTPAuthenticationError) else "replied"
        message = f"{where} {what}: {code} {_reply_text(exc.smtp_error)}"
        return SendError(message, transient=not 500 <= code < 600, status=code if code > 0 else None)
    if isinstance(exc, smtplib.SMTPServerDisconnected | _Stale):
        return SendError(f"{where} closed the connection: {exc or 'unexpectedly'}", transient=True)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return SendError(f"{where}: {exc}", transient=False)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SendError(
            f"{where}: TLS certificate verification failed ({exc.verify_message}); "
            "set tls_verify to false only for a test server with a self-signed certificate",
            transient=False,
        )
    if isinstance(exc, TimeoutError):
        return SendError(f"{where} timed out", transient=True)
    if isinstance(exc, OSError):
        return SendError(f"cannot reach {where}: {exc}", transient=True)
    return SendError(f"{where}: {exc}", transient=False)


class EmailChannel:
    """Sends rendered deliveries over SMTP, reusing connections (see ``_ConnectionPool``)."""

    name = "email"

    def __init__(self, default_smtp_url: str | None, *, probe_after_idle: float = 1.0) -> None:
        self.default_smtp_url = default_smtp_url
        # A connection idle longer than this is checked with RSET before use (servers drop idle clients).
        # A busier one goes straight to MAIL: if the server had dropped it, MAIL fails before anything was
        # accepted and the send is retried once on a new connection, so the check would only cost a round
        # trip per message.
        self.probe_after_idle = probe_after_idle
        self._pool = _ConnectionPool()

    def close(self) -> None:
        """Close every pooled connection (all threads'). Sends in flight elsewhere may fail."""
        self._pool.close_all()

    def __enter__(self) -> EmailChannel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, outgoing: Outgoing) -> Sent:
        return self.build(outgoing)()

    def build(self, outgoing: Outgoing) -> Callable[[], Sent]:
        """Build the message (CPU only: addresses, MIME, CSS inlining) and return what sends it (network
        only). The sending worker builds on one thread and sends on several: building on the sending
        threads made them contend for the GIL, which cost a fifth more CPU than building them in turn."""
        try:
            settings = _settings(outgoing)
        except ValueError as exc:
            raise SendError(f"invalid email settings: {exc}", transient=False) from None
        url = settings.smtp_url or self.default_smtp_url
        if not url:
            raise SendError(
                "no SMTP server configured: set the workspace's messaging.email.smtp_url or TIDINGS_SMTP_URL",
                transient=False,
            )
        try:
            target = parse_smtp_url(url)
        except ValueError as exc:
            raise SendError(f"invalid SMTP URL: {exc}", transient=False) from None
        content = outgoing.content
        try:
            domain = message_id_domain(outgoing.public_url, content.get("from") or settings.default_from)
            rendered = _render(outgoing, domain)
        except ValueError as exc:
            raise SendError(f"cannot build the email: {exc}", transient=False) from None
        key: _PoolKey = (url, settings.tls_verify, settings.timeout_seconds)

        def transmit() -> Sent:
            refused = self._deliver(
                key, target, settings, rendered.mail_from, rendered.recipients, rendered.data
            )
            if refused:
                log.warning(
                    "delivery %s: %s refused some recipients: %s",
                    outgoing.delivery_id,
                    target.where,
                    "; ".join(f"{a}: {c} {_reply_text(t)}" for a, (c, t) in refused.items()),
                )
            for address, copy in rendered.copies:
                try:
                    self._deliver(key, target, settings, rendered.mail_from, [address], copy)
                except SendError as exc:
                    log.warning(
                        "delivery %s: fake_bcc copy to %s failed: %s", outgoing.delivery_id, address, exc
                    )
            return Sent(provider_message_id=rendered.message_id, recipient=rendered.to)

        return transmit

    def _deliver(
        self,
        key: _PoolKey,
        target: SmtpTarget,
        settings: EmailSettings,
        mail_from: str,
        recipients: list[str],
        data: bytes,
    ) -> dict[str, tuple[int, bytes]]:
        payload = _dot_stuffed(data)
        for attempt in range(2):
            with self._connection(key, target, settings) as (pooled, fresh):
                try:
                    refused = _transaction(pooled.conn, mail_from, recipients, payload)
                except _Stale:
                    self._pool.discard(key, pooled)
                    if fresh or attempt:
                        raise
                    continue
                pooled.last_used = time.monotonic()
                return refused
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _connection(
        self, key: _PoolKey, target: SmtpTarget, settings: EmailSettings
    ) -> Iterator[tuple[_Pooled, bool]]:
        """A pooled connection (checked when idle) or a new one; SMTP and socket errors become SendError
        and drop the connection unless the server answered cleanly (a reply means the session is intact)."""
        pooled: _Pooled | None = None
        try:
            pooled = self._pool.get(key)
            fresh = pooled is None
            idle = time.monotonic() - pooled.last_used if pooled is not None else 0.0
            if pooled is not None and idle > self.probe_after_idle and not _alive(pooled.conn):
                self._pool.discard(key, pooled)
                pooled, fresh = None, True
            if pooled is None:
                conn = _connect(target, timeout=settings.timeout_seconds, tls_verify=settings.tls_verify)
                pooled = self._pool.put(key, conn)
            yield pooled, fresh
        except SendError:
            raise
        except Exception as exc:
            if pooled is not None and not _keeps_session(exc):
                self._pool.discard(key, pooled)
            raise _send_error(exc, target) from exc


def _alive(conn: smtplib.SMTP) -> bool:
    try:
        return conn.rset()[0] == 250
    except (smtplib.SMTPException, OSError):
        return False


def _keeps_session(exc: BaseException) -> bool:
    # After a refused sender/recipients/data the transaction was reset and the session is still usable;
    # a 421 reply or any transport failure ends it.
    return (
        isinstance(exc, smtplib.SMTPRecipientsRefused | smtplib.SMTPSenderRefused | smtplib.SMTPDataError)
        and getattr(exc, "smtp_code", None) != 421
    )
