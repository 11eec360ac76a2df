"""The email channel against real SMTP servers (aiosmtpd): what arrives, how failures map, how connections
are reused. Messages are parsed on the receiving side with the standard library, as a mail client would."""

from __future__ import annotations

import base64
import dataclasses
import gc
import logging
import socket
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from tests.messaging.smtp_sink import SmtpSink, smtp_sink
from tidings.errors import Forbidden, InvalidInput, PayloadTooLarge
from tidings.messaging.channels.base import Outgoing, SendError
from tidings.messaging.channels.email import (
    MAX_ATTACHMENTS_BYTES,
    EmailChannel,
    build_message,
    html_to_text,
    message_id_domain,
    parse_recipients,
    parse_smtp_url,
    render_message,
    validate_attachments,
    validate_headers,
    validate_recipients,
)
from tidings.messaging.settings import EmailSettings

# Re-exported so the imported fixture counts as used (pytest finds it by parameter name).
__all__ = ["smtp_sink"]

HTML = (
    "<html><head><title>Ignored</title><style>p{color:red} @media (max-width:600px){p{color:blue}}</style>"
    "</head><body><h1>Welcome, Ana</h1><p>Read <a href='https://example.com/guide'>the guide</a>.<br>"
    "Then reply.</p><script>alert(1)</script></body></html>"
)


@pytest.fixture
def channel() -> Iterator[EmailChannel]:
    with EmailChannel(None) as email_channel:
        yield email_channel


def outgoing(url: str | None = None, delivery_id: str = "dlv01", **content: Any) -> Outgoing:
    content.setdefault("from", "Tidings <news@example.com>")
    content.setdefault("to", "ana@example.org")
    content.setdefault("subject", "Hello")
    content.setdefault("html", HTML)
    return Outgoing(
        delivery_id=delivery_id,
        workspace_id=1,
        channel="email",
        content=content,
        settings=EmailSettings(smtp_url=url, tls_verify=False, timeout_seconds=10),
        public_url="https://tidings.example.net",
    )


def parts(message: EmailMessage) -> dict[str, EmailMessage]:
    return {part.get_content_type(): part for part in message.walk() if not part.is_multipart()}


def assert_no_defects(message: EmailMessage) -> None:
    assert [part.defects for part in message.walk()] == [[] for _ in message.walk()]


# --- what arrives


