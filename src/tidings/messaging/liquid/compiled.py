"""Prepared templates compiled to Python functions, so a delivery's render runs as straight-line code.

python-liquid renders by walking its parse tree: every output statement costs a dozen Python calls
(node dispatch, the filtered expression, the path, the context's chain-map lookup, stringifying, the
output check), which made Liquid most of a personalised email's render time. After ``strict.prepare``
has given each node and expression the behaviour of its position, a template that is rendered again
(``CompiledTemplate``) is turned into the source of one Python function, ``exec``ed once:

- text, output statements (``{{ }}`` and ``echo``), ``if``/``elsif``/``else`` and ``for`` loops become
  Python statements; filters are called directly, with their arguments evaluated inline and literal
  arguments as constants;
- a path of plain segments starts from the enclosing loop's item or ``forloop`` when it names one, from
  the render's globals when the template binds nothing of that name in front of them (``_scope_names``),
  and otherwise from a full ``resolve`` through the scope; dict keys along it are read directly;
- everything else (``assign``, ``capture``, ``case``, ``unless``, Customer.io's tags, blank blocks,
  conditions, loop expressions, nested paths) is the prepared node or expression itself, called from
  the compiled code exactly as the tree walker would call it.

Variables stay in the render context (locals, loop namespaces, the ``forloop`` drop), so compiled and
delegated parts share one scope and the result, errors (message, line and column) and limits are those
of the tree walker; ``tests/messaging/test_liquid.py`` runs every case both ways. Templates that
Python cannot compile (deeper nesting than its block limit) keep the tree walker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import markupsafe
from liquid import BoundTemplate, Markup, Node, RenderContext
from liquid.ast import BlockNode
from liquid.builtin.content import ContentNode
from liquid.builtin.expressions import Path
from liquid.builtin.expressions.primitive import (
    FalseLiteral,
    FloatLiteral,
    IntegerLiteral,
    Nil,
    StringLiteral,
    TrueLiteral,
)
from liquid.builtin.tags.for_tag import ForLoop, ForNode
from liquid.builtin.tags.if_tag import IfNode
from liquid.exceptions import (
    BreakLoop,
    ContextDepthError,
    ContinueLoop,
    FilterArgumentError,
    FilterError,
    LiquidError,
    LiquidInterrupt,
    LiquidSyntaxError,
    LiquidTypeError,
    OutputStreamLimitError,
    StopRender,
)
from liquid.stringify import to_liquid_string

from tidings.messaging.liquid.runtime import (
    SPECIAL_SEGMENTS,
    UNSET,
    Missing,
    UndefinedVariable,
    describe_path,
    resolve,
    walk,
)
from tidings.messaging.liquid.strict import (
    CheckedBlockNode,
    CheckedEchoNode,
    CheckedFilteredExpression,
    CheckedOutputNode,
    GuardedFilter,
    StrictPath,
)
from tidings.messaging.liquid.tags import RenderLiquidNode

if TYPE_CHECKING:
    from liquid import Token
    from liquid.expression import Expression

    from tidings.messaging.liquid.runtime import TidingsContext

Render = Callable[["TidingsContext", TextIO], None]

# Python allows 20 nested try/for/with blocks in one function; a compiled loop takes three and the
# function's own frame one, so loops nested deeper than this are rendered by the tree walker.
_MAX_LOOP_DEPTH = 5
_OUTPUTS = (CheckedOutputNode, CheckedEchoNode)
_LITERALS = (TrueLiteral, FalseLiteral, IntegerLiteral, FloatLiteral)


class CompiledTemplate:
    """A prepared template that renders the way ``BoundTemplate`` does, compiled once it is used.

    Compiling costs several times parsing (~4 ms for the B6 body against 0.7 ms), so a template is
    compiled at its ``compile_after``-th render: one only validated when saved, or rendered once for
    a preview, stays with the tree walker; one that a broadcast or a stream of sends renders again and
    again is compiled early on. ``compile_after=0`` never compiles.
    """

    __slots__ = ("_render", "_renders_left", "template")

    def __init__(self, template: BoundTemplate, *, compile_after: int) -> None:
        self.template = template
        self._render: Render | None = None
        self._renders_left = compile_after

    @property
    def compiled(self) -> bool:
        return self._render is not None

    def render_with_context(self, context: TidingsContext, buffer: TextIO) -> None:
        render = self._render
        if render is None and self._renders_left > 0:
            # Unsynchronised: two threads may both compile, which only costs the time.
            self._renders_left -= 1
            if self._renders_left == 0:
                render = self._render = _compile(self.template)
        if render is None or context.disabled_tags:
            self.template.render_with_context(context, buffer)
        else:
            render(context, buffer)


def _compile(template: BoundTemplate) -> Render | None:
    try:
        return _Compiler(template).compile(template.nodes)
    except (SyntaxError, RecursionError, MemoryError):
        return None  # the tree walker renders it


def _scope_names(template: BoundTemplate) -> frozenset[str] | None:
    """Every name the template may bind in front of the render's globals (assign, capture, counters,
    loop variables), or None when that cannot be known: ``render_liquid`` renders Liquid from data
    in the same scope, and it may assign anything."""
    names = {"partial"}  # the namespace BoundTemplate.render_with_context pushes
    static = RenderContext(template)
    stack: list[Node] = list(template.nodes)
    while stack:
        node = stack.pop()
        if isinstance(node, RenderLiquidNode):
            return None
        names.update(node.template_scope())
        names.update(node.block_scope())
        stack.extend(node.children(static, include_partials=False))
    return frozenset(names)


class _Compiler:
    def __init__(self, template: BoundTemplate) -> None:
        env = template.env
        self.env = env
        # Roots that may be read straight from the globals (see ``path``): None when none may.
        self.bound = _scope_names(template)
        # Enclosing compiled loops, innermost last: (loop variable, its item's name, the drop's name).
        self.loop_names: list[tuple[str, str, str]] = []
        self.html = bool(env.autoescape)
        self.limit = env.output_stream_limit
        self.lines: list[str] = []
        self.constants: list[object] = []
        self.names = 0
        self.loops = 0

    # -- building the source ------------------------------------------------------------------------

    def const(self, value: object) -> str:
        self.constants.append(value)
        return f"k{len(self.constants) - 1}"

    def temp(self) -> str:
        self.names += 1
        return f"v{self.names}"

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def compile(self, nodes: list[Node]) -> Render:
        self.emit(1, "def render(context, buffer):")
        self.emit(2, "write = buffer.write")
        self.emit(2, "tell = buffer.tell")
        self.emit(2, "scope = context.scope")
        # A fresh render's scope is [locals, globals, builtins, counters] with nothing assigned yet:
        # then a root the template never binds is the globals' or, failing that, the later maps'.
        # Otherwise (a copied context, a render inside a loop or after assigns) roots resolve in full.
        self.emit(2, "g = context.globals")
        self.emit(2, "if type(g) is not dict or context.locals or scope.size() != 4:")
        self.emit(3, "g = NO_GLOBALS")
        # As BoundTemplate.render_with_context: the template's namespace is pushed for the render,
        # and a failure of a top-level node without a position takes the node's.
        self.depth_check(2)
        self.emit(2, "scope.push({'partial': False})")
        self.emit(2, "at = None")
        self.emit(2, "try:")
        for node in nodes:
            self.emit(3, f"at = {self.const(node.token)}")
            self.node(node, 3)
        self.emit(3, "pass")
        self.emit(2, "except StopRender:")
        self.emit(3, "pass")
        self.emit(2, "except LiquidInterrupt as err:")
        self.emit(3, "raise LiquidSyntaxError(f\"unexpected '{err}'\", token=at) from None")
        self.emit(2, "except LiquidError as err:")
        self.emit(3, "if not err.token:")
        self.emit(4, "err.token = at")
        self.emit(3, "raise")
        self.emit(2, "finally:")
        self.emit(3, "scope.pop()")
        self.emit(1, "return render")
        names = [f"k{index}" for index in range(len(self.constants))]
        source = f"def make({', '.join(names)}):\n" + "\n".join(self.lines) + "\n"
        namespace: dict[str, Any] = dict(_RUNTIME)
        exec(compile(source, "<liquid>", "exec"), namespace)
        render: Render = namespace["make"](*self.constants)
        return render

    def depth_check(self, indent: int) -> None:
        # As RenderContext.extend, before it pushes a namespace.
        self.emit(indent, f"if scope.size() > {self.env.context_depth_limit}:")
        self.emit(indent + 1, "raise ContextDepthError(DEPTH_MESSAGE, token=None)")

    # -- nodes --------------------------------------------------------------------------------------

    def node(self, node: Node, indent: int) -> None:
        kind = type(node)
        if kind is ContentNode:
            assert isinstance(node, ContentNode)
            if node.text:
                self.emit(indent, f"write({self.const(node.text)})")
        elif kind in _OUTPUTS:
            expression: Expression = node.expression  # type: ignore[attr-defined]
            self.output(expression, node, indent)
        elif kind is IfNode:
            assert isinstance(node, IfNode)
            self.if_node(node, indent)
        elif kind is ForNode and self.loops < _MAX_LOOP_DEPTH:
            assert isinstance(node, ForNode)
            self.for_node(node, indent)
        else:
            self.emit(indent, f"{self.const(node)}.render(context, buffer)")

    def output(self, expression: Expression, node: Node, indent: int) -> None:
        # As to_liquid_string, with plain strings and numbers first: a number's text needs no
        # escaping, and only the escaped text is written (no Markup object for the buffer).
        value = self.value(expression, indent)
        kind = self.temp()
        self.emit(indent, f"{kind} = type({value})")
        self.emit(indent, f"if {kind} is str:")
        self.emit(indent + 1, f"write(escape_text({value}))" if self.html else f"write({value})")
        self.emit(indent, f"elif {kind} is int or {kind} is float:")
        self.emit(indent + 1, f"write(str({value}))")
        self.emit(indent, "else:")
        self.emit(indent + 1, f"write(to_liquid_string({value}, {self.html}))")
        self.check_output(node, indent)

    def check_output(self, node: Node, indent: int) -> None:
        # As strict.check_output: characters so far against the limit, after each output and block.
        if self.limit is not None:
            self.emit(indent, f"if tell() > {self.limit}:")
            self.emit(indent + 1, self.over_limit(node.token))

    def over_limit(self, token: Token) -> str:
        return f"raise OutputStreamLimitError(LIMIT_MESSAGE, token={self.const(token)})"

    def block(self, block: BlockNode, indent: int) -> None:
        if type(block) is not CheckedBlockNode or (
            block.blank and self.env.suppress_blank_control_flow_blocks
        ):
            # Blank blocks render to nowhere (python-liquid's suppression of whitespace-only blocks).
            self.emit(indent, f"{self.const(block)}.render(context, buffer)")
            return
        for node in block.nodes:
            self.node(node, indent)
        self.check_output(block, indent)

    def if_node(self, node: IfNode, indent: int) -> None:
        self.emit(indent, f"if {self.const(node.condition)}.evaluate(context):")
        self.block(node.consequence, indent + 1)
        for alternative in node.alternatives:
            self.emit(indent, f"elif {self.const(alternative.expression)}.evaluate(context):")
            self.block(alternative.block, indent + 1)
        if node.default is not None:
            self.emit(indent, "else:")
            self.block(node.default, indent + 1)

    def for_node(self, node: ForNode, indent: int) -> None:
        # As ForNode.render_to_output: the loop's namespace in front of the scope, the forloop drop
        # counting, break and continue as the interrupts the tree walker raises.
        expression = node.expression
        iterator, length, loop, namespace, item = (self.temp() for _ in range(5))
        name = self.const(str(expression.identifier))
        self.emit(indent, f"{iterator}, {length} = {self.const(expression)}.evaluate(context)")
        self.emit(indent, f"if {length}:")
        label = self.const(f"{expression.identifier}-{expression.iterable}")
        self.emit(
            indent + 1,
            f"{loop} = ForLoop(name={label}, it={iterator}, length={length}, "
            "parentloop=context.parentloop())",
        )
        self.emit(indent + 1, f"{namespace} = {{'forloop': {loop}, {name}: None}}")
        # context.loop(namespace, loop), without the generator-based context manager.
        self.emit(indent + 1, f"context.raise_for_loop_limit({length})")
        self.depth_check(indent + 1)
        self.emit(indent + 1, f"context.loops.append({loop})")
        self.emit(indent + 1, f"scope.push({namespace})")
        self.emit(indent + 1, "try:")
        self.emit(indent + 2, f"for {item} in {loop}:")
        self.emit(indent + 3, f"{namespace}[{name}] = {item}")
        self.emit(indent + 3, "try:")
        self.loops += 1
        self.loop_names.append((str(expression.identifier), item, loop))
        self.block(node.block, indent + 4)
        self.loop_names.pop()
        self.loops -= 1
        self.emit(indent + 4, "pass")
        self.emit(indent + 3, "except ContinueLoop:")
        self.emit(indent + 4, "continue")
        self.emit(indent + 3, "except BreakLoop:")
        self.emit(indent + 4, "break")
        self.emit(indent + 1, "finally:")
        self.emit(indent + 2, "scope.pop()")
        self.emit(indent + 2, "context.loops.pop()")
        if node.default is not None:
            self.emit(indent, "else:")
            self.block(node.default, indent + 1)

    # -- expressions --------------------------------------------------------------------------------

    def value(self, expression: Expression, indent: int) -> str:
        """Emit statements computing ``expression``; return the name (or constant) holding it."""
        kind = type(expression)
        if kind is StrictPath or kind is Path:
            assert isinstance(expression, Path)
            if all(type(segment) in (str, int) for segment in expression.path):
                return self.path(expression, indent, strict=kind is StrictPath)
        elif kind is CheckedFilteredExpression:
            assert isinstance(expression, CheckedFilteredExpression)
            return self.filtered(expression, indent)
        elif kind is StringLiteral:
            assert isinstance(expression, StringLiteral)
            return self.const(Markup(expression.value) if self.html else expression.value)
        elif kind in _LITERALS:
            return self.const(expression.value)  # type: ignore[attr-defined]
        elif kind is Nil:
            return "None"
        target = self.temp()
        self.emit(indent, f"{target} = {self.const(expression)}.evaluate(context)")
        return target

    def path(self, expression: Path, indent: int, *, strict: bool) -> str:
        target = self.temp()
        root, *rest = expression.path
        token = self.const(expression.token)
        binding = self.loop_binding(root)
        if binding is not None:
            # The innermost enclosing loop's namespace is first in the scope: its item or drop.
            self.emit(indent, f"{target} = {binding}")
            self.walk(target, rest, token, indent)
        elif self.bound is not None and isinstance(root, str) and root not in self.bound:
            self.emit(indent, f"{target} = g.get({root!r}, UNSET)")
            self.emit(indent, f"if {target} is UNSET:")
            self.emit(indent + 1, f"{target} = resolve(context, {root!r}, {tuple(rest)!r}, {token})")
            if rest:
                self.emit(indent, "else:")
                self.walk(target, rest, token, indent + 1)
        else:
            self.emit(indent, f"{target} = resolve(context, {root!r}, {tuple(rest)!r}, {token})")
        self.emit(indent, f"if {target} is UNSET:")
        if strict:
            # StrictPath: the path as written, at its position.
            self.emit(indent + 1, f"raise UndefinedVariable({str(expression)!r}, token={token})")
        else:
            self.emit(indent + 1, f"{target} = Missing({describe_path(expression.path)!r}, token={token})")
        return target

    def loop_binding(self, root: object) -> str | None:
        for name, item, loop in reversed(self.loop_names):
            if root == name:
                return item
            if root == "forloop":
                return loop
        return None

    def walk(self, target: str, rest: Sequence[object], token: str, indent: int) -> None:
        # As runtime.walk: a dict's key read directly, anything else through walk itself.
        for segment in rest:
            if type(segment) is str and segment not in SPECIAL_SEGMENTS:
                self.emit(indent, f"if type({target}) is dict:")
                self.emit(indent + 1, f"{target} = {target}.get({segment!r}, UNSET)")
                self.emit(indent, f"elif {target} is not UNSET:")
            else:
                self.emit(indent, f"if {target} is not UNSET:")
            self.emit(indent + 1, f"{target} = walk(context, {target}, ({segment!r},), {token})")

    def filtered(self, expression: CheckedFilteredExpression, indent: int) -> str:
        value = self.value(expression.left, indent)
        for filter_ in expression.filters or []:
            target = self.temp()
            if type(filter_) is not GuardedFilter:
                self.emit(indent, f"{target} = {self.const(filter_)}.evaluate({value}, context)")
            else:
                self.guarded_filter(filter_, value, target, indent)
            if self.limit is not None:
                self.emit(indent, f"if isinstance({target}, str) and len({target}) > {self.limit}:")
                self.emit(indent + 1, self.over_limit(filter_.token))
            value = target
        return value

    def guarded_filter(self, filter_: GuardedFilter, value: str, target: str, indent: int) -> None:
        # As GuardedFilter.evaluate, with the filter function looked up once.
        function = self.env.filters[filter_.name]
        arguments = [value]
        for argument in filter_.args:
            name, expression = getattr(argument, "name", None), argument.value
            evaluated = self.value(expression, indent)
            arguments.append(f"{name}={evaluated}" if name else evaluated)
        if getattr(function, "with_context", False):
            arguments.append("context=context")
        if getattr(function, "with_environment", False):
            arguments.append("environment=context.env")
        token = self.const(filter_.token)
        prefix = self.const(f"{filter_.name}: ")
        self.emit(indent, "try:")
        self.emit(indent + 1, f"{target} = {self.const(function)}({', '.join(arguments)})")
        self.emit(indent, "except LiquidError as err:")
        self.emit(
            indent + 1, "if err.token is None or isinstance(err, (LiquidTypeError, FilterArgumentError)):"
        )
        self.emit(indent + 2, f"err.token = {token}")
        self.emit(indent + 1, "raise")
        self.emit(indent, "except TypeError as err:")
        self.emit(indent + 1, f"raise LiquidTypeError({prefix} + str(err), token={token}) from err")
        self.emit(indent, "except (ValueError, ArithmeticError, LookupError) as err:")
        self.emit(indent + 1, f"raise FilterError({prefix} + str(err), token={token}) from err")


def _escape_markup(text: str) -> str:
    return str(markupsafe.escape(text))


# markupsafe's escaping without the Markup object its public ``escape`` wraps the text in.
_escape_text: Callable[[str], str] = getattr(markupsafe, "_escape_inner", _escape_markup)

# What the compiled source refers to by name.
_RUNTIME: Mapping[str, object] = {
    "BreakLoop": BreakLoop,
    "ContextDepthError": ContextDepthError,
    "ContinueLoop": ContinueLoop,
    "DEPTH_MESSAGE": "maximum context depth reached, possible recursive include",
    "FilterArgumentError": FilterArgumentError,
    "FilterError": FilterError,
    "ForLoop": ForLoop,
    "LiquidError": LiquidError,
    "LiquidInterrupt": LiquidInterrupt,
    "LiquidSyntaxError": LiquidSyntaxError,
    "LiquidTypeError": LiquidTypeError,
    "LIMIT_MESSAGE": "output stream limit reached",
    "Missing": Missing,
    "OutputStreamLimitError": OutputStreamLimitError,
    "StopRender": StopRender,
    "NO_GLOBALS": {},
    "UNSET": UNSET,
    "UndefinedVariable": UndefinedVariable,
    "escape_text": _escape_text,
    "resolve": resolve,
    "walk": walk,
    "to_liquid_string": to_liquid_string,
}
