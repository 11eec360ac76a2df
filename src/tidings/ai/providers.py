"""The model-provider layer: one structured-output call to a catalogue model, through its provider's SDK.

``generate(model, request)`` sends a system text, a user prompt and a JSON schema to the model, and returns
the JSON object it produced (with token counts). Each provider is reached through its official async SDK
and its own structured-output mechanism:

* ``anthropic``: the Messages API with ``output_config.format`` (type ``json_schema``);
* ``openai`` (OpenAI itself, or any server speaking its chat completions API: vLLM, Ollama…):
  ``response_format`` of type ``json_schema``, strict;
* ``google``: ``generateContent`` with ``responseMimeType: application/json`` and ``responseJsonSchema``,
  plus the request's safety settings, which only Gemini accepts.

``converse(model, system, messages, tools)`` is the other kind of call: one turn of a tool-calling
conversation. It maps a provider-neutral conversation (``Message``) and tool list (``ToolSpec``) to each
provider's own tool mechanism (Anthropic ``tool_use``/``tool_result`` blocks, OpenAI ``tool_calls`` and
``tool`` messages, Gemini ``functionCall``/``functionResponse`` parts) and returns the model's ``Turn``: its
text and the tools it wants called. Running the tools, and looping, is the caller's business.

Whatever goes wrong surfaces as one ``ProviderError`` whose ``kind`` the caller acts on (retry later, give
up, tell the user), and whose ``answered`` says whether the provider produced an answer — and so whether
the call costs credits. The SDKs' own retries are off: the caller retries, and counts the attempts.

Calls to one provider are bounded by ``concurrency_limit`` (``TIDINGS_AI_CONCURRENCY`` per provider per
event loop), so a burst of work queues here instead of tripping the provider's rate limits or exhausting
connections. SDK clients are cached per event loop, because their connection pools belong to the loop that
opened them; ``aclose_clients()`` closes the running loop's clients when it is done with them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import importlib
import json
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from tidings.ai.catalogue import ModelSpec
from tidings.config import get_settings

# The SDKs are imported where first used: together they take seconds to import, which every process that
# merely imports this module (the CLI, the API server) would otherwise pay.
if TYPE_CHECKING:
    import anthropic
    import openai
    from google import genai
    from google.genai import errors as genai_errors
    from google.genai import types as genai_types
    from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

ErrorKind = Literal[
    "rate_limited",
    "timeout",
    "unavailable",
    "refused",
    "invalid_output",
    "bad_request",
    "auth",
    "not_configured",
]


@dataclass(frozen=True)
class Generation:
    """One structured-output request: instructions, the user's prompt, and the shape of the answer."""

    system: str
    prompt: str
    # {"type": "object", "properties": {...}, "required": [...], "additionalProperties": false}
    schema: dict[str, Any]
    schema_name: str = "output"
    # Category -> threshold (see SAFETY_CATEGORIES, SAFETY_THRESHOLDS). Only Gemini has such settings; the
    # other providers never see them.
    safety: dict[str, str] | None = None


