"""An SMTP sink for the benchmarks, run as its own process: ``python -m bench.smtp_sink``.

It accepts every message and keeps only counts, so what the benchmark measures (the sending worker) never
shares a GIL with the server it sends to, and the sink spends as little CPU per message as aiosmtpd allows
(no parsing, no storage). It advertises PIPELINING, as Postfix and most MTAs do, so the client's envelope
costs one round trip.

On start it prints one JSON line to stdout: ``{"smtp_port": …, "control_port": …}``. Any HTTP GET to the
control port answers the statistics as JSON (messages, recipients, bytes, connections, the wall-clock
``time.time()`` of the first and last message, and the sink's own CPU seconds). The sink stops on SIGTERM or
SIGINT, and when its stdin reaches end of file, so it never outlives the benchmark that started it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import uvloop
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Stats:
    messages: int = 0
    recipients: int = 0
    bytes: int = 0
    connections: int = 0
    first_at: float | None = None
    last_at: float | None = None
    cpu_seconds: float = 0.0


class Handler:
    """aiosmtpd hooks: count, and accept everything."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        # With a 5-argument hook aiosmtpd leaves the session bookkeeping to us.
        session.host_name = hostname
        self.stats.connections += 1
        responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        stats = self.stats
        now = time.time()
        if stats.first_at is None:
            stats.first_at = now
        stats.last_at = now
        stats.messages += 1
        stats.recipients += len(envelope.rcpt_tos)
        stats.bytes += len(envelope.original_content or b"")
        return "250 2.0.0 Accepted"


async def _answer_stats(stats: Stats, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        stats.cpu_seconds = time.process_time()
        body = json.dumps(asdict(stats)).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def _until_stdin_closes() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def serve(host: str, watch_stdin: bool) -> None:
    stats = Stats()
    handler = Handler(stats)
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.bench", ident="tidings bench sink"), host, 0
    )
    control = await asyncio.start_server(lambda r, w: _answer_stats(stats, r, w), host, 0)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    ports = {
        "smtp_port": smtp.sockets[0].getsockname()[1],
        "control_port": control.sockets[0].getsockname()[1],
        "pid": os.getpid(),
    }
    sys.stdout.write(json.dumps(ports) + "\n")
    sys.stdout.flush()
    waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
    if watch_stdin:
        waiters.append(asyncio.ensure_future(_until_stdin_closes()))
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
    smtp.close()
    control.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.smtp_sink", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--no-stdin", action="store_true", help="do not stop when stdin closes (run it by hand)"
    )
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, watch_stdin=not args.no_stdin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
