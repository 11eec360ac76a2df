"""Stand-in model providers: one local HTTP server that speaks Anthropic's Messages API, OpenAI's chat
completions API and the Gemini API closely enough for the official SDKs to talk to it.

Tests and the benchmark point ``tidings.ai.providers`` at it instead of the real services::

    with StandIn() as llm:
        llm.script(Fail(429, "slow down", retry_after=2), Reply({"subject": "Hi"}))
        ...  # a model whose base_url is llm.anthropic_base_url / llm.openai_base_url / llm.google_base_url
        assert llm.requests[0].system_text == "..."

Every request is recorded (provider, path, headers, parsed body). What the "model" answers is, in order:
the next scripted step (``llm.script``), else ``llm.answer(request)`` when set, else an object that
satisfies the JSON schema the request asked for — or, for a tool-calling request (tools offered, no
schema), the final answer ``Say("ok")``. ``CallTools`` makes the model call tools, in each provider's
wire format; ``Recorded.tools``, ``Recorded.tool_results`` and ``Recorded.model_turns`` tell what a
request offered, fed back and replayed of the model's earlier turns.
``llm.delay`` is added before every answer. ``llm.peak_in_flight`` and ``llm.peak_for(provider)`` tell
how many requests were being served at once.

The server is Starlette on uvicorn, on its own event loop in a background thread, so a thousand slow
requests at once cost a thousand coroutines, not a thousand threads.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tidings.ai.catalogue import ModelSpec

Provider = Literal["anthropic", "openai", "google"]


# --- Scripted behaviours -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """The model outputs this JSON object."""

    data: dict[str, Any]


@dataclass(frozen=True)
class RawText:
    """The model outputs this text verbatim (for malformed or non-JSON output)."""

    text: str


@dataclass(frozen=True)
class Fail:
    """The provider answers with an HTTP error in its own error envelope."""

    status: int
    message: str = "stand-in failure"
    retry_after: float | None = None


@dataclass(frozen=True)
class Hang:
    """Wait this long before answering (normally), so a client with a shorter timeout gives up."""

    seconds: float


@dataclass(frozen=True)
class Refuse:
    """The model declines: Anthropic ``stop_reason: "refusal"``, OpenAI ``message.refusal``, Gemini
    ``finishReason: "SAFETY"`` (or, with ``prompt=True``, ``promptFeedback.blockReason: "SAFETY"``)."""

    message: str = "I can't help with that."
    prompt: bool = False


@dataclass(frozen=True)
class Say:
    """The model answers in plain text and stops (no tool calls): Anthropic ``end_turn``, OpenAI
    ``finish_reason: "stop"``, Gemini ``STOP``."""

    text: str


@dataclass(frozen=True)
class CallTools:
    """The model calls these tools, (name, arguments) each, optionally saying ``text`` first: Anthropic
    ``tool_use`` blocks with ``stop_reason: "tool_use"``, OpenAI ``message.tool_calls`` with
    ``finish_reason: "tool_calls"``, Gemini ``functionCall`` parts (the first carrying a
    ``thoughtSignature``, as Gemini 3 does, which a client must send back)."""

    calls: list[tuple[str, dict[str, Any]]]
    text: str | None = None


Step = Reply | RawText | Fail | Hang | Refuse | Say | CallTools

# The thought signature the stand-in's Gemini attaches to its first function call (base64 on the wire).
GOOGLE_SIGNATURE = base64.b64encode(b"stand-in thought signature").decode("ascii")


# --- Recorded requests ---------------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    """Text from a message content in any of the three formats: a string, or a list of blocks/parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(block.get("text", "")) for block in content if isinstance(block, dict) and "text" in block
        )
    return ""


def _response_text(response: Any) -> str:
    """A Gemini function response as text: its ``output`` or ``error`` when it has just that, else all."""
    if isinstance(response, dict) and len(response) == 1 and ("output" in response or "error" in response):
        response = next(iter(response.values()))
    return response if isinstance(response, str) else json.dumps(response)


