"""B6 — messaging: rendering a personalised email, delivering queued email to an SMTP server, and the
transactional send request.

One realistic order-confirmation email is used throughout (``SUBJECT``, ``BODY``, ``LAYOUT``, the
``FOOTER`` snippet): a layout with a ``<style>`` block, a loop over the order's three items from the trigger
data, a few customer attributes, a snippet, three links and a ``date`` filter.

1. Render (in this process, no server): the message rendered for N distinct people through
   ``render_content`` (Liquid for every field, the layout, click tracking, the open pixel), against
   python-liquid's own ``Environment()`` rendering the same fields and layout in a bare loop (each template
   parsed once). Also Liquid alone (``LiquidTemplates.render`` of the body) against python-liquid rendering
   the body alone, which separates the Liquid engine's cost from tracking and layout, and the MIME build
   (``render_message``: CSS inlining, the text part, quoted-printable) per second.
2. Delivery: N deliveries queued through ``POST /v1/send/email`` on a ``tidings serve --no-worker`` (not
   timed), then ``tidings worker`` process(es) started with ``TIDINGS_SMTP_URL`` pointing at an SMTP sink
   running in its own process (``bench.smtp_sink``). Timed from the first message the sink accepts until
   the sink holds all N and every delivery is ``sent`` in the database: claim → prepare (render) → send →
   finish, end to end. The figure including the workers' start-up is reported too.
3. Send requests: ``POST /v1/send/email`` naming the message by trigger name, with varying identifiers,
   driven like B1 (same generator and connections) against the ``--no-worker`` server, alternating with
   runs of the no-op ``GET /healthz``.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import liquid as python_liquid
import orjson
import uvloop
from sqlalchemy import func, select

from bench.b1 import NOOP
from bench.load import JSON_CONTENT, LoadResult, RequestTemplate, Workload, basic_auth, machine_load, run_load
from bench.server import (
    TIDINGS,
    HelperProcess,
    RunningServer,
    start_server,
    stop_server,
    store_counts,
    throwaway_database,
)
from tidings.db import Database
from tidings.ids import new_delivery_id
from tidings.messaging.channels.base import Outgoing
from tidings.messaging.channels.email import message_id_domain, render_message
from tidings.messaging.render import render_content
from tidings.messaging.templates import liquid
from tidings.models import Delivery
from tidings.tracking.links import DeliveryLinks
from tidings.workspaces.schemas import NewWorkspace
from tidings.workspaces.service import create_workspace

Json = dict[str, Any]

# -- the message ------------------------------------------------------------------------------------------

TRIGGER_NAME = "order_confirmation"
PUBLIC_URL = "https://mail.example.com"
FROM = "Example Shop <shop@example.com>"
SUBJECT = "Your order #{{ trigger.order_id }} is confirmed, {{ customer.first_name }}"
PREHEADER = "{{ trigger.items.size }} items, {{ trigger.total | round: 2 }} {{ trigger.currency }}"
FOOTER = """<table role="presentation" width="100%" class="footer"><tr>
<td style="padding:24px;color:#71717a;font-size:12px;line-height:18px">
Example Shop GmbH &middot; Hauptstra&szlig;e 1 &middot; 10115 Berlin &middot; Germany<br>
You receive this email because you ordered from Example Shop. Questions? Just reply to this email.
</td></tr></table>"""
BODY = """<h1 style="font-size:22px;margin:0 0 16px">Thanks for your order, \
{{ customer.first_name | default: "there" }}!</h1>
<p>Order <strong>#{{ trigger.order_id }}</strong> was placed on {{ trigger.placed_at | date: "%B %d, %Y" }}
and will be shipped to {{ customer.city }} by {{ trigger.shipping_method }} delivery.</p>
<table role="presentation" width="100%" class="items">
  <tr><th align="left">Item</th><th align="right">Qty</th><th align="right">Price</th></tr>
  {% for item in trigger.items %}
  <tr>
    <td>{{ forloop.index }}. {{ item.name }} <span class="sku">{{ item.sku | upcase }}</span></td>
    <td align="right">{{ item.quantity }}</td>
    <td align="right">{{ item.price | times: item.quantity | round: 2 }} {{ trigger.currency }}</td>
  </tr>
  {% endfor %}
  <tr><td colspan="2"><strong>Total</strong></td>
  <td align="right"><strong>{{ trigger.total | round: 2 }} {{ trigger.currency }}</strong></td></tr>
