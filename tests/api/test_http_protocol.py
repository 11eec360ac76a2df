"""``tidings serve`` gathers each connection's writes and sends them when the event loop's turn ends
(tidings.api.http_protocol). These drive a real server over raw sockets where a client library would
hide what is on the wire: pipelined requests, bodies past the gathering limit, and closing connections."""

from __future__ import annotations

import base64
import json
import socket
from urllib.parse import urlsplit

from tests.harness import Api

Response = tuple[int, dict[str, str], bytes]


def _connect(api: Api) -> socket.socket:
    url = urlsplit(api.server.base_url)
    return socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=10)


def _read_responses(sock: socket.socket, count: int) -> tuple[list[Response], bytes]:
    """``count`` HTTP/1.1 responses with Content-Length bodies, in order, and any bytes after them."""
    data = b""
    answers: list[Response] = []
    while len(answers) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            status_line, *lines = data[:head_end].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
            length = int(headers["content-length"])
            if len(data) >= head_end + 4 + length:
                body = data[head_end + 4 : head_end + 4 + length]
                answers.append((int(status_line.split()[1]), headers, body))
                data = data[head_end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {len(answers)} of {count} responses"
        data += chunk
    return answers, data


def _basic(api: Api) -> str:
    token = base64.b64encode(f"{api.creds.site_id}:{api.creds.track_api_key}".encode()).decode()
    return f"Basic {token}"


def test_pipelined_requests_are_answered_in_order_each_whole(api: Api) -> None:
    body = json.dumps({"plan": "pipelined"}).encode()
    requests = (
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
        + (
            f"PUT /api/v1/customers/pipe-1 HTTP/1.1\r\nHost: t\r\nAuthorization: {_basic(api)}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        + b"GET /no/such/route HTTP/1.1\r\nHost: t\r\n\r\n"
        + b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    with _connect(api) as sock:
        sock.sendall(requests)  # one write: the server parses all four from one read
        answers, rest = _read_responses(sock, 4)
    assert [status for status, _, _ in answers] == [200, 200, 404, 200]
    assert json.loads(answers[0][2]) == {"status": "ok"}
    assert answers[1][2] == b"{}\n"
    assert answers[3][2] == answers[0][2]
    assert rest == b"", "nothing follows the last response"
    assert api.attributes("pipe-1").json()["customer"]["attributes"]["plan"] == "pipelined"


def test_a_body_larger_than_the_gathering_limit_arrives_whole(api: Api) -> None:
    with _connect(api) as sock:
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        answers, _ = _read_responses(sock, 2)
    (status, headers, document), healthz = answers
    assert status == 200
    assert len(document) > 64 * 1024, "the document is past FLUSH_AT, so it is written before the turn ends"
    assert "/api/v1/customers/{identifier}" in json.loads(document)["paths"]
    assert healthz[0] == 200
    assert json.loads(healthz[2]) == {"status": "ok"}
    assert headers["content-type"].startswith("application/json")


def test_a_connection_the_client_closes_gets_its_whole_response_first(api: Api) -> None:
    with _connect(api) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        answers, rest = _read_responses(sock, 1)
        status, headers, body = answers[0]
        tail = rest
        while chunk := sock.recv(65536):
            tail += chunk
    assert status == 200
    assert json.loads(body) == {"status": "ok"}
    assert headers.get("connection") == "close"
    assert tail == b"", "the server closed the connection after the response"