@dataclass(frozen=True)
class Recorded:
    """One request as the stand-in received it. ``headers`` keys are lower-case."""

    provider: Provider
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: dict[str, Any]

    @property
    def model(self) -> str:
        if self.provider == "google":
            # .../models/{model}:generateContent
            return self.path.rsplit("/", 1)[-1].split(":", 1)[0]
        return str(self.body.get("model", ""))

    @property
    def api_key(self) -> str | None:
        """The key the client sent: Anthropic's ``x-api-key`` (the anthropic SDK 2.x sends the key as a
        Bearer token instead, which the API also accepts), OpenAI's Bearer token, Gemini's
        ``x-goog-api-key`` header or ``key`` query parameter."""
        auth = self.headers.get("authorization", "")
        bearer = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        if self.provider == "anthropic":
            return self.headers.get("x-api-key") or bearer
        if self.provider == "openai":
            return bearer
        return self.headers.get("x-goog-api-key") or self.query.get("key")

    @property
    def system_text(self) -> str:
        body = self.body
        if self.provider == "anthropic":
            return _text_of(body.get("system", ""))
        if self.provider == "openai":
            return "\n".join(
                _text_of(m.get("content"))
                for m in body.get("messages", [])
                if m.get("role") in ("system", "developer")
            )
        instruction = body.get("systemInstruction") or {}
        return _text_of(instruction.get("parts", []))

    @property
    def prompt_text(self) -> str:
        """The user turns' text, one per line (turns holding only tool results have none and are left out)."""
        body = self.body
        if self.provider == "google":
            contents = body.get("contents", [])
            texts = [_text_of(c.get("parts", [])) for c in contents if c.get("role", "user") == "user"]
        else:
            texts = [_text_of(m.get("content")) for m in body.get("messages", []) if m.get("role") == "user"]
        return "\n".join(text for text in texts if text)

    @property
    def schema(self) -> dict[str, Any] | None:
        """The JSON schema the request asked the output to follow, from wherever this provider puts it."""
        found: Any
        body = self.body
        if self.provider == "anthropic":
            found = ((body.get("output_config") or {}).get("format") or {}).get("schema")
        elif self.provider == "openai":
            found = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
        else:
            config = body.get("generationConfig") or {}
            found = config.get("responseJsonSchema") or config.get("responseSchema")
        return found if isinstance(found, dict) else None

    @property
    def tools(self) -> list[str]:
        """The names of the tools the request offered the model, from wherever this provider puts them."""
        names: list[str] = []
        for tool in self.body.get("tools") or []:
            if not isinstance(tool, dict):
                continue
            if self.provider == "anthropic":
                names.append(str(tool.get("name")))
            elif self.provider == "openai":
                names.append(str((tool.get("function") or {}).get("name")))
            else:
                declarations = tool.get("functionDeclarations") or tool.get("function_declarations") or []
                names.extend(str(d.get("name")) for d in declarations if isinstance(d, dict))
        return names

    @property
    def tool_results(self) -> list[tuple[str, str]]:
        """The tool results the request's conversation fed back to the model, as (key, content text):
        the key is Anthropic's ``tool_use_id``, OpenAI's ``tool_call_id`` or Gemini's function name; a
        Gemini ``functionResponse``'s content is its ``output`` (or ``error``) as JSON text (a string
        as is)."""
        found: list[tuple[str, str]] = []
        if self.provider == "anthropic":
            for message in self.body.get("messages") or []:
                content = message.get("content") if isinstance(message, dict) else None
                for block in content if isinstance(content, list) else []:
                    if isinstance(block, dict) and block.get("type") == "tool_result":
                        found.append((str(block.get("tool_use_id")), _text_of(block.get("content"))))
        elif self.provider == "openai":
            for message in self.body.get("messages") or []:
                if isinstance(message, dict) and message.get("role") == "tool":
                    found.append((str(message.get("tool_call_id")), _text_of(message.get("content"))))
        else:
            for content in self.body.get("contents") or []:
                for part in (content.get("parts") or []) if isinstance(content, dict) else []:
                    response = part.get("functionResponse") if isinstance(part, dict) else None
                    if isinstance(response, dict):
                        found.append((str(response.get("name")), _response_text(response.get("response"))))
        return found

    @property
    def model_turns(self) -> list[tuple[str, list[str]]]:
        """The model's own earlier turns the request's conversation replays, as (text, names of the tools
        the turn called): Anthropic ``assistant`` messages, OpenAI ``assistant`` messages, Gemini
        ``model`` contents."""
        turns: list[tuple[str, list[str]]] = []
        if self.provider == "google":
            for content in self.body.get("contents") or []:
                if isinstance(content, dict) and content.get("role") == "model":
                    parts = [p for p in content.get("parts") or [] if isinstance(p, dict)]
                    calls = [str(p["functionCall"].get("name")) for p in parts if "functionCall" in p]
                    turns.append((_text_of(parts), calls))
            return turns
        for message in self.body.get("messages") or []:
            if not isinstance(message, dict) or message.get("role") != "assistant":
                continue
            if self.provider == "anthropic":
                blocks = message.get("content")
                blocks = blocks if isinstance(blocks, list) else []
                calls = [
                    str(b.get("name")) for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"
                ]
            else:
                calls = [str((c.get("function") or {}).get("name")) for c in message.get("tool_calls") or []]
            turns.append((_text_of(message.get("content")), calls))
        return turns

    @property
    def max_output_tokens(self) -> int | None:
        if self.provider == "google":
            value = (self.body.get("generationConfig") or {}).get("maxOutputTokens")
        else:
            value = self.body.get("max_tokens", self.body.get("max_completion_tokens"))
        return value if isinstance(value, int) else None

    @property
    def safety_settings(self) -> dict[str, str]:
        """Gemini ``safetySettings`` as category -> threshold (empty for other providers or when absent)."""
        settings = self.body.get("safetySettings") or []
        return {str(s.get("category")): str(s.get("threshold")) for s in settings if isinstance(s, dict)}


