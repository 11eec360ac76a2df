"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, a free port, optional TLS and AUTH, scripted failures.

    with SmtpSink(tls="starttls", auth=("user", "secret")) as sink:
        channel = EmailChannel(sink.url)
        ...
        [received] = sink.wait_for(1)
        assert received.message["Subject"] == "Hello"

``sink.url`` matches the mode (``smtp://…?starttls=require`` or ``smtps://…``, with credentials when ``auth``
is set); the certificate is self-signed, so the sending side needs ``tls_verify=False``.
"""

from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import ipaddress
import ssl
import tempfile
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TlsMode = Literal["none", "starttls", "implicit"]


@dataclass
class Received:
    """One message as the server got it: ``raw`` is the DATA content (CRLF line ends, dots unstuffed),
    ``message`` the same parsed with ``email.policy.default`` after turning CRLF into LF."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage
    # Which connection (1, 2, ...) carried it.
    connection: int
    # Whether that connection was authenticated / encrypted when the message arrived.
    authenticated: bool = False
    tls: bool = False
    mail_options: list[str] = field(default_factory=list)


class _Controller(Controller):
    """aiosmtpd's threaded controller, plus two things a test server needs.

    - It binds port 0 and learns the port the kernel chose: picking a "free" port first and binding it later
      races with every other test process on the machine. aiosmtpd's start() connects to ``self.port``
      once the listener exists, so the real port is read just before.
    - It remembers every connection, so stopping can close them: aiosmtpd stops its loop without closing
      accepted sockets, which then surface as ResourceWarnings (errors in this suite) when collected.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.protocols: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]

    def factory(self) -> SMTP:
        protocol: SMTP = super().factory()  # type: ignore[no-untyped-call]
        self.protocols.add(protocol)
        return protocol

    def close_connections(self, *, abort: bool) -> None:
        """Close every open connection from the server side and wait until the loop has done it."""
        done = threading.Event()

        def close_all() -> None:
            for protocol in list(self.protocols):
                transport = protocol.transport
                if transport is not None and not transport.is_closing():
                    if abort and isinstance(transport, asyncio.Transport):
                        transport.abort()
                    else:
                        transport.close()
            # Closing completes in callbacks already queued; this one runs after them.
            self.loop.call_soon(done.set)

        self.loop.call_soon_threadsafe(close_all)
        if not done.wait(10):
            raise AssertionError("the SMTP sink did not close its connections")


class _Handler:
    """aiosmtpd hooks: record messages, count connections, enforce AUTH, answer with scripted failures."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        # With a 5-argument hook aiosmtpd leaves the bookkeeping to us.
        session.host_name = hostname
        self.sink._note_connection(server)
        if self.sink.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_HELO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str) -> str:
        session.host_name = hostname
        self.sink._note_connection(server)
        return f"250 {server.hostname}"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        # AUTH is enforced here rather than with aiosmtpd's auth_required: on a plain (test-only) listener
        # that option warns about credentials in clear text, and warnings are errors in this suite.
        if self.sink.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.sink.stall_rcpt.is_set():
            # A server that stops answering mid-envelope: the client is stuck before any message data
            # is sent, which is where the crash tests kill it.
            with self.sink._condition:
                self.sink.stalled += 1
                self.sink._condition.notify_all()
            while self.sink.stall_rcpt.is_set():
                await asyncio.sleep(0.02)
            return "421 4.3.0 Closing after a stall"
        failure = self.sink._failure("RCPT") or self.sink.refuse.get(address.lower())
        if failure is not None:
            return f"{failure[0]} {failure[1]}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        failure = self.sink._failure("DATA")
        if failure is not None:
            return f"{failure[0]} {failure[1]}"
        raw = envelope.original_content or b""
        # Parsed with LF line ends, as a mail client stores it: decoded bodies then read "\n", not "\r\n".
        message = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.sink._record(
            Received(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                raw=raw,
                message=message,
                connection=self.sink._connection_number(server),
                authenticated=bool(session.authenticated),
                tls=session.ssl is not None or self.sink.tls == "implicit",
                mail_options=list(envelope.mail_options),
            )
        )
        return "250 2.0.0 Message accepted"


