"""Parsing differences from python-liquid: keywords may name filters (Customer.io's ``| limit: 2``).

python-liquid's expression tokenizer turns ``limit`` (a ``for`` loop keyword) into a keyword token, so
``{{ items | limit: 2 }}`` would not parse. The tags that parse filtered expressions (output, ``assign``,
``echo``, and Tidings' own) are re-registered here to turn a keyword right after a pipe back into a name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from liquid.builtin.expressions import FilteredExpression, Nil, parse_identifier, tokenize
from liquid.builtin.output import Output, OutputNode
from liquid.builtin.tags.assign_tag import AssignNode, AssignTag
from liquid.builtin.tags.echo_tag import EchoTag
from liquid.exceptions import LiquidSyntaxError
from liquid.stream import TokenStream
from liquid.token import (
    TOKEN_ASSIGN,
    TOKEN_DPIPE,
    TOKEN_EOF,
    TOKEN_EXPRESSION,
    TOKEN_OUTPUT,
    TOKEN_PIPE,
    TOKEN_TAG,
    TOKEN_WORD,
    Token,
)

if TYPE_CHECKING:
    from liquid import Environment, Node
    from liquid.expression import Expression


def filter_names(tokens: Iterable[Token]) -> TokenStream:
    fixed: list[Token] = []
    previous = ""
    for token in tokens:
        named = token
        if previous in (TOKEN_PIPE, TOKEN_DPIPE) and token.kind != TOKEN_WORD and token.value.isidentifier():
            named = token._replace(kind=TOKEN_WORD)
        fixed.append(named)
        previous = named.kind
    return TokenStream(iter(fixed))


def expression_tokens(token: Token) -> TokenStream:
    return filter_names(tokenize(token.value, token))


def tag_expression(stream: TokenStream, tag: Token) -> TokenStream:
    """The tokens of the expression after ``tag``, leaving the stream on it as the parser expects."""
    token = stream.current
    if token.kind != TOKEN_EXPRESSION:
        raise LiquidSyntaxError("missing expression", token=tag)
    return expression_tokens(token)


class OutputStatement(Output):
    def parse(self, stream: TokenStream) -> OutputNode:
        token = stream.eat(TOKEN_OUTPUT)
        expression = stream.expect(TOKEN_EXPRESSION)
        return self.node_class(token, FilteredExpression.parse(self.env, expression_tokens(expression)))


class Assign(AssignTag):
    def parse(self, stream: TokenStream) -> AssignNode:
        token = stream.eat(TOKEN_TAG)
        tokens = tag_expression(stream, token)
        name = parse_identifier(self.env, tokens, allow_trailing_question_mark=False)
        tokens.eat(TOKEN_ASSIGN)
        return self.node_class(token, name=name, expression=FilteredExpression.parse(self.env, tokens))


class Echo(EchoTag):
    def parse(self, stream: TokenStream) -> Node:
        token = stream.eat(TOKEN_TAG)
        expression: Expression
        if stream.current.kind == TOKEN_EOF:
            expression = Nil(stream.current)
        else:
            expression = FilteredExpression.parse(self.env, tag_expression(stream, token))
        return self.node_class(token, expression)


def register(env: Environment) -> None:
    env.add_tag(OutputStatement)
    env.add_tag(Assign)
    env.add_tag(Echo)