def test_html_message_arrives_whole(smtp_sink: SmtpSink, channel: EmailChannel) -> None:
    sent = channel.send(
        outgoing(
            smtp_sink.url,
            to='"Doe, Ana" <ana@example.org>, bo@example.org',
            cc="cy@example.org",
            reply_to="Support <help@example.com>",
            preheader="Your guide inside",
            headers={"X-Campaign": "welcome", "X-Trace": "t" * 300},
            list_unsubscribe_url="https://tidings.example.net/unsubscribe/dlv01?s=" + "x" * 120,
            list_unsubscribe_mailto="unsubscribe@example.com?subject=dlv01",
        )
    )
    [received] = smtp_sink.wait_for(1)
    message = received.message
    assert_no_defects(message)
    assert received.mail_from == "news@example.com"
    assert received.rcpt_tos == ["ana@example.org", "bo@example.org", "cy@example.org"]
    assert sent.provider_message_id == "<dlv01@tidings.example.net>"
    assert sent.recipient == '"Doe, Ana" <ana@example.org>, bo@example.org'

    assert message["From"] == "Tidings <news@example.com>"
    assert message["To"].addresses[0].display_name == "Doe, Ana"
    assert message["Cc"] == "cy@example.org"
    assert message["Reply-To"] == "Support <help@example.com>"
    assert message["Subject"] == "Hello"
    assert message["Message-ID"] == "<dlv01@tidings.example.net>"
    assert message["X-CIO-Delivery-Id"] == "dlv01"
    assert message["Date"].datetime is not None
    assert message["X-Campaign"] == "welcome"
    assert message["X-Trace"] == "t" * 300
    assert message["List-Unsubscribe"] == (
        "<https://tidings.example.net/unsubscribe/dlv01?s=" + "x" * 120 + ">, "
        "<mailto:unsubscribe@example.com?subject=dlv01>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Bcc" not in message

    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    body = parts(message)
    assert body["text/plain"].get_content() == (
        "Welcome, Ana\n\nRead the guide (https://example.com/guide).\nThen reply.\n"
    )
    html = body["text/html"].get_content()
    assert '<p style="color: red;">Read' in html  # inlined from the <style> rule
    assert "@media (max-width:600px){p{color:blue}}" in html  # media queries cannot be inlined: kept
    assert "p{color:red}" not in html
    # The preheader opens the body, hidden.
    after_body = html.split("<body>", 1)[1]
    assert after_body.startswith('<div style="display:none;')
    assert "Your guide inside</div><h1>" in after_body


def test_css_left_alone_when_preprocessing_disabled(smtp_sink: SmtpSink, channel: EmailChannel) -> None:
    html = "<html><head><style>p{color:red}</style></head><body><p>Hi</p></body></html>"
    channel.send(outgoing(smtp_sink.url, html=html, disable_css_preprocessing=True))
    [received] = smtp_sink.wait_for(1)
    assert parts(received.message)["text/html"].get_content().rstrip("\n") == html


def test_given_text_and_amp_parts(smtp_sink: SmtpSink, channel: EmailChannel) -> None:
    amp = "<!doctype html><html ⚡4email><body>AMP</body></html>"
    channel.send(outgoing(smtp_sink.url, text="Plain version", amp=amp))
    [received] = smtp_sink.wait_for(1)
    # AMP sits before HTML: clients render the last alternative they support.
    assert [p.get_content_type() for p in received.message.iter_parts()] == [
        "text/plain",
        "text/x-amp-html",
        "text/html",
    ]
    body = parts(received.message)
    assert body["text/plain"].get_content() == "Plain version\n"
    assert body["text/x-amp-html"].get_content() == amp + "\n"


def test_text_only_message_is_a_single_part(smtp_sink: SmtpSink, channel: EmailChannel) -> None:
    channel.send(outgoing(smtp_sink.url, html=None, text="Just text\n.leading dot\n..two\n.\n"))
    [received] = smtp_sink.wait_for(1)
    assert received.message.get_content_type() == "text/plain"
    # Lines starting with a dot survive SMTP's dot-stuffing, including a lone dot.
    assert received.message.get_content() == "Just text\n.leading dot\n..two\n.\n"


def test_attachments_arrive_decoded(smtp_sink: SmtpSink, channel: EmailChannel) -> None:
    pdf = b"%PDF-1.4 " + bytes(range(256)) * 40
    notes = "Grüße\n".encode()
    channel.send(
        outgoing(
            smtp_sink.url,
            attachments={
                "report.pdf": base64.b64encode(pdf).decode(),
                "notizen für dich.txt": base64.encodebytes(notes).decode(),  # MIME-style line breaks
            },
        )
    )
    [received] = smtp_sink.wait_for(1)
    message = received.message
    assert_no_defects(message)
    assert message.get_content_type() == "multipart/mixed"
    alternative, *attached = message.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    # Attachments are opaque bytes (no charset is claimed for text files): compare what decodes.
    assert [(a.get_filename(), a.get_content_type(), a.get_payload(decode=True)) for a in attached] == [
        ("report.pdf", "application/pdf", pdf),
        ("notizen für dich.txt", "text/plain", notes),
    ]
    assert all(a.get_content_disposition() == "attachment" for a in attached)


def test_non_ascii_subject_and_names_round_trip(smtp_sink: SmtpSink, channel: EmailChannel) -> None:
    subject = "Grüße aus Köln ✓ — " + "ein sehr langer Betreff " * 4
    channel.send(
        outgoing(
            smtp_sink.url,
            subject=subject,
            to="Zoë Çelik <zoe@exämple.org>",
            headers={"X-Note": "naïve"},
        )
    )
    [received] = smtp_sink.wait_for(1)
    message = received.message
    assert message["Subject"] == subject
    assert message["To"].addresses[0].display_name == "Zoë Çelik"
    assert message["To"].addresses[0].addr_spec == "zoe@xn--exmple-cua.org"
    assert received.rcpt_tos == ["zoe@xn--exmple-cua.org"]
    assert message["X-Note"] == "naïve"
    assert received.raw.isascii()  # RFC 2047 words and quoted-printable: no server needs 8BITMIME
    assert max(len(line) for line in received.raw.split(b"\r\n")) <= 78


def test_bcc_receives_without_a_header(smtp_sink: SmtpSink, channel: EmailChannel) -> None:
    channel.send(outgoing(smtp_sink.url, bcc="Audit <audit@example.com>"))
    [received] = smtp_sink.wait_for(1)
    assert received.rcpt_tos == ["ana@example.org", "audit@example.com"]
    assert "Bcc" not in received.message
    assert b"audit@example.com" not in received.raw


def test_fake_bcc_sends_labelled_copies(smtp_sink: SmtpSink, channel: EmailChannel) -> None:
    sent = channel.send(
        outgoing(
            smtp_sink.url,
            to="Ana <ana@example.org>",
            cc="cy@example.org",
            bcc="audit@example.com, legal@example.com",
            fake_bcc=True,
        )
    )
    main, first, second = smtp_sink.wait_for(3)
    assert main.rcpt_tos == ["ana@example.org", "cy@example.org"]
    assert main.message["Subject"] == "Hello"
    assert sent.provider_message_id == "<dlv01@tidings.example.net>"
    for n, (copy, address) in enumerate(((first, "audit@example.com"), (second, "legal@example.com")), 1):
        assert copy.rcpt_tos == [address]
        assert copy.message["To"] == address
        assert "Cc" not in copy.message
        assert copy.message["Subject"] == "[Copy of message to ana@example.org, cy@example.org] Hello"
        assert copy.message["Message-ID"] == f"<dlv01.copy{n}@tidings.example.net>"
        assert copy.message["X-CIO-Delivery-Id"] == "dlv01"
        assert (
            parts(copy.message)["text/html"].get_content() == parts(main.message)["text/html"].get_content()
        )


def test_workspace_url_overrides_the_server_default(smtp_sink: SmtpSink) -> None:
    with EmailChannel("smtp://127.0.0.1:9") as email_channel:
        email_channel.send(outgoing(smtp_sink.url))
    assert len(smtp_sink.wait_for(1)) == 1


def test_server_default_used_without_workspace_url(smtp_sink: SmtpSink) -> None:
    with EmailChannel(smtp_sink.url) as email_channel:
        email_channel.send(outgoing(None))
    assert len(smtp_sink.wait_for(1)) == 1


# --- TLS and AUTH


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_tls_with_auth(tls: str, channel: EmailChannel) -> None:
    with SmtpSink(tls="starttls" if tls == "starttls" else "implicit", auth=("mailer", "p@ss:w/rd")) as sink:
        assert sink.url.startswith("smtps://" if tls == "implicit" else "smtp://")
        channel.send(outgoing(sink.url))
        [received] = sink.wait_for(1)
    assert received.tls
    assert received.authenticated


def test_auth_over_plain_connection(channel: EmailChannel) -> None:
    with SmtpSink(auth=("mailer", "secret")) as sink:
        channel.send(outgoing(sink.url))
        [received] = sink.wait_for(1)
    assert received.authenticated
    assert not received.tls


def test_wrong_password_is_not_transient(channel: EmailChannel) -> None:
    with SmtpSink(tls="starttls", auth=("mailer", "secret")) as sink:
        url = sink.url.replace("secret", "wrong")
        with pytest.raises(SendError) as caught:
            channel.send(outgoing(url))
        assert sink.messages == []
    assert not caught.value.transient
    assert not caught.value.undeliverable
    assert caught.value.status == 535
    assert "authentication failed: 535" in caught.value.message
    assert "wrong" not in caught.value.message  # credentials never appear in errors


def test_missing_credentials_are_refused(channel: EmailChannel) -> None:
    with SmtpSink(auth=("mailer", "secret")) as sink:
        url = sink.url.replace("mailer:secret@", "")
        with pytest.raises(SendError) as caught:
            channel.send(outgoing(url))
    assert not caught.value.transient
    assert caught.value.status == 530


def test_self_signed_certificate_rejected_when_verifying(channel: EmailChannel) -> None:
    with SmtpSink(tls="implicit") as sink:
        verifying = dataclasses.replace(outgoing(sink.url), settings=EmailSettings(smtp_url=sink.url))
        with pytest.raises(SendError) as caught:
            channel.send(verifying)
    assert not caught.value.transient
    assert "certificate verification failed" in caught.value.message


def test_starttls_required_but_not_offered(smtp_sink: SmtpSink, channel: EmailChannel) -> None:
    with pytest.raises(SendError) as caught:
        channel.send(outgoing(smtp_sink.url + "?starttls=require"))
    assert not caught.value.transient
    assert "STARTTLS" in caught.value.message
    assert smtp_sink.messages == []


def test_starttls_off_never_upgrades() -> None:
    # The sink insists on STARTTLS, so a client that never upgrades is refused in turn (530, not transient).
    with (
        SmtpSink(tls="starttls") as sink,
        EmailChannel(None) as email_channel,
        pytest.raises(SendError) as caught,
    ):
        email_channel.send(outgoing(sink.url.replace("starttls=require", "starttls=off")))
    assert caught.value.status == 530


# --- failures


def test_temporary_failure_is_transient(smtp_sink: SmtpSink, channel: EmailChannel) -> None:
    smtp_sink.fail_with = (451, "4.3.0 Try again later")
    with pytest.raises(SendError) as caught:
        channel.send(outgoing(smtp_sink.url))
    assert caught.value.transient
    assert caught.value.status == 451
    assert "451 4.3.0 Try again later" in caught.value.message
    # The session survived the refusal: the next send reuses it.
    smtp_sink.fail_with = None
    channel.send(outgoing(smtp_sink.url))
    assert len(smtp_sink.wait_for(1)) == 1
    assert smtp_sink.connections == 1


def test_recipient_refused_is_undeliverable(smtp_sink: SmtpSink, channel: EmailChannel) -> None:
    smtp_sink.fail_with = (550, "5.1.1 No such user")
    with pytest.raises(SendError) as caught:
        channel.send(outgoing(smtp_sink.url))
    assert not caught.value.transient
    assert caught.value.undeliverable
    assert caught.value.status == 550
    assert "ana@example.org: 550 5.1.1 No such user" in caught.value.message


@pytest.mark.parametrize(("code", "transient"), [(554, False), (452, True)])
def test_data_refusal(code: int, transient: bool, smtp_sink: SmtpSink, channel: EmailChannel) -> None:
    smtp_sink.fail_with = (code, "Message refused")
    smtp_sink.fail_on = frozenset({"DATA"})
    with pytest.raises(SendError) as caught:
        channel.send(outgoing(smtp_sink.url))
    assert caught.value.transient is transient
    assert not caught.value.undeliverable
    assert caught.value.status == code


@pytest.mark.parametrize("pipelining", [False, True])
def test_partial_refusal_still_sends(
    pipelining: bool, channel: EmailChannel, caplog: pytest.LogCaptureFixture
) -> None:
    with SmtpSink(pipelining=pipelining) as sink:
        sink.refuse["gone@example.org"] = (550, "5.1.1 No such user")
        with caplog.at_level(logging.WARNING, logger="tidings.messaging.channels.email"):
            sent = channel.send(outgoing(sink.url, to="ana@example.org, gone@example.org"))
        [received] = sink.wait_for(1)
    assert received.rcpt_tos == ["ana@example.org"]
    assert sent.provider_message_id == "<dlv01@tidings.example.net>"
    assert "gone@example.org: 550 5.1.1 No such user" in caplog.text


def test_all_refused_with_pipelining(channel: EmailChannel) -> None:
    with SmtpSink(pipelining=True) as sink:
        sink.fail_with = (550, "5.1.1 No such user")
        sink.fail_on = frozenset({"RCPT"})
        with pytest.raises(SendError) as caught:
            channel.send(outgoing(sink.url))
        assert caught.value.undeliverable
        # The pipelined DATA was closed off and the session reset: the connection keeps working.
        sink.fail_with = None
        channel.send(outgoing(sink.url))
        assert len(sink.wait_for(1)) == 1
        assert sink.connections == 1


def test_server_down_is_transient(channel: EmailChannel) -> None:
    # A bound socket that does not listen: connections to it are refused, and no other test can take it.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        with pytest.raises(SendError) as caught:
            channel.send(outgoing(f"smtp://127.0.0.1:{port}"))
    assert caught.value.transient
    assert "cannot reach smtp://127.0.0.1" in caught.value.message


def test_no_smtp_url_is_not_transient(channel: EmailChannel) -> None:
    with pytest.raises(SendError) as caught:
        channel.send(outgoing(None))
    assert not caught.value.transient
    assert "TIDINGS_SMTP_URL" in caught.value.message


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://mail.example.com", "unsupported scheme"),
        ("smtp://", "no host"),
        ("smtp://mail.example.com?starttls=maybe", "starttls must be"),
        ("smtps://mail.example.com?starttls=require", "smtp:// only"),
        ("smtp://mail.example.com?tls=1", "unknown SMTP URL parameter"),
    ],
)
def test_bad_smtp_url_is_not_transient(url: str, problem: str, channel: EmailChannel) -> None:
    with pytest.raises(SendError) as caught:
        channel.send(outgoing(url))
    assert not caught.value.transient
    assert problem in caught.value.message