@dataclass(frozen=True)
class Answer:
    data: dict[str, Any]
    text: str
    input_tokens: int | None
    output_tokens: int | None


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call: its name, what it is for, and a JSON schema (an object) of its input."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """The model asking for one tool call.

    ``id`` is the provider's id for the call (Gemini's API may give none: one is made up, unique, so that
    results can still be matched to calls). ``signature`` is the opaque ``thoughtSignature`` Gemini attaches
    to function calls (base64), which must go back with the call in the next request — Gemini 3 models
    reject a conversation whose function calls lost theirs; it is None for the other providers. Keep the
    ``ToolCall`` as ``converse`` returned it when appending it to the conversation.
    """

    id: str
    name: str
    arguments: dict[str, Any]
    signature: str | None = None


@dataclass(frozen=True)
class ToolResult:
    """What running a tool call gave, for the model: ``content`` is JSON text (or plain text)."""

    call_id: str
    name: str
    content: str
    is_error: bool = False


# One message of a provider-neutral conversation, one of:
#   {"role": "user", "text": str}
#   {"role": "assistant", "text": str | None, "tool_calls": list[ToolCall]}
#   {"role": "tool", "results": list[ToolResult]}
# ``converse`` maps it to each provider's own format, so a conversation can outlive a change of model.
Message = dict[str, Any]


@dataclass(frozen=True)
class Turn:
    """The model's side of one turn: its text, and the tool calls it asks for (none: ``text`` is its final
    answer). ``stop_reason`` is the provider's own (Anthropic ``tool_use``/``end_turn``/``max_tokens``, OpenAI
    ``tool_calls``/``stop``/``length``, Gemini ``STOP``/``MAX_TOKENS``), for logs and for telling a cut-off
    answer from a finished one."""

    text: str | None
    tool_calls: list[ToolCall]
    input_tokens: int | None
    output_tokens: int | None
    stop_reason: str | None


class ProviderError(Exception):
    """A call that produced no usable answer. ``answered`` is true when the provider did answer (the model
    refused, or its output was not a JSON object), so the call is billed even though it failed."""

    def __init__(
        self, kind: ErrorKind, message: str, *, retry_after: float | None = None, answered: bool = False
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.retry_after = retry_after
        self.answered = answered

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"ProviderError({self.kind!r}, {self.message!r}, retry_after={self.retry_after!r}, "
            f"answered={self.answered!r})"
        )


# Our names for Gemini's harm categories and block thresholds -> Gemini's enum names.
SAFETY_CATEGORIES: dict[str, str] = {
    "harassment": "HARM_CATEGORY_HARASSMENT",
    "hate_speech": "HARM_CATEGORY_HATE_SPEECH",
    "sexually_explicit": "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "dangerous_content": "HARM_CATEGORY_DANGEROUS_CONTENT",
}
SAFETY_THRESHOLDS: dict[str, str] = {
    "off": "OFF",
    "block_only_high": "BLOCK_ONLY_HIGH",
    "block_medium_and_above": "BLOCK_MEDIUM_AND_ABOVE",
    "block_low_and_above": "BLOCK_LOW_AND_ABOVE",
}

# Gemini finish reasons meaning the candidate was withheld for its content rather than cut short.
_GOOGLE_BLOCKED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "LANGUAGE",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
    }
)

# Self-hosted OpenAI-compatible servers (Ollama, vLLM) ignore the key, but the SDK insists on one.
_PLACEHOLDER_KEY = "not-needed"


# --- Per-loop state ------------------------------------------------------------------------------------
#
# asyncio primitives and pooled connections belong to the event loop that first used them, and a process
# may run several loops (one per worker thread, a fresh one per asyncio.run), so both are kept per loop.
# Entries of closed loops are dropped on the next lookup.

_ClientKey = tuple[str, str | None, str | None, float]
_state_lock = threading.Lock()
_semaphores: dict[asyncio.AbstractEventLoop, dict[str, asyncio.Semaphore]] = {}
_clients: dict[asyncio.AbstractEventLoop, dict[_ClientKey, Any]] = {}


def _prune_closed_loops() -> None:
    for registry in (_semaphores, _clients):
        for loop in [loop for loop in registry if loop.is_closed()]:
            del registry[loop]


def concurrency_limit(provider: str) -> asyncio.Semaphore:
    """The running loop's semaphore for ``provider``: ``ai_concurrency`` calls in flight at once."""
    loop = asyncio.get_running_loop()
    with _state_lock:
        per_loop = _semaphores.get(loop)
        if per_loop is None:
            _prune_closed_loops()
            per_loop = _semaphores[loop] = {}
        semaphore = per_loop.get(provider)
        if semaphore is None:
            semaphore = per_loop[provider] = asyncio.Semaphore(max(1, get_settings().ai_concurrency))
        return semaphore


def _client(model: ModelSpec, build: Any) -> Any:
    loop = asyncio.get_running_loop()
    key: _ClientKey = (model.provider, model.base_url, model.api_key, model.timeout)
    with _state_lock:
        per_loop = _clients.get(loop)
        if per_loop is None:
            _prune_closed_loops()
            per_loop = _clients[loop] = {}
        client = per_loop.get(key)
        if client is None:
            client = per_loop[key] = build(model)
        return client


async def aclose_clients() -> None:
    """Close the SDK clients the running loop opened (call before the loop ends, e.g. on shutdown, so no
    connection is left for the garbage collector to complain about)."""
    loop = asyncio.get_running_loop()
    with _state_lock:
        clients = _clients.pop(loop, {})
    # One client failing to close must not leave the others open.
    await asyncio.gather(
        *(c.aclose() if isinstance(c, _GoogleClient) else c.close() for c in clients.values()),
        return_exceptions=True,
    )


# --- The call ------------------------------------------------------------------------------------------


_LOADED: set[str] = set()
_IMPORT_LOCK = threading.Lock()
_SDK_MODULES = {
    "anthropic": ("anthropic",),
    "openai": ("openai",),
    "google": ("google.genai", "google.genai.types", "google.genai.errors"),
}