</table>
{% if customer.plan == "pro" %}
<p>As a {{ customer.plan | capitalize }} member you get free express shipping on every order.</p>
{% else %}
<p>Upgrade to Pro for free express shipping on every order.</p>
{% endif %}
<p><a class="button" href="https://shop.example.com/orders/{{ trigger.order_id }}?utm_source=email&amp;\
utm_campaign=order_confirmation">Track your order</a></p>
<p><a href="https://shop.example.com/account?customer={{ customer.id }}">Your account</a> &middot;
<a href="https://help.example.com/returns">Returns and refunds</a></p>
{{ snippets.footer }}
"""
LAYOUT = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{{ message.subject }}</title>
<style>
body { margin:0; background:#f4f4f5; font-family:Helvetica,Arial,sans-serif; color:#18181b; }
.wrapper { max-width:600px; margin:0 auto; background:#ffffff; padding:32px; }
.button { display:inline-block; background:#0f766e; color:#ffffff; padding:12px 20px; border-radius:6px;
  text-decoration:none; }
table.items td, table.items th { padding:6px 8px; border-bottom:1px solid #e4e4e7; font-size:14px; }
.sku { color:#71717a; font-size:12px; }
</style></head>
<body><div class="wrapper">
<img src="https://shop.example.com/static/logo.png" alt="Example Shop" width="120" height="32">
{{ content }}
</div></body></html>
"""
# The message's own fields, as the transactional message stores them; the request adds ``to``.
CONTENT = {"from": FROM, "subject": SUBJECT, "preheader": PREHEADER, "body": BODY}
TEMPLATE_BYTES = len((BODY + LAYOUT + FOOTER).encode())
LINKS_PER_MESSAGE = 3