def test_unbuildable_message_is_not_transient(smtp_sink: SmtpSink, channel: EmailChannel) -> None:
    with pytest.raises(SendError) as caught:
        channel.send(outgoing(smtp_sink.url, to="not an address"))
    assert not caught.value.transient
    assert "not an email address" in caught.value.message


def test_build_talks_to_no_server_until_its_send_is_called(channel: EmailChannel) -> None:
    """The sending worker builds on its own thread and sends on others: building must not connect, and
    a message that cannot be built is refused at build time."""
    with SmtpSink() as sink:
        send = channel.build(outgoing(sink.url, delivery_id="dlvb1"))
        assert sink.connections == 0
        assert sink.messages == []
        with pytest.raises(SendError) as caught:
            channel.build(outgoing(sink.url, to="not an address"))
        assert not caught.value.transient
        assert "cannot build the email" in caught.value.message
        sent = send()
        (received,) = sink.wait_for(1)
    assert sent.provider_message_id == "<dlvb1@tidings.example.net>"
    assert received.message["Message-ID"] == sent.provider_message_id


# --- connection reuse


@pytest.mark.parametrize("pipelining", [False, True])
def test_one_connection_for_many_messages(pipelining: bool, channel: EmailChannel) -> None:
    with SmtpSink(pipelining=pipelining) as sink:
        for n in range(50):
            channel.send(outgoing(sink.url, delivery_id=f"dlv{n}", to=f"p{n}@example.org"))
        received = sink.wait_for(50)
        assert sink.connections == 1
    assert [r.message["Message-ID"] for r in received] == [f"<dlv{n}@tidings.example.net>" for n in range(50)]
    assert {r.connection for r in received} == {1}