async def _load_sdk(provider: str) -> None:
    """Import a provider's SDK off the event loop the first time (a second or two each): the loop
    meanwhile serves requests and other calls. A module being imported is already in ``sys.modules``
    half-made, so callers wait for the provider to be marked loaded, not for the module to appear."""
    if provider in _LOADED:
        return
    await asyncio.to_thread(_import_sdk, provider)


def _import_sdk(provider: str) -> None:
    with _IMPORT_LOCK:
        for name in _SDK_MODULES[provider]:
            importlib.import_module(name)
        _LOADED.add(provider)


def _require_available(model: ModelSpec) -> None:
    if not model.available:
        needs = "a base URL" if model.provider == "openai" else "an API key"
        raise ProviderError("not_configured", f"model {model.id}: provider {model.provider} has no {needs}")


async def generate(model: ModelSpec, request: Generation) -> Answer:
    """Ask ``model`` for a JSON object following ``request.schema``. Raises ``ProviderError``."""
    _require_available(model)
    await _load_sdk(model.provider)
    async with concurrency_limit(model.provider):
        if model.provider == "anthropic":
            return await _anthropic(model, request)
        if model.provider == "openai":
            return await _openai(model, request)
        return await _google(model, request)


async def converse(
    model: ModelSpec,
    system: str,
    messages: list[Message],
    tools: list[ToolSpec],
    *,
    safety: dict[str, str] | None = None,
) -> Turn:
    """One turn of a tool-calling conversation: send ``messages`` (and the ``tools`` the model may call) to
    ``model`` and return what it answers. Nothing is executed here: the caller runs the tool calls, appends
    an assistant message with them and a tool message with their results, and calls again. ``safety`` goes
    to Gemini only, as in ``generate``. Raises ``ProviderError`` — ``invalid_output`` (answered) when the
    model's tool calls cannot be read, ``bad_request`` when ``messages`` is malformed."""
    _require_available(model)
    _check_conversation(messages)
    await _load_sdk(model.provider)
    async with concurrency_limit(model.provider):
        if model.provider == "anthropic":
            return await _anthropic_turn(model, system, messages, tools)
        if model.provider == "openai":
            return await _openai_turn(model, system, messages, tools)
        return await _google_turn(model, system, messages, tools, safety)


def _check_conversation(messages: list[Message]) -> None:
    """Reject a malformed conversation before it costs a request (and before the mappers below, which
    trust its shape)."""
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        where = f"messages[{index}]"
        if role == "user":
            ok = isinstance(message.get("text"), str)
        elif role == "assistant":
            ok = isinstance(message.get("text"), str | None) and all(
                isinstance(call, ToolCall) for call in message.get("tool_calls") or []
            )
        elif role == "tool":
            ok = all(isinstance(result, ToolResult) for result in message.get("results") or [])
        else:
            raise ProviderError("bad_request", f"{where}: unknown role {role!r}")
        if not ok:
            raise ProviderError("bad_request", f"{where}: not a well-formed {role} message")


def _tool_calls(message: Message) -> list[ToolCall]:
    calls: list[ToolCall] = message.get("tool_calls") or []
    return calls


def _tool_results(message: Message) -> list[ToolResult]:
    results: list[ToolResult] = message.get("results") or []
    return results


def _tool_output(content: str) -> Any:
    """A tool result's content as a JSON value (its text when it is not JSON), for Gemini, which takes
    function responses as objects rather than text."""
    try:
        return json.loads(content)
    except ValueError:
        return content


def _parse(text: str, where: str) -> dict[str, Any]:
    candidate = text.strip()
    # Some OpenAI-compatible servers ignore response_format and fence the JSON like a chat answer.
    if candidate.startswith("```"):
        candidate = candidate.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(candidate)
    except ValueError:
        raise ProviderError(
            "invalid_output", f"{where} answered with text that is not JSON: {_clip(text)}", answered=True
        ) from None
    if not isinstance(data, dict):
        raise ProviderError(
            "invalid_output",
            f"{where} answered with JSON that is not an object: {_clip(text)}",
            answered=True,
        )
    return data


