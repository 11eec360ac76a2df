"""Per-render state: the render context, the undefined type, snippets, the output buffer and budgets."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from io import StringIO
from typing import TYPE_CHECKING, Any, Protocol

from liquid import BoundTemplate, Markup, RenderContext, Undefined
from liquid.exceptions import (
    ContextDepthError,
    LiquidError,
    LoopIterationLimitError,
    ResourceLimitError,
    UndefinedError,
)
from liquid.undefined import UNDEFINED

from tidings.messaging.liquid.errors import SourceProblem, position

if TYPE_CHECKING:
    from liquid import Token


class Links(Protocol):
    """Supplied per delivery by the sender; the Customer.io tags render through it."""

    def unsubscribe_url(self) -> str: ...
    def subscription_preferences_url(self) -> str: ...
    def view_in_browser_url(self) -> str: ...
    def tracking_consent_url(self) -> str: ...
    def tracked(self, url: str) -> str: ...  # a click-tracked version of url
    def link_id(self, url: str) -> str: ...  # stable id of a link (for {% cio_link_id %})
    def topic_name(self, language: str | None) -> str: ...  # name of the message's subscription topic


class Nested(Protocol):
    def render_with_context(self, context: TidingsContext, buffer: StringIO) -> None: ...


class Owner(Protocol):
    """What the render context needs from the engine to render nested Liquid (snippets, render_liquid)."""

    def template(self, source: str, html: bool) -> Nested: ...
    def is_plain(self, source: str) -> bool: ...  # text that is its own rendering
    def new_buffer(self) -> StringIO: ...


class UndefinedVariable(UndefinedError):
    def __init__(self, variable: str, *, token: Token | None) -> None:
        super().__init__(f"{variable} is undefined", token=token)
        self.variable = variable


class NestedError(LiquidError):
    """A failure inside a snippet or render_liquid, re-pointed at the place that rendered it."""

    def __init__(self, message: str, *, token: Token | None, variable: str | None = None) -> None:
        super().__init__(message, token=token)
        self.variable = variable


class Missing(Undefined):
    """An undefined value: it may be tested (falsy, equal to nil and blank) but never used.

    Paths outside conditions and ``default`` fail as soon as they are evaluated (see ``strict``); this
    type is the backstop for anything that still ends up holding an undefined value.
    """

    __slots__ = ()

    def _error(self) -> UndefinedVariable:
        return UndefinedVariable(self.name, token=self.token)

    def __str__(self) -> str:
        raise self._error()

    def __iter__(self) -> Iterator[Any]:
        raise self._error()

    def __len__(self) -> int:
        raise self._error()

    def __int__(self) -> int:
        raise self._error()

    def __float__(self) -> float:
        raise self._error()

    def __getitem__(self, key: str) -> object:
        raise self._error()

    def __bool__(self) -> bool:
        return False


class Budget:
    """Work shared by a render and everything nested in it (snippets, render_liquid, copies)."""

    __slots__ = ("depth", "iterations", "max_depth", "max_iterations")

    def __init__(self, max_iterations: int, max_depth: int) -> None:
        self.iterations = 0
        self.depth = 0
        self.max_iterations = max_iterations
        self.max_depth = max_depth

    def spend(self, iterations: int) -> None:
        self.iterations += iterations
        if self.iterations > self.max_iterations:
            raise LoopIterationLimitError("loop iteration limit reached", token=None)


class Snippets(Mapping[str, object]):
    """The ``snippets`` object; its string values are Liquid, rendered when a template reads them."""

    __slots__ = ("_sources",)

    def __init__(self, sources: Mapping[str, object]) -> None:
        self._sources = sources

    def __getitem__(self, key: str) -> object:
        return self._sources[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)

    def __str__(self) -> str:
        return ""


_PROPERTY = re.compile(r"[\u0080-\uFFFFa-zA-Z_][\u0080-\uFFFFa-zA-Z0-9_-]*")


def describe_path(path: Sequence[object]) -> str:
    parts = [str(path[0])]
    for segment in path[1:]:
        if isinstance(segment, str):
            parts.append(f".{segment}" if _PROPERTY.fullmatch(segment) else f"[{segment!r}]")
        else:
            parts.append(f"[{segment}]")
    return "".join(parts)


# Segments python-liquid's ``get_item`` treats specially (``.size`` of a list, ``.first`` of a hash).
SPECIAL_SEGMENTS = frozenset(("size", "first", "last"))


class _Unset:
    __slots__ = ()


UNSET: Any = _Unset()  # what ``resolve`` returns for a path that leads nowhere


def resolve(context: TidingsContext, root: object, rest: Sequence[object], token: Token | None) -> object:
    """The value at a path of plain segments, or ``UNSET``; snippets read on the way are rendered.

    As python-liquid's ``RenderContext.get`` with its ``get_item``, with fast paths for the JSON a
    context is made of: the scope's dicts are searched without raising ``KeyError`` for each one that
    lacks the name, and dict keys and list indexes are read directly.
    """
    obj: object = UNSET
    try:
        # The chain map's own lookup raises and catches KeyError once per namespace it passes.
        for namespace in context.scope._maps:
            if type(namespace) is dict:
                obj = namespace.get(root, UNSET)
                if obj is not UNSET:
                    break
            else:
                try:
                    obj = namespace[root]  # type: ignore[index]
                    break
                except KeyError:
                    pass
        else:
            return UNSET
    except (KeyError, TypeError, IndexError):
        return UNSET
    return walk(context, obj, rest, token)


def walk(context: TidingsContext, obj: object, rest: Sequence[object], token: Token | None) -> object:
    """The value at ``rest`` from ``obj`` (the second half of ``resolve``), or ``UNSET``."""
    for segment in rest:
        kind = type(obj)
        plain = type(segment) is str or type(segment) is int
        if plain and (kind is dict or kind is list) and segment not in SPECIAL_SEGMENTS:
            try:
                obj = obj[segment]  # type: ignore[index]
            except (KeyError, TypeError, IndexError):
                return UNSET
            continue
        try:
            obj = context.get_item(obj, segment)
        except (KeyError, TypeError, IndexError):
            return UNSET
        if kind is Snippets and isinstance(obj, str):
            obj = context.render_nested(obj, label=f"in snippet {segment!r}", token=token, isolated=True)
    return obj


class TidingsContext(RenderContext):
    """A render context that knows the delivery's links, the output mode and the shared budget."""

    __slots__ = ("budget", "html", "links", "owner")

    budget: Budget
    html: bool
    links: Links | None
    owner: Owner

    def setup(self, *, owner: Owner, html: bool, links: Links | None, budget: Budget) -> TidingsContext:
        self.owner = owner
        self.html = html
        self.links = links
        self.budget = budget
        return self

    def get(self, path: list[object], *, token: Token | None, default: object = UNDEFINED) -> object:
        value = resolve(self, path[0], path[1:], token)
        if value is UNSET:
            return Missing(describe_path(path), token=token) if default is UNDEFINED else default
        return value

    def render_nested(self, source: str, *, label: str, token: Token | None, isolated: bool) -> str:
        """Render Liquid found in data (a snippet, a render_liquid value) as trusted output.

        Snippets get a context of their own (Customer.io: a snippet does not see the body's assigns);
        render_liquid shares this one. Each nested render costs one loop iteration, so a snippet that
        fans out into copies of itself runs out of budget instead of running for ever.
        """
        budget = self.budget
        try:
            budget.spend(1)
            budget.depth += 1
            try:
                if budget.depth > budget.max_depth:
                    raise ContextDepthError("maximum context depth reached", token=None)
                if self.owner.is_plain(source):
                    # Most snippets: no Liquid, no new context.
                    return Markup(source) if self.html else source
                try:
                    template = self.owner.template(source, self.html)
                except SourceProblem as problem:
                    raise NestedError(f"{label}: {problem.describe()}", token=token) from problem
                buffer = self.owner.new_buffer()
                context = self.copy({}) if isolated else self
                template.render_with_context(context, buffer)
            finally:
                budget.depth -= 1
        except ResourceLimitError as err:
            # Point at the outermost place that started the nesting, in the source being rendered.
            err.token = token
            raise
        except NestedError as err:
            if err.token is not token:
                raise NestedError(
                    f"{label}, {_where(err)}{err.message}", token=token, variable=err.variable
                ) from err
            raise
        except LiquidError as err:
            variable = err.variable if isinstance(err, UndefinedVariable) else None
            raise NestedError(f"{label}, {_where(err)}{err.message}", token=token, variable=variable) from err
        text = buffer.getvalue()
        return Markup(text) if self.html else text

    def raise_for_loop_limit(self, length: int = 1) -> None:
        # python-liquid checks the product of nested loop lengths; the budget counts every iteration
        # of the render, including those in snippets and render_liquid.
        self.budget.spend(length)

    def copy(
        self,
        namespace: Mapping[str, object],
        disabled_tags: list[str] | None = None,
        carry_loop_iterations: bool = False,
        template: BoundTemplate | None = None,
        block_scope: bool = False,
    ) -> TidingsContext:
        context = super().copy(
            namespace,
            disabled_tags=disabled_tags,
            carry_loop_iterations=carry_loop_iterations,
            template=template,
            block_scope=block_scope,
        )
        assert isinstance(context, TidingsContext)
        return context.setup(owner=self.owner, html=self.html, links=self.links, budget=self.budget)


def _where(err: LiquidError) -> str:
    line, column = position(err)
    return "" if line is None else f"line {line}, column {column}: "


def tidings_context(context: RenderContext) -> TidingsContext:
    assert isinstance(context, TidingsContext), "templates render through LiquidTemplates"
    return context