# --- Answers -------------------------------------------------------------------------------------------


def count_tokens(text: str) -> int:
    """The stand-in's token count: about four characters a token, at least one."""
    return max(1, math.ceil(len(text) / 4))


def sample(schema: dict[str, Any]) -> Any:
    """A value satisfying ``schema``: the first enum option, "text", 1, true, [] (or enough items for
    ``minItems``), and every property of an object. Accepts Gemini's upper-case OpenAPI type names."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return sample(schema[key][0])
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    kind = str(kind).lower()
    if kind == "object":
        return {name: sample(sub) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        items = schema.get("items") or {}
        return [sample(items) for _ in range(int(schema.get("minItems", 0)))]
    if kind in ("integer", "number"):
        return max(1, int(schema.get("minimum", 1)))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "text" * max(1, math.ceil(int(schema.get("minLength", 0)) / 4))


_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def error_response(provider: Provider, fail: Fail) -> Response:
    """``fail`` in ``provider``'s documented error envelope."""
    status, message = fail.status, fail.message
    headers = {"retry-after": _seconds(fail.retry_after)} if fail.retry_after is not None else {}
    body: dict[str, Any]
    if provider == "anthropic":
        request_id = f"req_{uuid.uuid4().hex[:24]}"
        headers["request-id"] = request_id
        kind = _ANTHROPIC_ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
        body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
    elif provider == "openai":
        kind, code = _OPENAI_ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None)
        )
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    else:
        grpc = _GOOGLE_STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        error: dict[str, Any] = {"code": status, "message": message, "status": grpc}
        if fail.retry_after is not None:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{_seconds(fail.retry_after)}s",
                }
            ]
        body = {"error": error}
    return JSONResponse(body, status_code=status, headers=headers)


def _usage_counts(request: Recorded, text: str) -> tuple[int, int]:
    return count_tokens(f"{request.system_text}\n{request.prompt_text}"), count_tokens(text)


def answer_response(request: Recorded, text: str | None, refusal: Refuse | None = None) -> Response:
    """``text`` (the model's output) or ``refusal`` in ``request.provider``'s success format."""
    output = text or ""
    input_tokens, output_tokens = _usage_counts(request, output)
    if refusal is not None:
        output_tokens = 0
    if request.provider == "anthropic":
        return JSONResponse(
            {
                "id": f"msg_{uuid.uuid4().hex[:24]}",
                "type": "message",
                "role": "assistant",
                "model": request.model,
                "content": [] if refusal else [{"type": "text", "text": output}],
                "stop_reason": "refusal" if refusal else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            }
        )
    if request.provider == "openai":
        message = {"role": "assistant", "content": None if refusal else output, "refusal": None}
        if refusal:
            message["refusal"] = refusal.message
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request.model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": input_tokens,
                    "completion_tokens": output_tokens,
                    "total_tokens": input_tokens + output_tokens,
                },
            }
        )
    usage = {
        "promptTokenCount": input_tokens,
        "candidatesTokenCount": output_tokens,
        "totalTokenCount": input_tokens + output_tokens,
    }
    body: dict[str, Any] = {
        "usageMetadata": usage,
        "modelVersion": request.model,
        "responseId": uuid.uuid4().hex,
    }
    if refusal and refusal.prompt:
        usage.pop("candidatesTokenCount")
        body["promptFeedback"] = {
            "blockReason": "SAFETY",
            "safetyRatings": [
                {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True}
            ],
        }
    elif refusal:
        body["candidates"] = [
            {
                "finishReason": "SAFETY",
                "index": 0,
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True},
                    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
                ],
            }
        ]
    else:
        body["candidates"] = [
            {"content": {"role": "model", "parts": [{"text": output}]}, "finishReason": "STOP", "index": 0}
        ]
    return JSONResponse(body)


