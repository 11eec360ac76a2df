"""The engine: environments, the parse cache, and the public ``LiquidTemplates`` facade."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from io import StringIO
from typing import Any

from liquid import Environment, Markup, Mode, Tag
from liquid.exceptions import LiquidError, LoopIterationLimitError, OutputStreamLimitError
from liquid.stream import TokenStream

from tidings.messaging.liquid import filters, syntax, tags
from tidings.messaging.liquid.compiled import CompiledTemplate
from tidings.messaging.liquid.errors import (
    LIMIT_ERRORS,
    RenderFailed,
    SourceProblem,
    TemplateInvalid,
    position,
)
from tidings.messaging.liquid.runtime import (
    Budget,
    Links,
    Missing,
    NestedError,
    Snippets,
    TidingsContext,
    UndefinedVariable,
)
from tidings.messaging.liquid.strict import RangeTooLarge, prepare

# Parsed templates kept per engine. A typical message has a handful of fields plus snippets and
# layouts; this holds the working set of a busy workspace without holding every template ever seen.
CACHE_SIZE = 1024
# A template is compiled to Python at its second render (see compiled.CompiledTemplate), unless its
# source is longer than this: compiling takes about 3 ms per 1,000 characters.
COMPILE_AFTER = 2
COMPILE_SOURCE_LIMIT = 100_000


@dataclass(frozen=True)
class Limits:
    loop_iterations: int = 10_000  # total for-loop iterations per render
    output_bytes: int = 1_000_000  # rendered output size
    depth: int = 30  # render_liquid / snippet nesting and context depth
    local_namespace: int = 1_000_000  # bytes of assign/capture
    source_bytes: int = 1_000_000  # template source size accepted on save


class _PositionedTag(Tag):
    """Gives a parse error with no usable position the position of the tag being parsed.

    python-liquid reports some errors (an unclosed block, a filter with no name) at the end of the
    expression, which has no place in the source; the tag's own start is the useful answer.
    """

    def __init__(self, inner: Tag) -> None:
        super().__init__(inner.env)
        self.inner = inner
        self.name = inner.name
        self.block = inner.block
        self.end = inner.end

    def get_node(self, stream: TokenStream) -> Any:
        start = stream.current
        try:
            return self.inner.get_node(stream)
        except LiquidError as err:
            if err.token is None or err.token.start_index < 0 or not err.token.source:
                err.token = start
            raise

    def parse(self, stream: TokenStream) -> Any:
        return self.inner.parse(stream)


def _environment(limits: Limits, *, html: bool) -> Environment:
    class TidingsEnvironment(Environment):
        # Nested renders are limited by the render budget (Limits.depth); python-liquid's own count also
        # includes its base scopes and every enclosing for loop, so it only backs that up.
        context_depth_limit = (limits.depth + 1) * (Environment.block_nesting_limit + 1) + 5
        loop_iteration_limit = limits.loop_iterations
        local_namespace_limit = limits.local_namespace
        output_stream_limit = limits.output_bytes

    env = TidingsEnvironment(autoescape=html, undefined=Missing, strict_filters=True, tolerance=Mode.STRICT)
    # Customer.io has snippets instead of partials, and there is no template loader to read them from.
    for partial_tag in ("include", "render"):
        del env.tags[partial_tag]
    syntax.register(env)
    tags.register(env)
    filters.register(env)
    for name, tag in list(env.tags.items()):
        env.tags[name] = _PositionedTag(tag)
    return env


class _Engine:
    """One per ``Limits`` and way of rendering: the two environments (HTML and text) and the parse
    cache they share."""

    def __init__(self, limits: Limits, *, compile_after: int) -> None:
        self.limits = limits
        self.compile_after = compile_after
        self.environments = (_environment(limits, html=False), _environment(limits, html=True))
        self.parsed: Callable[[str, bool], CompiledTemplate] = lru_cache(maxsize=CACHE_SIZE)(self._parse)
        self.parse_count = 0
        self.plain_limit = min(limits.source_bytes, limits.output_bytes)

    def _parse(self, source: str, html: bool) -> CompiledTemplate:
        self.parse_count += 1
        self.check_size(source)
        try:
            template = prepare(self.environments[html].from_string(source))
        except LiquidError as err:
            if isinstance(err.__cause__, RecursionError):
                raise SourceProblem("template is nested too deeply") from err
            line, column = position(err)
            raise SourceProblem(str(err.message), line, column) from err
        except RecursionError as err:
            raise SourceProblem("template is nested too deeply") from err
        # Very large templates stay with the tree walker: compiling one would stall its first renders.
        compile_after = self.compile_after if len(source) <= COMPILE_SOURCE_LIMIT else 0
        return CompiledTemplate(template, compile_after=compile_after)

    def check_size(self, source: str) -> None:
        limit = self.limits.source_bytes
        # Only text that might be too long is encoded to count its bytes.
        if len(source) > limit or (len(source) * 4 > limit and len(source.encode("utf-8")) > limit):
            raise SourceProblem(f"template is larger than {limit} bytes")

    # The runtime's Owner protocol.
    def template(self, source: str, html: bool) -> CompiledTemplate:
        return self.parsed(source, html)

    def is_plain(self, source: str) -> bool:
        # No tag and no output, and short enough to be within every size limit: the text is its own
        # rendering (most from, to and reply-to fields, and most snippets).
        return "{" not in source and len(source) * 4 <= self.plain_limit

    def new_buffer(self) -> StringIO:
        return StringIO()


@cache
def _engine(limits: Limits, compile_after: int) -> _Engine:
    return _Engine(limits, compile_after=compile_after)


class LiquidTemplates:
    """Validate and render Customer.io-flavoured Liquid (see the package docstring for the rules).

    Instances with equal ``Limits`` share their environments and parse cache, so creating one per
    module or per request costs nothing after the first. A template renders through compiled Python
    from its ``compile_after``-th render on (``compiled``); 0 keeps python-liquid's tree walker, which
    the tests hold the compiled renders to.
    """

    def __init__(self, limits: Limits = Limits(), *, compile_after: int = COMPILE_AFTER) -> None:
        self.limits = limits
        self._engine = _engine(limits, compile_after)

    @property
    def parse_count(self) -> int:
        """How many times source text has been parsed (cache misses), for tests and metrics."""
        return self._engine.parse_count

    def cache_info(self) -> Any:
        return self._engine.parsed.cache_info()  # type: ignore[attr-defined]

    def validate(self, source: str, *, field: str) -> None:
        """Refuse source that does not parse, with the 1-based line and column of the problem."""
        try:
            self._engine.parsed(source, False)
        except SourceProblem as problem:
            raise TemplateInvalid(
                problem.detail, field=field, line=problem.line, column=problem.column
            ) from None

    def render(
        self,
        source: str,
        context: Mapping[str, Any],
        *,
        field: str,
        html: bool = False,
        links: Links | None = None,
    ) -> str:
        engine = self._engine
        if engine.is_plain(source):
            return source
        try:
            template = engine.parsed(source, html)
        except SourceProblem as problem:
            raise RenderFailed(
                problem.detail, field=field, line=problem.line, column=problem.column
            ) from None

        data: dict[str, Any] = {"unsubscribe_url": "", **context}
        snippets = data.get("snippets")
        if isinstance(snippets, Mapping) and not isinstance(snippets, Snippets):
            data["snippets"] = Snippets(snippets)
        if html:
            content = data.get("content")
            if isinstance(content, str) and not isinstance(content, Markup):
                data["content"] = Markup(content)

        limits = self.limits
        render_context = TidingsContext(template.template, globals=data).setup(
            owner=engine, html=html, links=links, budget=Budget(limits.loop_iterations, limits.depth)
        )
        buffer = engine.new_buffer()
        try:
            template.render_with_context(render_context, buffer)
        except LiquidError as err:
            raise self._failed(err, field) from err
        except RecursionError as err:
            raise RenderFailed("template is nested too deeply", field=field, line=None, column=None) from err
        output = buffer.getvalue()
        # Sizes were checked in characters while rendering; only text that may be over in bytes is
        # encoded to count them.
        if len(output) * 4 > limits.output_bytes and len(output.encode("utf-8")) > limits.output_bytes:
            raise RenderFailed(
                self._limit_message(OutputStreamLimitError("", token=None), "output_bytes"),
                field=field,
                line=None,
                column=None,
                limit="output_bytes",
            )
        return output

    def _failed(self, err: LiquidError, field: str) -> RenderFailed:
        line, column = position(err)
        variable = err.variable if isinstance(err, (UndefinedVariable, NestedError)) else None
        limit = next((name for kind, name in LIMIT_ERRORS if isinstance(err, kind)), None)
        detail = str(err.message) if limit is None else self._limit_message(err, limit)
        return RenderFailed(detail, field=field, line=line, column=column, variable=variable, limit=limit)

    def _limit_message(self, err: LiquidError, limit: str) -> str:
        limits = self.limits
        if isinstance(err, RangeTooLarge):
            return str(err.message)
        if isinstance(err, LoopIterationLimitError):
            return f"loop iteration limit of {limits.loop_iterations} reached"
        if limit == "output_bytes":
            return f"output size limit of {limits.output_bytes} bytes reached"
        if limit == "local_namespace":
            return f"assign/capture size limit of {limits.local_namespace} bytes reached"
        return (
            f"nesting depth limit of {limits.depth} reached (a snippet or render_liquid that renders itself?)"
        )