def test_reconnects_when_the_server_dropped_the_connection(
    smtp_sink: SmtpSink, channel: EmailChannel
) -> None:
    channel.send(outgoing(smtp_sink.url))
    smtp_sink.drop_connections()
    # The pooled connection is dead; MAIL fails before anything was accepted, so the send retries once.
    channel.send(outgoing(smtp_sink.url, delivery_id="dlv02"))
    first, second = smtp_sink.wait_for(2)
    assert (first.connection, second.connection) == (1, 2)


def test_idle_connection_is_checked_before_use(smtp_sink: SmtpSink) -> None:
    with EmailChannel(None, probe_after_idle=0) as email_channel:
        email_channel.send(outgoing(smtp_sink.url))
        email_channel.send(outgoing(smtp_sink.url, delivery_id="dlv02"))  # RSET probe passes: same session
        smtp_sink.drop_connections()
        email_channel.send(outgoing(smtp_sink.url, delivery_id="dlv03"))  # RSET probe fails: new session
    assert [r.connection for r in smtp_sink.wait_for(3)] == [1, 1, 2]


def test_each_thread_has_its_own_connection(smtp_sink: SmtpSink, channel: EmailChannel) -> None:
    errors: list[BaseException] = []

    def send_some(thread: int) -> None:
        try:
            for n in range(10):
                channel.send(outgoing(smtp_sink.url, delivery_id=f"t{thread}n{n}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send_some, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(smtp_sink.wait_for(40)) == 40
    assert smtp_sink.connections == 4


def test_connections_close_when_their_thread_ends(smtp_sink: SmtpSink, channel: EmailChannel) -> None:
    thread = threading.Thread(target=lambda: channel.send(outgoing(smtp_sink.url)))
    thread.start()
    thread.join()
    smtp_sink.wait_for(1)
    gc.collect()
    assert channel._pool._all == set()


def test_close_ends_pooled_connections(smtp_sink: SmtpSink, channel: EmailChannel) -> None:
    channel.send(outgoing(smtp_sink.url))
    channel.close()
    channel.send(outgoing(smtp_sink.url, delivery_id="dlv02"))
    assert [r.connection for r in smtp_sink.wait_for(2)] == [1, 2]


# --- building without sending


def test_line_breaks_in_subject_cannot_add_headers() -> None:
    message = build_message(outgoing(subject="Hi\r\nBcc: spy@example.com"), domain="example.com")
    assert message["Subject"] == "Hi Bcc: spy@example.com"
    assert "Bcc" not in message


def test_build_message_refuses_reserved_headers() -> None:
    for name in ("From", "message-id", "Content-Type", "List-Unsubscribe-Post", "Reply-To", "Bcc"):
        with pytest.raises(ValueError, match=f"header {name} is set by Tidings"):
            build_message(outgoing(headers={name: "x"}), domain="example.com")


def test_build_message_without_html_has_empty_text() -> None:
    message = build_message(outgoing(html=None), domain="example.com")
    assert message.get_content_type() == "text/plain"
    assert message["Message-ID"] == "<dlv01@example.com>"


def test_render_message_is_crlf_ascii() -> None:
    data = render_message(outgoing(subject="Ça va?"), domain="example.com")
    assert data.isascii()
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_unsubscribe_without_url_has_no_one_click() -> None:
    message = build_message(outgoing(list_unsubscribe_mailto="u@example.com"), domain="example.com")
    assert message["List-Unsubscribe"] == "<mailto:u@example.com>"
    assert "List-Unsubscribe-Post" not in message


def test_message_id_domain() -> None:
    assert (
        message_id_domain("https://mail.tidings.example.net:8443", "a@example.com")
        == "mail.tidings.example.net"
    )
    # Loopback and IP hosts make poor Message-ID domains: the sender's domain is used instead.
    assert message_id_domain("http://127.0.0.1:8080", "News <news@Example.COM>") == "example.com"
    assert message_id_domain("http://localhost:8080", "news@example.com") == "example.com"
    assert message_id_domain(None, None) == "localhost"


def test_html_to_text() -> None:
    html = (
        "<head><style>p{}</style><title>T</title></head><body>"
        "<p>One  \n two</p><p>Three&amp;four<br/>five</p>"
        "<ul><li>a</li><li>b</li></ul><ol><li>x</li><li>y</li></ol>"
        '<p><a href="https://e.com/x">link</a> <a href="https://e.com/y">https://e.com/y</a> '
        '<a href="mailto:m@e.com">m@e.com</a> <a href="#top">top</a> '
        '<a href="https://e.com/logo"><img alt="Logo" src="l.png"></a></p>'
        "<table><tr><td>A</td><td>B</td></tr><tr><td>C</td><td>D</td></tr></table>"
        "<pre>  keep\n  this</pre><script>var x = '<p>';</script><!-- comment --></body>"
    )
    assert html_to_text(html) == (
        "One two\n\nThree&four\nfive\n\n- a\n- b\n1. x\n2. y\n\n"
        "link (https://e.com/x) https://e.com/y m@e.com top Logo (https://e.com/logo)\n\n"
        "A B\nC D\n\n  keep\n  this\n"
    )
    # Every kind of whitespace collapses to one space: tabs, newlines, no-break and em spaces.
    assert html_to_text("<p> one\u00a0\u00a0two\tthree \n four\u2003five </p><p>six seven</p>") == (
        "one two three four five\n\nsix seven\n"
    )


# --- validators


def test_parse_smtp_url() -> None:
    target = parse_smtp_url("smtps://us%40er:p%3Ass%2Fw@Mail.Example.com")
    assert (target.scheme, target.host, target.port) == ("smtps", "mail.example.com", 465)
    assert (target.username, target.password) == ("us@er", "p:ss/w")
    assert target.where == "smtps://mail.example.com:465"
    plain = parse_smtp_url("smtp://mail.example.com?starttls=off&helo=out.example.com")
    assert (plain.port, plain.starttls, plain.helo, plain.username) == (25, "off", "out.example.com", None)
    assert parse_smtp_url("smtp://[::1]:2525").host == "::1"


def test_validate_attachments() -> None:
    validate_attachments({"a.pdf": base64.b64encode(b"x").decode()})
    validate_attachments(None)
    with pytest.raises(InvalidInput):
        validate_attachments(["a.pdf"])
    with pytest.raises(InvalidInput, match="not valid base64"):
        validate_attachments({"a.pdf": "not base64!"})
    with pytest.raises(InvalidInput, match="path"):
        validate_attachments({"../a.pdf": ""})
    for name in ("run.exe", "RUN.BAT", "script.js", "tool.jar", "evil.exe.", "setup.msi", "x.ps1"):
        with pytest.raises(Forbidden) as forbidden:
            validate_attachments({name: ""})
        assert forbidden.value.status_code == 403
    big = base64.b64encode(b"\0" * (MAX_ATTACHMENTS_BYTES // 2)).decode()
    with pytest.raises(PayloadTooLarge) as too_large:
        validate_attachments({"a.bin": big, "b.bin": big})
    assert too_large.value.status_code == 413
    validate_attachments(
        {"a.bin": big, "b.bin": base64.b64encode(b"\0" * (MAX_ATTACHMENTS_BYTES // 2 - 1)).decode()}
    )


def test_validate_headers() -> None:
    validate_headers({"X-Campaign": "spring", "X-Mailer-Tag": "naïve"})
    validate_headers(None)
    for bad in (
        {"X Space": "v"},
        {"X:Colon": "v"},
        {"X-Ünicode": "v"},
        {"X-A": "a\r\nBcc: x@e.com"},
        {"X-A": 1},
    ):
        with pytest.raises(InvalidInput):
            validate_headers(bad)
    with pytest.raises(InvalidInput, match="header Message-ID is set by Tidings"):
        validate_headers({"Message-ID": "<x@y>"})
    with pytest.raises(InvalidInput):
        validate_headers("X-A: b")


def test_parse_recipients() -> None:
    assert parse_recipients('"Doe, Ana" <ana@example.org>, bo@Example.ORG , <cy@example.org>') == [
        "ana@example.org",
        "bo@example.org",
        "cy@example.org",
    ]
    assert parse_recipients("") == []
    for bad in ("ana", "ana@", "@example.org", "a b@example.org", "ana@example..org", "Ana <ana@example.org"):
        with pytest.raises(InvalidInput):
            parse_recipients(bad)


def test_validate_recipients() -> None:
    assert validate_recipients("a@example.org", "b@example.org", "c@example.org") == [
        "a@example.org",
        "b@example.org",
        "c@example.org",
    ]
    with pytest.raises(InvalidInput, match="at least one"):
        validate_recipients("", "b@example.org")
    many = ", ".join(f"p{n}@example.org" for n in range(10))
    with pytest.raises(InvalidInput, match="too many recipients: 20"):
        validate_recipients(many, None, many)