FIRST_NAMES = ("Ana", "Ben", "Chloé", "Dmitri", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kofi")
CITIES = ("Berlin", "Paris", "Lyon", "Porto", "London", "Tokyo", "San Diego", "Amsterdam")
PLANS = ("free", "pro")
PRODUCTS = (
    ("Linen shirt", 49.0),
    ("Canvas tote", 19.5),
    ("Wool socks", 12.9),
    ("Leather belt", 39.0),
    ("Cotton scarf", 24.0),
    ("Rain jacket", 129.0),
    ("Sun hat", 29.9),
)
PLACED_AT = 1_763_800_000


def person_id(prefix: str, index: int, streams: int) -> str:
    """The ``index``-th person of a pool, named as the load generators name their keys (``{prefix}-{stream}-
    {cycle}``, cycles from 1), so send requests from either generator reach people that exist."""
    return f"{prefix}-{index % streams}-{index // streams + 1}"


def customer_attributes(index: int, identifier: str) -> Json:
    return {
        "email": f"{identifier}@example.com",
        "first_name": FIRST_NAMES[index % len(FIRST_NAMES)],
        "last_name": f"Person{index}",
        "city": CITIES[(index // 3) % len(CITIES)],
        "plan": PLANS[index % 3 == 0],
        "created_at": PLACED_AT - 86_400 * (index % 700),
    }


def order_data(index: int) -> Json:
    items: list[Json] = []
    total = 0.0
    for n in range(3):
        name, price = PRODUCTS[(index + n * 3) % len(PRODUCTS)]
        quantity = 1 + (index + n) % 3
        total += price * quantity
        items.append(
            {"name": name, "sku": f"sku-{(index * 7 + n) % 9973:04d}", "quantity": quantity, "price": price}
        )
    return {
        "order_id": str(100_000 + index),
        "placed_at": PLACED_AT + index * 37,
        "currency": "EUR",
        "shipping_method": ("standard", "express")[index % 2],
        "items": items,
        "total": round(total, 2),
    }


def render_context(index: int, identifier: str, delivery_id: str) -> Json:
    """The Liquid context the sending worker builds for a transactional delivery (``load_context``)."""
    customer = customer_attributes(index, identifier)
    customer.update({"cio_id": f"cio{index:08x}", "unsubscribed": False, "id": identifier})
    return {
        "customer": customer,
        "trigger": order_data(index),
        "event": {},
        "journey": {},
        "objects": {},
        "snippets": {"footer": FOOTER},
        "delivery_id": delivery_id,
        "message": {"id": 1, "name": "Order confirmation", "type": "email"},
        "campaign": {},
        "layout": {"id": 1, "name": "Shop layout"},
    }


# -- 1. render --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderRun:
    """Renders (or MIME builds) per second over all the people, once each."""

    full: float  # render_content: every field, the layout, click tracking, open pixel
    bare_full: float  # python-liquid: the same fields and the layout
    body: float  # LiquidTemplates.render of the body alone
    bare_body: float  # python-liquid: the body alone
    mime: float  # render_message of the rendered content

    @property
    def ratio(self) -> float:
        return self.full / self.bare_full if self.bare_full else 0.0

    @property
    def body_ratio(self) -> float:
        return self.body / self.bare_body if self.bare_body else 0.0


@dataclass(frozen=True)
class B6Render:
    people: int
    runs: tuple[RenderRun, ...]
    html_bytes: int  # median size of the rendered, tracked HTML
    mime_bytes: int  # median size of the MIME message
    tracked_links: int  # click-tracked links in the first rendered message
    pixels: int  # open pixels in the first rendered message
    python_liquid: str
    load_average: str

    def _median(self, pick: Callable[[RenderRun], float]) -> float:
        return statistics.median(pick(run) for run in self.runs)

    @property
    def full(self) -> float:
        return self._median(lambda run: run.full)

    @property
    def bare_full(self) -> float:
        return self._median(lambda run: run.bare_full)

    @property
    def body(self) -> float:
        return self._median(lambda run: run.body)

    @property
    def bare_body(self) -> float:
        return self._median(lambda run: run.bare_body)

    @property
    def mime(self) -> float:
        return self._median(lambda run: run.mime)

    @property
    def ratio(self) -> float:
        return self._median(lambda run: run.ratio)

    @property
    def body_ratio(self) -> float:
        return self._median(lambda run: run.body_ratio)


@dataclass
class _Person:
    context: Json
    content: Json
    links: DeliveryLinks


def _people(count: int) -> list[_Person]:
    key = f"lnk_{secrets.token_hex(16)}"
    found = []
    for index in range(count):
        identifier = person_id("r", index, 1)
        delivery_id = new_delivery_id()
        found.append(
            _Person(
                render_context(index, identifier, delivery_id),
                {**CONTENT, "to": f"{identifier}@example.com"},
                DeliveryLinks(PUBLIC_URL, 1, delivery_id, key),
            )
        )
    return found


def _rate(count: int, loop: Callable[[], object]) -> float:
    started = time.perf_counter()
    loop()
    return count / (time.perf_counter() - started)


def run_b6_render(*, people: int, repeats: int, warmup: int = 200) -> B6Render:
    """Each repeat renders every person once per figure; medians of the repeats are reported."""
    load_at_start = machine_load()
    population = _people(people)
    env = python_liquid.Environment()
    bare = {name: env.from_string(source) for name, source in {**CONTENT, "to": "{{ to }}"}.items()}
    bare_layout = env.from_string(LAYOUT)

    def tidings_full(person: _Person) -> Json:
        return render_content(
            "email", person.content, person.context, person.links, options={}, layout=LAYOUT
        )

    def bare_full(person: _Person) -> str:
        context = person.context
        fields = {name: template.render(context, to=person.content["to"]) for name, template in bare.items()}
        context["message"]["subject"] = fields["subject"]
        return bare_layout.render(context, content=fields["body"])

    def tidings_body(person: _Person) -> str:
        return liquid.render(BODY, person.context, field="body", html=True, links=person.links)

    def bare_body(person: _Person) -> str:
        return bare["body"].render(person.context)

    domain = message_id_domain(PUBLIC_URL, FROM)

    def mime(person: _Person, rendered: Json) -> bytes:
        outgoing = Outgoing(person.links.delivery_id, 1, "email", rendered, public_url=PUBLIC_URL)
        return render_message(outgoing, domain=domain)

    # Warm-up: parse caches filled, first-call costs paid, before anything is timed.
    for person in population[:warmup]:
        bare_full(person)
        bare_body(person)
        tidings_body(person)
        mime(person, tidings_full(person))
    rendered = [tidings_full(person) for person in population]
    runs = []
    for _ in range(repeats):
        runs.append(
            RenderRun(
                bare_full=_rate(people, lambda: [bare_full(p) for p in population]),
                full=_rate(people, lambda: [tidings_full(p) for p in population]),
                bare_body=_rate(people, lambda: [bare_body(p) for p in population]),
                body=_rate(people, lambda: [tidings_body(p) for p in population]),
                mime=_rate(people, lambda: [mime(p, r) for p, r in zip(population, rendered, strict=True)]),
            )
        )
    first_html = str(rendered[0]["html"])
    return B6Render(
        people=people,
        runs=tuple(runs),
        html_bytes=int(statistics.median(len(str(r["html"]).encode()) for r in rendered)),
        mime_bytes=int(
            statistics.median(len(mime(p, r)) for p, r in zip(population[:100], rendered, strict=False))
        ),
        tracked_links=first_html.count(f'href="{PUBLIC_URL}/c/'),
        pixels=first_html.count(f'src="{PUBLIC_URL}/o/'),
        python_liquid=version("python-liquid"),
        load_average=load_at_start,
    )


# -- the SMTP sink and the server -------------------------------------------------------------------------


@dataclass(frozen=True)
class SinkStats:
    messages: int
    recipients: int
    bytes: int
    connections: int
    first_at: float | None
    last_at: float | None
    cpu_seconds: float


class SinkProcess(HelperProcess):
    """An SMTP sink in its own process (``python -m MODULE …``), which prints its SMTP and control ports
    as one JSON line and answers ``GET /`` on the control port with what it received."""

    def __init__(self, logdir: Path, module: Sequence[str], label: str) -> None:
        super().__init__(logdir, module, label, timeout=10.0)
        self.smtp_port = int(self.ports["smtp_port"])
        self.control_port = int(self.ports["control_port"])

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.smtp_port}"

    def control(self) -> Any:
        answer = self._client.get(f"http://127.0.0.1:{self.control_port}/")
        answer.raise_for_status()
        return answer.json()


class Sink(SinkProcess):
    """``bench.smtp_sink``: how many messages arrived, when, and the sink's CPU."""

    def __init__(self, logdir: Path) -> None:
        super().__init__(logdir, ["bench.smtp_sink"], "smtp-sink")

    def stats(self) -> SinkStats:
        return SinkStats(**self.control())


@contextmanager
def smtp_sink(logdir: Path) -> Iterator[Sink]:
    sink = Sink(logdir)
    try:
        yield sink
    finally:
        sink.stop()


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:]


def start_http_only(
    database_url: str, backend: str, logdir: Path, *, env: Mapping[str, str] | None = None
) -> RunningServer:
    """``tidings serve --no-worker`` on a migrated database: an in-process worker would send (or fail) the
    queued deliveries while they are being queued or while send requests are measured."""
    return start_server(database_url, backend, logdir, env=env, serve_args=("--no-worker",))


def _new_workspace(database_url: str) -> NewWorkspace:
    db = Database(database_url)
    try:
        return db.run(lambda s: create_workspace(s, f"b6-{secrets.token_hex(4)}", now=int(time.time())))
    finally:
        db.close()


def install_message(base_url: str, workspace: NewWorkspace) -> None:
    """The footer snippet, the layout and the transactional message, through the App API."""
    headers = {"Authorization": f"Bearer {workspace.app_api_key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30.0) as client:
        client.put("/v1/snippets", json={"name": "footer", "value": FOOTER}).raise_for_status()
        layout = client.post("/v1/layouts", json={"name": "Shop layout", "body": LAYOUT})
        layout.raise_for_status()
        message = {
            "name": "Order confirmation",
            "trigger_name": TRIGGER_NAME,
            "type": "email",
            "content": CONTENT,
            "layout_id": layout.json()["layout"]["id"],
        }
        client.post("/v1/transactional", json=message).raise_for_status()


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response: its status and body (Content-Length or chunked)."""
    status = int((await reader.readuntil(b"\r\n")).split(b" ", 2)[1])
    length, chunked = 0, False
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        return status, await reader.readexactly(length)
    body = b""
    while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16):
        body += (await reader.readexactly(size + 2))[:-2]
    await reader.readuntil(b"\r\n")
    return status, body


async def _post_all(
    base_url: str, path: str, bodies: Sequence[Json], *, concurrency: int, authorization: str
) -> None:
    """POST every body over ``concurrency`` keep-alive connections; every answer must be a 200.

    Raw HTTP/1.1 on asyncio streams rather than httpx: queueing 20,000 sends is not what is measured, and
    an HTTP client that needs as much CPU as the server would double the time it takes on two cores.
    """
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {authorization}\r\n"
        "Content-Type: application/json\r\n"
    ).encode()
    pending = iter(bodies)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for body in pending:
                payload = orjson.dumps(body)
                writer.write(head + b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
                status, answer = await _read_answer(reader)
                if status != 200:
                    raise RuntimeError(f"POST {path}: {status} {answer[:500].decode(errors='replace')}")
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coroutine)


def identify_people(
    base_url: str, workspace: NewWorkspace, identifiers: Sequence[str], *, concurrency: int = 4
) -> None:
    """Create the people with their attributes, 100 a request through ``/api/v2/batch``."""
    batches = []
    for start in range(0, len(identifiers), 100):
        items = [
            {
                "type": "person",
                "action": "identify",
                "identifiers": {"id": identifier},
                "attributes": customer_attributes(start + n, identifier),
            }
            for n, identifier in enumerate(identifiers[start : start + 100])
        ]
        batches.append({"batch": items})
    authorization = basic_auth(workspace.site_id, workspace.track_api_key)[1]
    _run(_post_all(base_url, "/api/v2/batch", batches, concurrency=concurrency, authorization=authorization))


def send_body(identifier: str, index: int) -> Json:
    return {
        "transactional_message_id": TRIGGER_NAME,
        "identifiers": {"id": identifier},
        "to": f"{identifier}@example.com",
        "message_data": order_data(index),
    }


def queue_sends(
    base_url: str, workspace: NewWorkspace, identifiers: Sequence[str], *, concurrency: int = 16
) -> None:
    """One transactional send per person."""
    bodies = [send_body(identifier, index) for index, identifier in enumerate(identifiers)]
    authorization = f"Bearer {workspace.app_api_key}"
    _run(_post_all(base_url, "/v1/send/email", bodies, concurrency=concurrency, authorization=authorization))


def delivery_states(database_url: str, workspace_id: int) -> dict[str, int]:
    db = Database(database_url)
    try:
        with db.read_session() as session:
            rows = session.execute(
                select(Delivery.state, func.count())
                .where(Delivery.workspace_id == workspace_id)
                .group_by(Delivery.state)
            )
            return {str(state): int(count) for state, count in rows}
    finally:
        db.close()


# -- 2. delivery to SMTP ----------------------------------------------------------------------------------

WORKER_POLL_SECONDS = 0.05
SINK_POLL_SECONDS = 0.05
STOP_TIMEOUT_SECONDS = 20.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (Linux /proc), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    # utime and stime are the 14th and 15th fields; the split starts at the 3rd.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class DeliveryRun:
    workers: int
    deliveries: int
    batch_size: int
    # Seconds spent queueing the deliveries through the API (not part of the figure).
    queue_seconds: float
    received: int  # messages the sink accepted
    sent: int  # deliveries of this run in state `sent`
    # Any other state the run's deliveries ended in (failed, queued, …): should be empty.
    other_states: Mapping[str, int]
    # First message accepted by the sink → the sink holds all and every delivery is `sent`.
    steady_seconds: float
    # Spawning the workers → the same end.
    total_seconds: float
    # CPU of the worker processes and of the sink while they handled the last ``cpu_messages`` messages
    # (from the first poll that saw a message arrive, so the workers' start-up is not counted).
    worker_cpu_seconds: float
    sink_cpu_seconds: float
    cpu_messages: int
    load_average: str

    @property
    def messages_per_second(self) -> float:
        return self.deliveries / self.steady_seconds if self.steady_seconds > 0 else 0.0

    @property
    def messages_per_second_with_start(self) -> float:
        return self.deliveries / self.total_seconds if self.total_seconds > 0 else 0.0

    @property
    def all_sent(self) -> bool:
        return self.received == self.deliveries and self.sent == self.deliveries and not self.other_states

    @property
    def worker_cpu_ms_per_message(self) -> float:
        return self.worker_cpu_seconds * 1000 / self.cpu_messages if self.cpu_messages else 0.0

    @property
    def sink_cpu_ms_per_message(self) -> float:
        return self.sink_cpu_seconds * 1000 / self.cpu_messages if self.cpu_messages else 0.0


def start_workers(
    count: int, database_url: str, smtp_url: str, logdir: Path, *, batch_size: int | None = None
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    environment = {
        **os.environ,
        "TIDINGS_DATABASE_URL": database_url,
        "TIDINGS_SMTP_URL": smtp_url,
        "TIDINGS_PUBLIC_URL": PUBLIC_URL,
        "TIDINGS_WORKER_POLL_SECONDS": str(WORKER_POLL_SECONDS),
    }
    if batch_size is not None:
        environment["TIDINGS_SEND_BATCH_SIZE"] = str(batch_size)
    started = []
    for n in range(count):
        log_path = logdir.resolve() / f"worker-{secrets.token_hex(3)}-{n}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(TIDINGS), "worker"], env=environment, stdout=log, stderr=subprocess.STDOUT, cwd=logdir
            )
        started.append((process, log_path))
    return started


def stop_processes(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def deliver(
    server: RunningServer,
    workspace: NewWorkspace,
    identifiers: Sequence[str],
    logdir: Path,
    *,
    workers: int,
    batch_size: int | None = None,
    timeout: float | None = None,
    on_started: Callable[[Sequence[int]], None] | None = None,
) -> DeliveryRun:
    """Queue one delivery per person, then let ``workers`` worker processes send them all to a fresh sink.

    ``on_started`` gets the worker pids as soon as they are spawned (to attach a profiler).
    """
    before = delivery_states(server.database_url, workspace.workspace_id)
    started_queueing = time.perf_counter()
    queue_sends(server.base_url, workspace, identifiers)
    queue_seconds = time.perf_counter() - started_queueing
    expected = len(identifiers)
    deadline = time.monotonic() + (timeout if timeout is not None else 120.0 + expected / 20)
    load_at_start = machine_load()
    with smtp_sink(logdir) as sink:
        spawned = time.time()
        running = start_workers(workers, server.database_url, sink.url, logdir, batch_size=batch_size)
        processes = [process for process, _ in running]

        def worker_cpu() -> float:
            return sum(_cpu_seconds(process.pid) for process in processes)

        try:
            if on_started is not None:
                on_started([process.pid for process in processes])
            stats = sink.stats()
            # (messages, worker CPU, sink CPU) when the first message was seen.
            first_seen: tuple[int, float, float] | None = None
            while stats.messages < expected and time.monotonic() < deadline:
                for process, log_path in running:
                    if process.poll() is not None:
                        raise RuntimeError(f"a worker exited early:\n{_tail(log_path)}")
                time.sleep(SINK_POLL_SECONDS)
                stats = sink.stats()
                if first_seen is None and stats.messages:
                    first_seen = (stats.messages, worker_cpu(), stats.cpu_seconds)
            states = delivery_states(server.database_url, workspace.workspace_id)
            while states.get("sent", 0) - before.get("sent", 0) < expected and time.monotonic() < deadline:
                time.sleep(SINK_POLL_SECONDS)
                states = delivery_states(server.database_url, workspace.workspace_id)
            done_at = time.time()
            cpu_at_end = worker_cpu()
            stats = sink.stats()
        finally:
            stop_processes(processes)
    changed = {
        state: count - before.get(state, 0)
        for state, count in states.items()
        if count != before.get(state, 0)
    }
    sent = changed.pop("sent", 0)
    finished_at = max(done_at, stats.last_at or done_at)
    messages0, worker_cpu0, sink_cpu0 = first_seen or (0, 0.0, 0.0)
    return DeliveryRun(
        workers=workers,
        deliveries=expected,
        batch_size=batch_size or 0,
        queue_seconds=queue_seconds,
        received=stats.messages,
        sent=sent,
        other_states=changed,
        steady_seconds=finished_at - (stats.first_at or done_at),
        total_seconds=finished_at - spawned,
        worker_cpu_seconds=cpu_at_end - worker_cpu0,
        sink_cpu_seconds=stats.cpu_seconds - sink_cpu0,
        cpu_messages=stats.messages - messages0,
        load_average=load_at_start,
    )


# -- 3. send requests -------------------------------------------------------------------------------------


def send_workload(workspace: NewWorkspace) -> Workload:
    """A send to the person named by the generator's key: an existing person while the pool lasts."""
    body = send_body("{id}", 0)
    return Workload(
        name="send-email",
        templates=(RequestTemplate("POST", "/v1/send/email", orjson.dumps(body).decode()),),
        headers=(("Authorization", f"Bearer {workspace.app_api_key}"), JSON_CONTENT),
    )


@dataclass(frozen=True)
class SendRun:
    noop: LoadResult
    send: LoadResult
    # Deliveries written during the run, and people created because the pool ran out.
    committed: int
    people_created: int

    @property
    def ratio(self) -> float:
        return self.send.ok_per_second / self.noop.ok_per_second if self.noop.ok_per_second else 0.0

    @property
    def all_committed(self) -> bool:
        """Every 200 is a committed delivery; more can only come from requests cut off unanswered."""
        return self.send.ok <= self.committed <= self.send.sent


@dataclass(frozen=True)
class B6Send:
    generator: str
    connections: int
    seconds: float
    runs: tuple[SendRun, ...]

    @property
    def send_rps(self) -> float:
        return statistics.median(run.send.ok_per_second for run in self.runs)

    @property
    def noop_rps(self) -> float:
        return statistics.median(run.noop.ok_per_second for run in self.runs)

    @property
    def ratio(self) -> float:
        return statistics.median(run.ratio for run in self.runs)

    @property
    def p50_ms(self) -> float:
        return statistics.median(run.send.p50_ms for run in self.runs)

    @property
    def p99_ms(self) -> float:
        return statistics.median(run.send.p99_ms for run in self.runs)

    @property
    def noop_p99_ms(self) -> float:
        return statistics.median(run.noop.p99_ms for run in self.runs)

    @property
    def failed(self) -> int:
        return sum(run.send.failed for run in self.runs)

    @property
    def all_committed(self) -> bool:
        return all(run.all_committed for run in self.runs)

    @property
    def existing_share(self) -> float:
        """Share of acknowledged sends that went to a person who already existed."""
        sends = sum(run.send.ok for run in self.runs)
        created = sum(run.people_created for run in self.runs)
        return 1 - created / sends if sends else 0.0


def measure_sends(
    server: RunningServer,
    workspace: NewWorkspace,
    prefix: str,
    *,
    generator: str,
    connections: int,
    seconds: float,
    repeats: int,
    max_requests: int,
    warmup_seconds: float,
) -> B6Send:
    """Alternate no-op and send runs, like B1. Every run uses the people pool's ``prefix``, so the keys
    the generator makes name people identified beforehand."""

    def load(workload: Workload, duration: float) -> LoadResult:
        return run_load(
            generator,
            server.base_url,
            workload,
            connections=connections,
            seconds=duration,
            max_requests=max_requests,
            prefix=prefix,
        )

    def counts() -> tuple[int, int]:
        people = store_counts(server.database_url, workspace.workspace_id).people
        return sum(delivery_states(server.database_url, workspace.workspace_id).values()), people

    workload = send_workload(workspace)
    if warmup_seconds > 0:
        load(NOOP, warmup_seconds)
        load(workload, warmup_seconds)
    runs = []
    for _ in range(repeats):
        noop = load(NOOP, seconds)
        deliveries_before, people_before = counts()
        send = load(workload, seconds)
        deliveries_after, people_after = counts()
        runs.append(SendRun(noop, send, deliveries_after - deliveries_before, people_after - people_before))
    return B6Send(generator, connections, seconds, tuple(runs))


# -- one backend ------------------------------------------------------------------------------------------

# Send requests a second the people pool is sized for; faster runs send to new people past the pool's end
# (the send creates them), which the result reports.
POOL_RATE = 2_500


@dataclass(frozen=True)
class B6Backend:
    backend: str
    people: int
    identify_seconds: float
    deliveries: tuple[DeliveryRun, ...]
    send: B6Send | None
    load_average: str

    @property
    def all_sent(self) -> bool:
        return all(run.all_sent for run in self.deliveries)

    def best(self) -> DeliveryRun | None:
        return max(self.deliveries, key=lambda run: run.messages_per_second, default=None)


def pool_streams(generator: str, connections: int) -> int:
    """How many key streams the generator has: wrk numbers its threads, the Python generator its
    connections (see ``bench.load``)."""
    return min(2, connections) if generator == "wrk" else connections


def run_b6_backend(
    backend: str,
    workdir: Path,
    *,
    deliveries: int,
    workers: Sequence[int] = (1, 2),
    batch_size: int | None = None,
    generator: str,
    connections: int = 32,
    seconds: float = 10.0,
    repeats: int = 3,
    max_requests: int = 10_000_000,
    warmup_seconds: float = 2.0,
    send_requests: bool = True,
    progress: Callable[[str], None] = print,
) -> B6Backend:
    """Delivery runs (one per worker count, each with ``deliveries`` fresh deliveries), then the send
    request runs, on one ``--no-worker`` server and database."""
    load_at_start = machine_load()
    streams = pool_streams(generator, connections)
    per_stream = math.ceil(deliveries / streams)
    if send_requests:
        # wrk runs for its duration whatever the request count; the Python generator stops at max_requests.
        expected_sends = math.ceil(seconds * POOL_RATE)
        if generator != "wrk":
            expected_sends = min(max_requests, expected_sends)
        per_stream = max(per_stream, math.ceil(expected_sends / streams) + 1)
    prefix = f"b6{secrets.token_hex(2)}"
    identifiers = [person_id(prefix, index, streams) for index in range(per_stream * streams)]
    with throwaway_database(backend, workdir) as url:
        server = start_http_only(url, backend, workdir)
        try:
            workspace = _new_workspace(url)
            install_message(server.base_url, workspace)
            progress(f"  identifying {len(identifiers):,} people …")
            started = time.perf_counter()
            identify_people(server.base_url, workspace, identifiers)
            identify_seconds = time.perf_counter() - started
            runs = []
            for count in workers:
                progress(f"  {deliveries:,} deliveries, {count} worker(s) …")
                run = deliver(
                    server, workspace, identifiers[:deliveries], workdir, workers=count, batch_size=batch_size
                )
                progress(
                    f"    {run.messages_per_second:,.0f} msg/s (queued in {run.queue_seconds:.1f} s; "
                    f"{run.received:,} received, {run.sent:,} sent)"
                )
                runs.append(run)
            send = None
            if send_requests:
                progress("  send requests …")
                send = measure_sends(
                    server,
                    workspace,
                    prefix,
                    generator=generator,
                    connections=connections,
                    seconds=seconds,
                    repeats=repeats,
                    max_requests=max_requests,
                    warmup_seconds=warmup_seconds,
                )
                progress(f"    {send.send_rps:,.0f} req/s, ratio {send.ratio:.3f}")
        finally:
            stop_server(server)
    return B6Backend(
        backend=backend,
        people=len(identifiers),
        identify_seconds=identify_seconds,
        deliveries=tuple(runs),
        send=send,
        load_average=load_at_start,
    )


@dataclass(frozen=True)
class B6Result:
    render: B6Render | None
    backends: tuple[B6Backend, ...] = field(default=())

    @property
    def correct(self) -> bool:
        sends = [backend.send for backend in self.backends if backend.send is not None]
        return all(backend.all_sent for backend in self.backends) and all(s.all_committed for s in sends)