class SmtpSink:
    """A running aiosmtpd server that records what it receives (see the module docstring).

    ``fail_with``, ``fail_on`` and ``refuse`` may be changed while it runs; ``connections`` counts SMTP
    sessions, so tests can check that a client reuses its connection.
    """

    def __init__(
        self,
        *,
        tls: TlsMode = "none",
        auth: tuple[str, str] | None = None,
        fail_with: tuple[int, str] | None = None,
        pipelining: bool = False,
    ) -> None:
        self.tls: TlsMode = tls
        self.auth = auth
        # Answer RCPT and DATA (the commands in fail_on) with this reply; settable while running.
        self.fail_with = fail_with
        self.fail_on: frozenset[str] = frozenset({"RCPT", "DATA"})
        # Per-address RCPT refusals by lower-case address: {"gone@example.com": (550, "5.1.1 No such user")}.
        self.refuse: dict[str, tuple[int, str]] = {}
        # Advertise RFC 2920 PIPELINING (aiosmtpd reads commands in order, so it copes with pipelined ones).
        self.pipelining = pipelining
        self.messages: list[Received] = []
        # While set, RCPT is never answered (see _Handler.handle_RCPT); ``stalled`` counts stuck commands.
        self.stall_rcpt = threading.Event()
        self.stalled = 0
        self._condition = threading.Condition()
        self._connections: weakref.WeakKeyDictionary[SMTP, int] = weakref.WeakKeyDictionary()
        self._connection_count = 0
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._controller: _Controller | None = None

    # --- lifecycle

    def start(self) -> SmtpSink:
        assert self._controller is None, "already started"
        context = self._ssl_context() if self.tls != "none" else None
        smtp_options: dict[str, Any] = {
            # Tests may authenticate over a plain connection; aiosmtpd refuses AUTH without TLS by default.
            "auth_require_tls": False,
            "authenticator": self._authenticate,
        }
        if self.tls == "starttls":
            smtp_options.update(tls_context=context, require_starttls=True)
        self._controller = _Controller(
            _Handler(self),
            hostname="127.0.0.1",
            port=0,
            ssl_context=context if self.tls == "implicit" else None,
            server_hostname="sink.test",
            **smtp_options,
        )
        try:
            self._controller.start()
        except BaseException:
            self._controller = None
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.close_connections(abort=True)
            self._controller.stop()
            self._controller = None
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- what tests use

    @property
    def port(self) -> int:
        assert self._controller is not None, "not started"
        return int(self._controller.port)

    @property
    def url(self) -> str:
        scheme = "smtps" if self.tls == "implicit" else "smtp"
        credentials = f"{quote(self.auth[0], safe='')}:{quote(self.auth[1], safe='')}@" if self.auth else ""
        query = "?starttls=require" if self.tls == "starttls" else ""
        return f"{scheme}://{credentials}127.0.0.1:{self.port}{query}"

    @property
    def connections(self) -> int:
        """How many SMTP sessions said EHLO/HELO (aiosmtpd's own start-up probe does not count)."""
        with self._condition:
            return self._connection_count

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        """Block until at least ``count`` messages have arrived; returns them all."""
        with self._condition:
            if not self._condition.wait_for(lambda: len(self.messages) >= count, timeout):
                raise AssertionError(
                    f"expected {count} message(s) within {timeout}s, got {len(self.messages)}"
                )
            return list(self.messages)

    def clear(self) -> None:
        with self._condition:
            self.messages.clear()

    def drop_connections(self) -> None:
        """Close every open client connection from the server side (as an idle timeout would)."""
        assert self._controller is not None, "not started"
        self._controller.close_connections(abort=False)

    # --- internals (called on the server's event-loop thread)

    def _failure(self, command: str) -> tuple[int, str] | None:
        return self.fail_with if self.fail_with is not None and command in self.fail_on else None

    def _note_connection(self, server: SMTP) -> None:
        with self._condition:
            if server not in self._connections:
                self._connection_count += 1
                self._connections[server] = self._connection_count

    def _connection_number(self, server: SMTP) -> int:
        with self._condition:
            return self._connections.get(server, 0)

    def _record(self, received: Received) -> None:
        with self._condition:
            self.messages.append(received)
            self._condition.notify_all()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: object
    ) -> AuthResult:
        if self.auth is None or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = self.auth
        ok = auth_data.login == login.encode() and auth_data.password == password.encode()
        return AuthResult(success=ok, handled=False)

    def _ssl_context(self) -> ssl.SSLContext:
        self._tempdir = tempfile.TemporaryDirectory(prefix="smtp-sink-")
        cert_path, key_path = _self_signed_certificate(Path(self._tempdir.name))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        return context


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for localhost/127.0.0.1 (EC keys: generated in a millisecond)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A started plain SMTP sink (no TLS, no AUTH)."""
    with SmtpSink() as sink:
        yield sink
