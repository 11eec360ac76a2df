"""After parsing: decide, once per template, which variable references may be undefined.

python-liquid decides undefined handling per environment; Customer.io (LiquidJS with strict variables
and lenient conditions) decides it per position in the template. So each parsed template is walked once
and its expression objects are given the behaviour of their position, by switching them to the small
subclasses below (same slots, so the switch is a plain ``__class__`` assignment and costs nothing at
render time):

- a path outside a condition or ``default`` becomes ``StrictPath``: evaluating it to an undefined value
  fails the render at once, naming the path as written and its position;
- paths in ``if``/``elsif``/``unless``/``case``/``when`` conditions and the input of a filter chain that
  starts with ``default`` stay lenient;
- ``==``/``!=`` treat undefined, nil and false as ``blank`` (LiquidJS), so ``!= blank`` guards work;
- range literals longer than the loop iteration limit fail (they could feed ``join`` or ``map``, which do
  not count as loops);
- filter chains check the size of the strings they build against the output limit, and filters report
  their own failures with their position;
- output statements and blocks (each loop iteration, each branch) check the size of the output so far,
  so the output buffer itself can be a plain ``StringIO`` (literal text between them is bounded by the
  source size);
- unknown filters are a syntax error, caught when a template is saved rather than when it is sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TextIO

from liquid import BoundTemplate, Node, RenderContext
from liquid.ast import BlockNode, ConditionalBlockNode
from liquid.builtin.expressions import FilteredExpression, Path
from liquid.builtin.expressions.filtered import Filter
from liquid.builtin.expressions.logical import EqExpression, NeExpression, _eq
from liquid.builtin.expressions.primitive import Blank, RangeLiteral
from liquid.builtin.output import OutputNode
from liquid.builtin.tags.case_tag import CaseNode, MultiExpressionBlockNode
from liquid.builtin.tags.echo_tag import EchoNode
from liquid.builtin.tags.if_tag import IfNode
from liquid.builtin.tags.unless_tag import UnlessNode
from liquid.exceptions import (
    FilterArgumentError,
    FilterError,
    LiquidError,
    LiquidSyntaxError,
    LiquidTypeError,
    LoopIterationLimitError,
    OutputStreamLimitError,
)
from liquid.output import NullIO
from liquid.stringify import to_liquid_string

from tidings.messaging.liquid.runtime import Missing, UndefinedVariable

if TYPE_CHECKING:
    from liquid import Environment, Token
    from liquid.expression import Expression

_CONDITION_NODES = (IfNode, UnlessNode, CaseNode, ConditionalBlockNode, MultiExpressionBlockNode)


class StrictPath(Path):
    """A path of plain segments (``customer.plan.name``) that must resolve."""

    __slots__ = ()

    def evaluate(self, context: RenderContext) -> object:
        value = context.get(self.path, token=self.token)  # type: ignore[arg-type]
        # Every undefined value is a Missing (the environments' undefined type); checking the exact
        # type avoids an ABC isinstance check on the hottest path.
        if type(value) is Missing:
            raise UndefinedVariable(str(self), token=self.token)
        return value


class StrictNestedPath(Path):
    """A path with a variable segment (``customer[key]``) that must resolve."""

    __slots__ = ()

    def evaluate(self, context: RenderContext) -> object:
        value = super().evaluate(context)
        if type(value) is Missing:
            raise UndefinedVariable(str(self), token=self.token)
        return value


def blank_aware_eq(left: object, right: object) -> bool:
    if isinstance(right, Blank):
        left, right = right, left
    if isinstance(left, Blank):
        value = right.__liquid__() if hasattr(right, "__liquid__") else right
        if value is None or value is False:
            return True
    return bool(_eq(left, right))


class BlankAwareEq(EqExpression):
    __slots__ = ()

    def evaluate(self, context: RenderContext) -> object:
        return blank_aware_eq(self.left.evaluate(context), self.right.evaluate(context))


class BlankAwareNe(NeExpression):
    __slots__ = ()

    def evaluate(self, context: RenderContext) -> object:
        return not blank_aware_eq(self.left.evaluate(context), self.right.evaluate(context))


class RangeTooLarge(LoopIterationLimitError):
    pass


class BoundedRange(RangeLiteral):
    __slots__ = ()

    def evaluate(self, context: RenderContext) -> range:
        value = super().evaluate(context)
        limit = context.env.loop_iteration_limit
        if limit is not None and value.stop - value.start > limit:
            raise RangeTooLarge(
                f"range ({value.start}..{value.stop - 1}) is longer than the loop iteration limit of {limit}",
                token=self.token,
            )
        return value


class CheckedFilteredExpression(FilteredExpression):
    __slots__ = ()

    def evaluate(self, context: RenderContext) -> object:
        value = self.left.evaluate(context)
        if self.filters:
            limit = context.env.output_stream_limit
            for filter_ in self.filters:
                value = filter_.evaluate(value, context)
                if limit is not None and isinstance(value, str) and len(value) > limit:
                    raise OutputStreamLimitError("output stream limit reached", token=filter_.token)
        return value


class GuardedFilter(Filter):
    """A filter call whose failures, whatever their type, become Liquid errors at its position."""

    __slots__ = ()

    def evaluate(self, left: object, context: RenderContext) -> object:
        func = context.filter(self.name, token=self.token)
        positional, keywords = self.evaluate_args(context)
        try:
            return func(left, *positional, **keywords)
        except LiquidError as err:
            if err.token is None or isinstance(err, (LiquidTypeError, FilterArgumentError)):
                err.token = self.token
            raise
        except TypeError as err:
            raise LiquidTypeError(f"{self.name}: {err}", token=self.token) from err
        except (ValueError, ArithmeticError, LookupError) as err:
            raise FilterError(f"{self.name}: {err}", token=self.token) from err


def check_output(context: RenderContext, buffer: TextIO, token: Token) -> None:
    limit = context.env.output_stream_limit
    # Characters, not bytes: cheap, and never more than the byte count. The engine checks the bytes
    # of the finished output.
    if limit is not None and buffer.tell() > limit:
        raise OutputStreamLimitError("output stream limit reached", token=token)


class CheckedBlockNode(BlockNode):
    __slots__ = ()

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        if self.blank and context.env.suppress_blank_control_flow_blocks:
            null = NullIO()
            for node in self.nodes:
                node.render(context, null)
            return 0
        count = 0
        for node in self.nodes:
            count += node.render(context, buffer)
        check_output(context, buffer, self.token)
        return count


def _render_output(node: OutputNode, context: RenderContext, buffer: TextIO) -> int:
    count = buffer.write(to_liquid_string(node.expression.evaluate(context), context.autoescape))
    check_output(context, buffer, node.token)
    return count


class CheckedOutputNode(OutputNode):
    __slots__ = ()

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        return _render_output(self, context, buffer)


class CheckedEchoNode(EchoNode):
    __slots__ = ()

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        return _render_output(self, context, buffer)


_CHECKED_NODES: dict[type[Node], type[Node]] = {
    BlockNode: CheckedBlockNode,
    OutputNode: CheckedOutputNode,
    EchoNode: CheckedEchoNode,
}


def prepare(template: BoundTemplate) -> BoundTemplate:
    """Give every expression in ``template`` the behaviour of its position (see the module docstring)."""
    env = template.env
    static = RenderContext(template)
    stack: list[Node] = list(template.nodes)
    while stack:
        node = stack.pop()
        checked = _CHECKED_NODES.get(type(node))
        if checked is not None:
            node.__class__ = checked
        lenient = isinstance(node, _CONDITION_NODES)
        for expression in node.expressions():
            prepare_expression(expression, env, lenient=lenient)
        stack.extend(node.children(static, include_partials=False))
    return template


def prepare_expression(expression: Expression, env: Environment, *, lenient: bool) -> None:
    kind = type(expression)
    if kind is Path:
        assert isinstance(expression, Path)
        if not lenient:
            nested = any(isinstance(segment, Path) for segment in expression.path)
            expression.__class__ = StrictNestedPath if nested else StrictPath
        _prepare_all(expression.children(), env, lenient=lenient)
        return
    if kind is FilteredExpression:
        assert isinstance(expression, FilteredExpression)
        expression.__class__ = CheckedFilteredExpression
        filters = expression.filters or []
        guarded = lenient or (bool(filters) and filters[0].name == "default")
        prepare_expression(expression.left, env, lenient=guarded)
        for filter_ in filters:
            if filter_.name not in env.filters:
                raise LiquidSyntaxError(f"unknown filter '{filter_.name}'", token=filter_.token)
            if type(filter_) is Filter:
                filter_.__class__ = GuardedFilter
            _prepare_all((argument.value for argument in filter_.args), env, lenient=False)
        return
    if kind is EqExpression:
        expression.__class__ = BlankAwareEq
    elif kind is NeExpression:
        expression.__class__ = BlankAwareNe
    elif kind is RangeLiteral:
        expression.__class__ = BoundedRange
    _prepare_all(expression.children(), env, lenient=lenient)


def _prepare_all(expressions: Iterable[Expression], env: Environment, *, lenient: bool) -> None:
    for expression in expressions:
        prepare_expression(expression, env, lenient=lenient)