def _clip(text: str, limit: int = 200) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` (OpenAI), or ``retry-after`` in seconds or as an HTTP date."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_kind(status: int) -> ErrorKind:
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth"
    if status == 408:
        return "timeout"
    if status >= 500:
        # Includes Anthropic's 529 "overloaded".
        return "unavailable"
    return "bad_request"


def _body_message(body: object) -> str | None:
    """``error.message`` (or ``message``) from a provider's error body."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return None


# --- Anthropic -----------------------------------------------------------------------------------------


def _build_anthropic(model: ModelSpec) -> anthropic.AsyncAnthropic:
    import anthropic  # noqa: PLC0415

    return anthropic.AsyncAnthropic(
        api_key=model.api_key, base_url=model.base_url, timeout=model.timeout, max_retries=0
    )


def _raise_sdk(
    exc: anthropic.APIError | openai.APIError,
    model: ModelSpec,
    timeout_error: type[anthropic.APITimeoutError | openai.APITimeoutError],
    connection_error: type[anthropic.APIConnectionError | openai.APIConnectionError],
    status_error: type[anthropic.APIStatusError | openai.APIStatusError],
) -> NoReturn:
    """Map an Anthropic or OpenAI SDK error (the two SDKs share one design) to a ProviderError."""
    provider = model.provider
    if isinstance(exc, timeout_error):
        raise ProviderError("timeout", f"{provider}: no answer within {model.timeout:g} s") from exc
    if isinstance(exc, connection_error):
        raise ProviderError("unavailable", f"{provider}: could not connect: {exc.message}") from exc
    if isinstance(exc, status_error):
        status = exc.status_code
        detail = _body_message(exc.body) or exc.message
        raise ProviderError(
            _status_kind(status),
            f"{provider} returned HTTP {status}: {detail}",
            retry_after=_retry_after(exc.response.headers),
        ) from exc
    raise ProviderError("unavailable", f"{provider}: {exc.message}") from exc


def _raise_anthropic(exc: anthropic.APIError, model: ModelSpec) -> NoReturn:
    import anthropic  # noqa: PLC0415

    _raise_sdk(exc, model, anthropic.APITimeoutError, anthropic.APIConnectionError, anthropic.APIStatusError)


def _anthropic_input_tokens(usage: anthropic.types.Usage) -> int:
    # Cached prompt tokens are reported apart from the rest, but they are still input the call consumed.
    return (
        usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
    )


async def _anthropic(model: ModelSpec, request: Generation) -> Answer:
    import anthropic  # noqa: PLC0415

    client: anthropic.AsyncAnthropic = _client(model, _build_anthropic)
    try:
        message = await client.messages.create(
            model=model.model,
            max_tokens=model.max_output_tokens,
            system=request.system,
            messages=[{"role": "user", "content": request.prompt}],
            output_config={"format": {"type": "json_schema", "schema": request.schema}},
        )
    except anthropic.APIError as exc:
        _raise_anthropic(exc, model)
    usage = message.usage
    input_tokens = _anthropic_input_tokens(usage)
    if message.stop_reason == "refusal":
        raise ProviderError("refused", f"{model.model} declined to answer", answered=True)
    text = next((block.text for block in message.content if block.type == "text"), None)
    if text is None:
        raise ProviderError(
            "invalid_output",
            f"anthropic answered without text (stop_reason {message.stop_reason})",
            answered=True,
        )
    where = "anthropic" if message.stop_reason != "max_tokens" else "anthropic (cut off at max_tokens)"
    return Answer(_parse(text, where), text, input_tokens, usage.output_tokens)


def _anthropic_messages(messages: list[Message]) -> list[anthropic.types.MessageParam]:
    """The neutral conversation as Messages API turns: assistant ``text`` + ``tool_use`` blocks, tool
    results as a user turn of ``tool_result`` blocks (consecutive user turns are merged by the API)."""
    native: list[anthropic.types.MessageParam] = []
    for message in messages:
        if message["role"] == "user":
            # The API rejects empty text blocks.
            if message["text"]:
                native.append({"role": "user", "content": message["text"]})
        elif message["role"] == "assistant":
            blocks: list[anthropic.types.TextBlockParam | anthropic.types.ToolUseBlockParam] = []
            if message.get("text"):
                blocks.append({"type": "text", "text": message["text"]})
            blocks.extend(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
                for call in _tool_calls(message)
            )
            if blocks:
                native.append({"role": "assistant", "content": blocks})
        else:
            results: list[anthropic.types.ToolResultBlockParam] = [
                {
                    "type": "tool_result",
                    "tool_use_id": result.call_id,
                    "content": result.content,
                    "is_error": result.is_error,
                }
                for result in _tool_results(message)
            ]
            if results:
                native.append({"role": "user", "content": results})
    return native


async def _anthropic_turn(
    model: ModelSpec, system: str, messages: list[Message], tools: list[ToolSpec]
) -> Turn:
    import anthropic  # noqa: PLC0415

    client: anthropic.AsyncAnthropic = _client(model, _build_anthropic)
    native_tools: list[anthropic.types.ToolParam] = [
        {"name": tool.name, "description": tool.description, "input_schema": tool.input_schema}
        for tool in tools
    ]
    try:
        message = await client.messages.create(
            model=model.model,
            max_tokens=model.max_output_tokens,
            system=system or anthropic.omit,
            messages=_anthropic_messages(messages),
            tools=native_tools or anthropic.omit,
        )
    except anthropic.APIError as exc:
        _raise_anthropic(exc, model)
    if message.stop_reason == "refusal":
        raise ProviderError("refused", f"{model.model} declined to answer", answered=True)
    calls = [
        ToolCall(block.id, block.name, dict(block.input))
        for block in message.content
        if isinstance(block, anthropic.types.ToolUseBlock)
    ]
    if calls and message.stop_reason == "max_tokens":
        # The last tool_use block may be cut short, its input incomplete: not something to execute.
        raise ProviderError(
            "invalid_output", "anthropic was cut off at max_tokens while calling tools", answered=True
        )
    text = "".join(block.text for block in message.content if isinstance(block, anthropic.types.TextBlock))
    return Turn(
        text or None,
        calls,
        _anthropic_input_tokens(message.usage),
        message.usage.output_tokens,
        message.stop_reason,
    )


# --- OpenAI-compatible ---------------------------------------------------------------------------------


def _build_openai(model: ModelSpec) -> openai.AsyncOpenAI:
    import openai  # noqa: PLC0415

    return openai.AsyncOpenAI(
        api_key=model.api_key or _PLACEHOLDER_KEY,
        base_url=model.base_url,
        timeout=model.timeout,
        max_retries=0,
    )


def _raise_openai(exc: openai.APIError, model: ModelSpec) -> NoReturn:
    import openai  # noqa: PLC0415

    _raise_sdk(exc, model, openai.APITimeoutError, openai.APIConnectionError, openai.APIStatusError)


def _openai_usage(completion: openai.types.chat.ChatCompletion) -> tuple[int | None, int | None]:
    usage = completion.usage
    return (usage.prompt_tokens, usage.completion_tokens) if usage else (None, None)


def _openai_choice(
    model: ModelSpec, completion: openai.types.chat.ChatCompletion
) -> openai.types.chat.chat_completion.Choice:
    """The first choice, unless the model declined or a content filter withheld it."""
    if not completion.choices:
        raise ProviderError("invalid_output", "openai answered with no choices", answered=True)
    choice = completion.choices[0]
    if choice.message.refusal:
        raise ProviderError("refused", f"{model.model} declined: {choice.message.refusal}", answered=True)
    if choice.finish_reason == "content_filter":
        raise ProviderError(
            "refused", f"{model.model}: the answer was withheld by a content filter", answered=True
        )
    return choice


async def _openai(model: ModelSpec, request: Generation) -> Answer:
    import openai  # noqa: PLC0415

    client: openai.AsyncOpenAI = _client(model, _build_openai)
    try:
        completion = await client.chat.completions.create(
            model=model.model,
            messages=[
                {"role": "system", "content": request.system},
                {"role": "user", "content": request.prompt},
            ],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": request.schema, "strict": True},
            },
            max_tokens=model.max_output_tokens,
        )
    except openai.APIError as exc:
        _raise_openai(exc, model)
    input_tokens, output_tokens = _openai_usage(completion)
    choice = _openai_choice(model, completion)
    text = choice.message.content or ""
    where = "openai" if choice.finish_reason != "length" else "openai (cut off at max_tokens)"
    return Answer(_parse(text, where), text, input_tokens, output_tokens)


def _openai_messages(system: str, messages: list[Message]) -> list[ChatCompletionMessageParam]:
    """The neutral conversation as chat completions messages: assistant messages carry ``tool_calls``
    (arguments as JSON text), and each tool result is a ``tool`` message of its own."""
    native: list[ChatCompletionMessageParam] = []
    if system:
        native.append({"role": "system", "content": system})
    for message in messages:
        if message["role"] == "user":
            native.append({"role": "user", "content": message["text"]})
        elif message["role"] == "assistant":
            calls = _tool_calls(message)
            if not calls and not message.get("text"):
                continue
            assistant: openai.types.chat.ChatCompletionAssistantMessageParam = {
                "role": "assistant",
                "content": message.get("text") or None,
            }
            # Some compatible servers reject an empty tool_calls list, so it is left out when empty.
            if calls:
                assistant["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                    }
                    for call in calls
                ]
            native.append(assistant)
        else:
            # Chat completions has no error flag on tool results: the content itself has to say so.
            native.extend(
                {"role": "tool", "tool_call_id": result.call_id, "content": result.content}
                for result in _tool_results(message)
            )
    return native


def _openai_arguments(name: str, arguments: str) -> dict[str, Any]:
    # Some compatible servers send "" for a call without arguments.
    if not arguments.strip():
        return {}
    try:
        parsed = json.loads(arguments)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ProviderError(
            "invalid_output",
            f"openai called {name} with arguments that are not a JSON object: {_clip(arguments)}",
            answered=True,
        )
    return parsed


async def _openai_turn(model: ModelSpec, system: str, messages: list[Message], tools: list[ToolSpec]) -> Turn:
    import openai  # noqa: PLC0415

    client: openai.AsyncOpenAI = _client(model, _build_openai)
    native_tools: list[ChatCompletionToolParam] = [
        {
            "type": "function",
            "function": {"name": tool.name, "description": tool.description, "parameters": tool.input_schema},
        }
        for tool in tools
    ]
    try:
        completion = await client.chat.completions.create(
            model=model.model,
            messages=_openai_messages(system, messages),
            # An empty tools list is an error for OpenAI: no tools means no tools parameter.
            tools=native_tools or openai.omit,
            max_tokens=model.max_output_tokens,
        )
    except openai.APIError as exc:
        _raise_openai(exc, model)
    input_tokens, output_tokens = _openai_usage(completion)
    choice = _openai_choice(model, completion)
    calls: list[ToolCall] = []
    for call in choice.message.tool_calls or []:
        if not isinstance(call, openai.types.chat.ChatCompletionMessageFunctionToolCall):
            # Only function tools are offered; anything else is not a call we could run.
            raise ProviderError(
                "invalid_output", f"openai made a {call.type} tool call, not a function call", answered=True
            )
        calls.append(
            ToolCall(
                call.id, call.function.name, _openai_arguments(call.function.name, call.function.arguments)
            )
        )
    if calls and choice.finish_reason == "length":
        # Arguments that happen to parse may still be cut short.
        raise ProviderError(
            "invalid_output", "openai was cut off at max_tokens while calling tools", answered=True
        )
    return Turn(choice.message.content or None, calls, input_tokens, output_tokens, choice.finish_reason)


# --- Google --------------------------------------------------------------------------------------------


class _GoogleClient:
    """A genai client with the HTTP client it sends through.

    We hand genai an ``httpx2`` client of our own rather than let it choose: left alone it prefers aiohttp
    whenever that is installed (a dev dependency here), so timeouts and connection errors would surface as
    different exception types in tests and in production, and its aiohttp path retries connection errors
    on its own after sleeping 1 to 10 s. httpx2 rather than httpx because httpx's connection pool re-checks
    every connection on each request and response (encode/httpcore#1035): with 128 calls in flight that
    cost 18 ms of CPU per call, against 2.5 ms through httpx2 (the openai and anthropic SDKs' choice).
    """

    def __init__(self, model: ModelSpec) -> None:
        import httpx2  # noqa: PLC0415
        from google import genai  # noqa: PLC0415
        from google.genai import types as genai_types  # noqa: PLC0415

        self.http: httpx2.AsyncClient = httpx2.AsyncClient(
            timeout=model.timeout, limits=httpx2.Limits(max_connections=None, max_keepalive_connections=100)
        )
        self.genai: genai.Client = genai.Client(
            enterprise=False,
            api_key=model.api_key,
            http_options=genai_types.HttpOptions(
                base_url=model.base_url,
                timeout=int(model.timeout * 1000),
                retry_options=genai_types.HttpRetryOptions(attempts=1),
                httpx_async_client=self.http,
            ),
        )

    async def aclose(self) -> None:
        await self.genai.aio.aclose()
        await self.http.aclose()
        self.genai.close()


def _google_safety(safety: dict[str, str] | None) -> list[genai_types.SafetySetting] | None:
    """Our safety settings as Gemini's (None when there are none). Raises ``ProviderError`` (bad_request)
    for a category or threshold we do not know."""
    from google.genai import types as genai_types  # noqa: PLC0415

    try:
        settings = [
            genai_types.SafetySetting(
                category=genai_types.HarmCategory(SAFETY_CATEGORIES[category]),
                threshold=genai_types.HarmBlockThreshold(SAFETY_THRESHOLDS[threshold]),
            )
            for category, threshold in (safety or {}).items()
        ]
    except KeyError as exc:
        raise ProviderError("bad_request", f"unknown safety category or threshold {exc.args[0]!r}") from None
    return settings or None


def _google_config(model: ModelSpec, request: Generation) -> genai_types.GenerateContentConfig:
    from google.genai import types as genai_types  # noqa: PLC0415

    return genai_types.GenerateContentConfig(
        system_instruction=request.system,
        response_mime_type="application/json",
        response_json_schema=request.schema,
        max_output_tokens=model.max_output_tokens,
        safety_settings=_google_safety(request.safety),
        # Neither applies to a schema-constrained answer without tools; keeping them off means one call
        # is one HTTP request, which the caller's attempt counting relies on.
        automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True),
        automatic_continuation=False,
    )


def _google_retry_delay(exc: genai_errors.APIError) -> float | None:
    """Retry-After, else the delay in the error's google.rpc.RetryInfo detail ("30s")."""
    headers = getattr(exc.response, "headers", None)
    found = _retry_after(headers) if headers is not None else None
    if found is not None:
        return found
    details = exc.details.get("error", exc.details) if isinstance(exc.details, dict) else None
    for detail in (details or {}).get("details") or []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                continue
    return None


async def _google_generate(
    model: ModelSpec,
    contents: str | list[genai_types.Content],
    config: genai_types.GenerateContentConfig,
) -> genai_types.GenerateContentResponse:
    """One ``generateContent`` request, its failures mapped to ``ProviderError``."""
    import httpx2  # noqa: PLC0415
    from google.genai import errors as genai_errors  # noqa: PLC0415

    client: _GoogleClient = _client(model, _GoogleClient)
    try:
        return await client.genai.aio.models.generate_content(
            model=model.model, contents=contents, config=config
        )
    except genai_errors.APIError as exc:
        status = exc.code
        raise ProviderError(
            _status_kind(status),
            f"google returned HTTP {status} ({exc.status}): {exc.message}",
            retry_after=_google_retry_delay(exc),
        ) from exc
    except httpx2.TimeoutException as exc:
        raise ProviderError("timeout", f"google: no answer within {model.timeout:g} s") from exc
    except httpx2.TransportError as exc:
        raise ProviderError("unavailable", f"google: could not connect: {exc}") from exc


def _google_usage(response: genai_types.GenerateContentResponse) -> tuple[int | None, int | None]:
    usage = response.usage_metadata
    input_tokens = usage.prompt_token_count if usage else None
    # Thinking models bill their thoughts as output.
    output_tokens = None
    if usage and (usage.candidates_token_count is not None or usage.thoughts_token_count is not None):
        output_tokens = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
    return input_tokens, output_tokens


def _google_candidate(
    model: ModelSpec, response: genai_types.GenerateContentResponse
) -> tuple[list[genai_types.Part], str]:
    """The first candidate's parts and finish reason, unless the prompt or the answer was blocked."""
    feedback = response.prompt_feedback
    if feedback and feedback.block_reason:
        # Nothing was generated, and Google does not bill blocked prompts.
        reason = getattr(feedback.block_reason, "value", feedback.block_reason)
        raise ProviderError("refused", f"{model.model} blocked the prompt ({reason})")
    if not response.candidates:
        raise ProviderError("invalid_output", "google answered with no candidates", answered=True)
    candidate = response.candidates[0]
    finish = str(getattr(candidate.finish_reason, "value", candidate.finish_reason or ""))
    if finish in _GOOGLE_BLOCKED:
        raise ProviderError("refused", f"{model.model} withheld its answer ({finish})", answered=True)
    parts = candidate.content.parts if candidate.content and candidate.content.parts else []
    return parts, finish


async def _google(model: ModelSpec, request: Generation) -> Answer:
    response = await _google_generate(model, request.prompt, _google_config(model, request))
    input_tokens, output_tokens = _google_usage(response)
    parts, finish = _google_candidate(model, response)
    text = "".join(part.text for part in parts if part.text and not part.thought)
    where = "google" if finish != "MAX_TOKENS" else "google (cut off at max_output_tokens)"
    return Answer(_parse(text, where), text, input_tokens, output_tokens)


# Gemini finish reasons meaning its tool calls came out unusable.
_GOOGLE_BAD_CALLS = frozenset(
    {"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS", "MALFORMED_RESPONSE"}
)


def _google_contents(messages: list[Message]) -> list[genai_types.Content]:
    """The neutral conversation as Gemini contents: the model's turns (role ``model``) carry
    ``function_call`` parts, and tool results go back as a user turn of ``function_response`` parts, as
    the SDK's own automatic function calling sends them.

    Call ids are not sent: Gemini pairs responses with calls by name and order, and the Gemini API has
    rejected ``id`` in request parts ("Unknown name id"), so sending ids — some made up here, some from
    another provider — would only risk a 400. Thought signatures are sent back as received.
    """
    from google.genai import types as genai_types  # noqa: PLC0415

    contents: list[genai_types.Content] = []
    for message in messages:
        parts: list[genai_types.Part] = []
        if message["role"] == "user":
            role = "user"
            if message["text"]:
                parts.append(genai_types.Part(text=message["text"]))
        elif message["role"] == "assistant":
            role = "model"
            if message.get("text"):
                parts.append(genai_types.Part(text=message["text"]))
            parts.extend(
                genai_types.Part(
                    function_call=genai_types.FunctionCall(name=call.name, args=call.arguments),
                    thought_signature=_google_signature(call.signature),
                )
                for call in _tool_calls(message)
            )
        else:
            role = "user"
            parts.extend(
                genai_types.Part(
                    function_response=genai_types.FunctionResponse(
                        name=result.name,
                        # The keys Gemini documents for a function's output and for its failure.
                        response={"error" if result.is_error else "output": _tool_output(result.content)},
                    )
                )
                for result in _tool_results(message)
            )
        # Gemini rejects contents without parts.
        if parts:
            contents.append(genai_types.Content(role=role, parts=parts))
    return contents


def _google_signature(signature: str | None) -> bytes | None:
    if signature is None:
        return None
    try:
        return base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise ProviderError("bad_request", "a tool call's Gemini signature is not base64") from None


def _google_turn_config(
    model: ModelSpec, system: str, tools: list[ToolSpec], safety: dict[str, str] | None
) -> genai_types.GenerateContentConfig:
    from google.genai import types as genai_types  # noqa: PLC0415

    declarations = [
        # ``parameters_json_schema`` takes a plain JSON schema as is; ``parameters`` would want Gemini's
        # OpenAPI-subset Schema, which does not accept everything a JSON schema may say.
        genai_types.FunctionDeclaration(
            name=tool.name, description=tool.description, parameters_json_schema=tool.input_schema
        )
        for tool in tools
    ]
    return genai_types.GenerateContentConfig(
        system_instruction=system or None,
        tools=[genai_types.Tool(function_declarations=declarations)] if declarations else None,
        max_output_tokens=model.max_output_tokens,
        safety_settings=_google_safety(safety),
        # The SDK must not run anything itself (it could only run Python callables, and we pass none, but
        # the caller owns the loop), and one call must stay one HTTP request for the caller's accounting.
        automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True),
        automatic_continuation=False,
    )


async def _google_turn(
    model: ModelSpec,
    system: str,
    messages: list[Message],
    tools: list[ToolSpec],
    safety: dict[str, str] | None,
) -> Turn:
    config = _google_turn_config(model, system, tools, safety)
    response = await _google_generate(model, _google_contents(messages), config)
    input_tokens, output_tokens = _google_usage(response)
    parts, finish = _google_candidate(model, response)
    if finish == "MISSING_THOUGHT_SIGNATURE":
        # Our request's fault (a function call replayed without its signature): retrying cannot help.
        raise ProviderError("bad_request", f"{model.model}: a function call lost its thought signature")
    if finish in _GOOGLE_BAD_CALLS:
        raise ProviderError(
            "invalid_output", f"google could not produce its tool calls ({finish})", answered=True
        )
    calls: list[ToolCall] = []
    for part in parts:
        call = part.function_call
        if call is None:
            continue
        if not call.name:
            raise ProviderError("invalid_output", "google made a function call without a name", answered=True)
        signature = part.thought_signature
        calls.append(
            ToolCall(
                # Unique, not just "call_0": a conversation holds many turns, each numbering from 0.
                call.id or f"call_{len(calls)}_{uuid.uuid4().hex[:8]}",
                call.name,
                dict(call.args or {}),
                base64.b64encode(signature).decode("ascii") if signature else None,
            )
        )
    if calls and finish == "MAX_TOKENS":
        raise ProviderError(
            "invalid_output", "google was cut off at max_output_tokens while calling tools", answered=True
        )
    text = "".join(part.text for part in parts if part.text and not part.thought)
    return Turn(text or None, calls, input_tokens, output_tokens, finish or None)