def tool_calls_response(request: Recorded, step: CallTools) -> Response:
    """``step``'s tool calls in ``request.provider``'s success format."""
    spoken = step.text or ""
    input_tokens, output_tokens = _usage_counts(request, spoken + json.dumps(step.calls))
    if request.provider == "anthropic":
        content: list[dict[str, Any]] = [{"type": "text", "text": spoken}] if spoken else []
        content += [
            {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": name, "input": arguments}
            for name, arguments in step.calls
        ]
        return JSONResponse(
            {
                "id": f"msg_{uuid.uuid4().hex[:24]}",
                "type": "message",
                "role": "assistant",
                "model": request.model,
                "content": content,
                "stop_reason": "tool_use",
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            }
        )
    if request.provider == "openai":
        message = {
            "role": "assistant",
            "content": step.text,
            "refusal": None,
            "tool_calls": [
                {
                    "id": f"call_{uuid.uuid4().hex[:24]}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(arguments)},
                }
                for name, arguments in step.calls
            ],
        }
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request.model,
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
                ],
                "usage": {
                    "prompt_tokens": input_tokens,
                    "completion_tokens": output_tokens,
                    "total_tokens": input_tokens + output_tokens,
                },
            }
        )
    parts: list[dict[str, Any]] = [{"text": spoken}] if spoken else []
    for index, (name, arguments) in enumerate(step.calls):
        part: dict[str, Any] = {"functionCall": {"name": name, "args": arguments}}
        # Gemini 3 signs the first function call of a turn (parallel calls after it carry none).
        if index == 0:
            part["thoughtSignature"] = GOOGLE_SIGNATURE
        parts.append(part)
    return JSONResponse(
        {
            "candidates": [
                {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": {
                "promptTokenCount": input_tokens,
                "candidatesTokenCount": output_tokens,
                "totalTokenCount": input_tokens + output_tokens,
            },
            "modelVersion": request.model,
            "responseId": uuid.uuid4().hex,
        }
    )


# --- The server ----------------------------------------------------------------------------------------


AnswerFunction = Callable[[Recorded], dict[str, Any]]


@dataclass
class _Counters:
    # Requests still running from before a clear() (a Hang whose client gave up) belong to an older epoch
    # and are not counted, so each test sees only its own traffic.
    epoch: int = 0
    in_flight: int = 0
    peak: int = 0
    served: int = 0
    provider_in_flight: dict[str, int] = field(default_factory=dict)
    provider_peak: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        self.epoch += 1
        self.in_flight = self.peak = self.served = 0
        self.provider_in_flight.clear()
        self.provider_peak.clear()

    def enter(self, provider: str) -> int:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            now = self.provider_in_flight[provider] = self.provider_in_flight.get(provider, 0) + 1
            self.provider_peak[provider] = max(self.provider_peak.get(provider, 0), now)
            return self.epoch

    def leave(self, provider: str, epoch: int) -> None:
        with self.lock:
            if self.epoch == epoch:
                self.in_flight -= 1
                self.provider_in_flight[provider] -= 1
                self.served += 1


class StandIn:
    """A stand-in for all three providers on ``127.0.0.1`` (a free port), running while the ``with``
    block lasts.

    ``api_key``: when set, requests must carry exactly this key (else 401 in the provider's format);
    when unset, any key is accepted but one must be present, as the real services require.
    """

    def __init__(self, *, api_key: str | None = None, delay: float = 0.0) -> None:
        self.api_key = api_key
        self.delay = delay
        self.answer: AnswerFunction | None = None
        self._steps: deque[Step] = deque()
        self._requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._counters = _Counters()
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self.port = 0

    # -- URLs

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def google_base_url(self) -> str:
        return self.url

    # -- What tests read and program

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        """Forget recorded requests, pending scripted steps and the in-flight peak."""
        with self._lock:
            self._requests.clear()
            self._steps.clear()
        with self._counters.lock:
            self._counters.reset()

    def script(self, *steps: Step) -> None:
        """Queue one-off behaviours, consumed one per request in arrival order."""
        with self._lock:
            self._steps.extend(steps)

    @property
    def pending(self) -> int:
        """Scripted steps not yet consumed."""
        with self._lock:
            return len(self._steps)

    @property
    def peak_in_flight(self) -> int:
        """The most requests the stand-in was handling at once (since start or ``clear()``)."""
        with self._counters.lock:
            return self._counters.peak

    def peak_for(self, provider: Provider) -> int:
        """The most requests to ``provider``'s API the stand-in was handling at once."""
        with self._counters.lock:
            return self._counters.provider_peak.get(provider, 0)

    @property
    def in_flight(self) -> int:
        with self._counters.lock:
            return self._counters.in_flight

    @property
    def served(self) -> int:
        """Requests answered (successfully or not) since start or ``clear()``."""
        with self._counters.lock:
            return self._counters.served

    # -- Lifecycle

    def start(self) -> StandIn:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(4096)
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(),
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            backlog=4096,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="standin-llm", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the stand-in provider server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = None

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            assert self._server is not None
            assert self._socket is not None
            await self._server.serve(sockets=[self._socket])

        asyncio.run(serve())

    # -- HTTP

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/messages", self._anthropic, methods=["POST"]),
                Route("/v1/chat/completions", self._openai, methods=["POST"]),
                # The SDK picks the API version (v1 by default in google-genai 3.x; v1beta in older ones
                # and in Google's REST docs), so serve any.
                Route("/{version}/models/{action}", self._google, methods=["POST"]),
            ]
        )

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake when the server stops so a hanging request cannot hold up shutdown."""
        if seconds <= 0:
            return
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _record(self, provider: Provider, request: Request) -> Recorded | Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        recorded = Recorded(
            provider=provider,
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            query=dict(request.query_params),
            body=body if isinstance(body, dict) else {},
        )
        with self._lock:
            self._requests.append(recorded)
        if not isinstance(body, dict):
            return error_response(provider, Fail(400, "the request body is not a JSON object"))
        return recorded

    def _refuse_auth(self, request: Recorded) -> Response | None:
        key = request.api_key
        if not key or (self.api_key is not None and key != self.api_key):
            return error_response(
                request.provider, Fail(401, "invalid x-api-key" if key else "missing API key")
            )
        if request.provider == "anthropic" and "anthropic-version" not in request.headers:
            return error_response("anthropic", Fail(400, "anthropic-version: header is required"))
        return None

    async def _handle(self, provider: Provider, request: Request) -> Response:
        epoch = self._counters.enter(provider)
        try:
            return await self._respond(provider, request)
        finally:
            self._counters.leave(provider, epoch)

    async def _respond(self, provider: Provider, http: Request) -> Response:
        recorded = await self._record(provider, http)
        if isinstance(recorded, Response):
            return recorded
        refused = self._refuse_auth(recorded)
        if refused is not None:
            return refused
        with self._lock:
            step = self._steps.popleft() if self._steps else None
        await self._sleep(self.delay)
        if isinstance(step, Hang):
            await self._sleep(step.seconds)
            step = None
        if isinstance(step, Fail):
            return error_response(provider, step)
        if isinstance(step, Refuse):
            return answer_response(recorded, None, step)
        if isinstance(step, RawText | Say):
            return answer_response(recorded, step.text)
        if isinstance(step, CallTools):
            return tool_calls_response(recorded, step)
        if isinstance(step, Reply):
            data = step.data
        elif self.answer is not None:
            data = self.answer(recorded)
        else:
            schema = recorded.schema
            if schema is None and recorded.tools:
                # A tool-calling turn wants prose, not an object: the model simply finishes.
                return answer_response(recorded, "ok")
            data = sample(schema) if schema else {"text": "text"}
        return answer_response(recorded, json.dumps(data))

    async def _anthropic(self, request: Request) -> Response:
        return await self._handle("anthropic", request)

    async def _openai(self, request: Request) -> Response:
        return await self._handle("openai", request)

    async def _google(self, request: Request) -> Response:
        action = request.path_params["action"]
        if not action.endswith(":generateContent"):
            return error_response("google", Fail(404, f"method {action.rsplit(':', 1)[-1]} is not served"))
        return await self._handle("google", request)


def model_for(llm: StandIn, provider: Provider, **changes: Any) -> ModelSpec:
    """A catalogue entry for ``provider`` pointing at the stand-in ``llm`` (fields overridable)."""
    base_url = {
        "anthropic": llm.anthropic_base_url,
        "openai": llm.openai_base_url,
        "google": llm.google_base_url,
    }[provider]
    fields: dict[str, Any] = {
        "id": f"test-{provider}",
        "provider": provider,
        "model": f"{provider}-model-1",
        "model_class": "quick",
        "credits": 1.0,
        "api_key": "test-key",
        "base_url": base_url,
        "timeout": 5.0,
        "max_output_tokens": 321,
    }
    return ModelSpec(**(fields | changes))
