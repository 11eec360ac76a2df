"""Customer.io's own tags.

URL tags (``unsubscribe_url``, ``unsubscribe``, ``manage_subscription_preferences_url``,
``view_in_browser_url``, ``tracking_consent_url``) write what the delivery's ``Links`` returns, unescaped
(the sender's URLs are trusted), and nothing when rendering without links (previews, validation).

Customer.io's tag arguments are ``name:value`` or ``name=value``. A value is a quoted string, ``true`` /
``false``, a number, or bare text; bare text with a dot or bracket and no ``:`` (``customer.link``) is a
variable, anything else (``https://example.com``, ``pt``, ``roboto``) is literal text.

- ``{% cio_link url:… track:true url_params:true %}`` writes ``links.tracked(url)``, or the URL itself
  (HTML-escaped in HTML mode) with ``track:false`` or without links. ``url_params`` is accepted; adding
  the workspace's URL parameters is the ``Links`` implementation's business.
- ``{% cio_link_id %}`` writes ``links.link_id(key)`` where key is ``url:`` if given, else the source text
  of the enclosing ``href="…`` up to the tag: a stable key for "this link in this template".
- ``{% subscription_topic_name [lang:'pt'] %}`` writes ``links.topic_name(lang)``.
- ``{% generate_uuid %}`` writes a random UUID 4; ``{% random N %}`` an integer from 0 to N-1.
- ``{% render_liquid expr %}`` renders the value of ``expr`` as Liquid against the same context.
- ``{% countdown point:… time:"YYYY-MM-DD hh:mm:ss (GMT)" fg:… bg:… [font weight locale looping
  resolution frames apng] %}`` writes, in HTML mode, ``<img src="ORIGIN/countdown?ARGS" alt=""
  style="display:block;border:0">`` where ORIGIN is the scheme and host of ``links.view_in_browser_url()``
  and ARGS are the tag's arguments URL-encoded in the order written; in text mode just that URL.
"""

from __future__ import annotations

import random
import re
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, TextIO

import markupsafe
from liquid import Node, Tag
from liquid.builtin.expressions import FilteredExpression, tokenize
from liquid.builtin.expressions.logical import is_truthy
from liquid.builtin.expressions.primitive import (
    FalseLiteral,
    IntegerLiteral,
    StringLiteral,
    TrueLiteral,
    parse_primitive,
)
from liquid.exceptions import LiquidError, LiquidSyntaxError
from liquid.limits import to_int
from liquid.stream import TokenStream
from liquid.stringify import to_liquid_string
from liquid.token import TOKEN_EXPRESSION, TOKEN_TAG, Token

from tidings.messaging.liquid.runtime import Links, TidingsContext, tidings_context
from tidings.messaging.liquid.strict import check_output
from tidings.messaging.liquid.syntax import tag_expression

if TYPE_CHECKING:
    from liquid import Environment, RenderContext
    from liquid.expression import Expression

_ARGUMENT = re.compile(
    r"""\s*(?P<name>[A-Za-z_][\w-]*)\s*[:=]\s*(?:"(?P<double>[^"]*)"|'(?P<single>[^']*)'|(?P<bare>[^\s"']+))\s*"""
)
_VARIABLE = re.compile(r"[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*|\[[^\]]+\])+")
_INTEGER = re.compile(r"-?\d+")


def _arguments_token(stream: TokenStream) -> Token | None:
    """Move onto the tag's expression, if it has one, leaving the stream where the parser expects it."""
    if stream.peek.kind == TOKEN_EXPRESSION:
        next(stream)
        return stream.current
    return None


def _no_arguments(stream: TokenStream) -> Token:
    tag = stream.current
    extra = _arguments_token(stream)
    if extra is not None:
        raise LiquidSyntaxError(f"'{tag.value}' takes no arguments", token=extra)
    return tag


def parse_arguments(env: Environment, token: Token | None) -> dict[str, tuple[Expression, Token]]:
    """Customer.io-style ``name:value`` arguments of a tag, by name, each with the token of its value."""
    found: dict[str, tuple[Expression, Token]] = {}
    if token is None:
        return found
    text = token.value
    at = 0
    while at < len(text):
        match = _ARGUMENT.match(text, at)
        if match is None or match.end() == at:
            if text[at:].strip():
                start = token.start_index + at + (len(text[at:]) - len(text[at:].lstrip()))
                raise LiquidSyntaxError(
                    "expected arguments like name:value",
                    token=Token(TOKEN_EXPRESSION, text[at:].strip(), start, token.source),
                )
            break
        group = next(g for g in ("double", "single", "bare") if match.group(g) is not None)
        raw = match.group(group)
        start = token.start_index + match.start(group)
        value_token = Token(TOKEN_EXPRESSION, raw, start, token.source)
        found[match.group("name")] = (
            _argument_value(env, raw, value_token, quoted=group != "bare"),
            value_token,
        )
        at = match.end()
    return found


def _argument_value(env: Environment, raw: str, token: Token, *, quoted: bool) -> Expression:
    if quoted:
        return StringLiteral(token, raw)
    if raw == "true":
        return TrueLiteral(token)
    if raw == "false":
        return FalseLiteral(token)
    if _INTEGER.fullmatch(raw):
        return IntegerLiteral(token, to_int(raw))
    if _VARIABLE.fullmatch(raw) and ":" not in raw:
        stream = TokenStream(tokenize(raw, token))
        expression = parse_primitive(env, stream)
        stream.expect_eos()
        return expression
    return StringLiteral(token, raw)


def _text(value: object) -> str:
    """Text of a value, still Markup when it was written in the template (trusted, left unescaped)."""
    return to_liquid_string(value, autoescape=False)


def _plain(value: object) -> str:
    """Plain text for the ``Links`` implementation, which should not see markupsafe types."""
    return str(to_liquid_string(value, autoescape=False))


def _escaped(context: TidingsContext, text: str) -> str:
    return str(markupsafe.escape(text)) if context.html else text


# -- URL tags -----------------------------------------------------------------------------------------


class LinkNode(Node):
    __slots__ = ("url",)

    def __init__(self, token: Token, url: Callable[[Links], str]) -> None:
        super().__init__(token)
        self.url = url
        self.blank = False

    def __str__(self) -> str:
        return f"{{% {self.token.value} %}}"

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        links = tidings_context(context).links
        return buffer.write(self.url(links)) if links is not None else 0


def _link_tag(tag_name: str, url: Callable[[Links], str]) -> type[Tag]:
    class LinkTag(Tag):
        name = tag_name
        block = False

        def parse(self, stream: TokenStream) -> Node:
            return LinkNode(_no_arguments(stream), url)

    LinkTag.__name__ = f"{tag_name.title().replace('_', '')}Tag"
    return LinkTag


def _unsubscribe(links: Links) -> str:
    return links.unsubscribe_url()


def _preferences(links: Links) -> str:
    return links.subscription_preferences_url()


def _view_in_browser(links: Links) -> str:
    return links.view_in_browser_url()


def _tracking_consent(links: Links) -> str:
    return links.tracking_consent_url()


# -- cio_link, cio_link_id ---------------------------------------------------------------------------


class CioLinkNode(Node):
    __slots__ = ("track", "url")

    def __init__(self, token: Token, url: Expression, track: Expression | None) -> None:
        super().__init__(token)
        self.url = url
        self.track = track
        self.blank = False

    def __str__(self) -> str:
        return f"{{% cio_link url:{self.url} %}}"

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        ours = tidings_context(context)
        url = _text(self.url.evaluate(context))
        track = self.track is None or is_truthy(self.track.evaluate(context))
        if track and ours.links is not None and url:
            return buffer.write(ours.links.tracked(str(url)))
        return buffer.write(_escaped(ours, url))

    def expressions(self) -> Iterable[Expression]:
        yield self.url
        if self.track is not None:
            yield self.track


class CioLinkTag(Tag):
    name = "cio_link"
    block = False

    def parse(self, stream: TokenStream) -> Node:
        tag = stream.current
        arguments = parse_arguments(self.env, _arguments_token(stream))
        _only(arguments, {"url", "track", "url_params"}, tag)
        if "url" not in arguments:
            raise LiquidSyntaxError("cio_link needs url:", token=tag)
        track = arguments.get("track")
        return CioLinkNode(tag, arguments["url"][0], None if track is None else track[0])


class CioLinkIdNode(Node):
    __slots__ = ("key",)

    def __init__(self, token: Token, key: Expression | str) -> None:
        super().__init__(token)
        self.key = key
        self.blank = False

    def __str__(self) -> str:
        return "{% cio_link_id %}"

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        links = tidings_context(context).links
        if links is None:
            return 0
        key = self.key if isinstance(self.key, str) else _plain(self.key.evaluate(context))
        return buffer.write(links.link_id(key))

    def expressions(self) -> Iterable[Expression]:
        if not isinstance(self.key, str):
            yield self.key


_HREF = re.compile(r"""href\s*=\s*(["'])""", re.IGNORECASE)


def _enclosing_href(source: str, tag_index: int) -> str:
    """The text of the ``href`` attribute value the tag sits in, up to the tag; '' when not in one."""
    opening = source.rfind("{%", 0, tag_index)
    end = opening if opening >= 0 else tag_index
    window = source[max(0, end - 4096) : end]
    matches = list(_HREF.finditer(window))
    if not matches:
        return ""
    last = matches[-1]
    value = window[last.end() :]
    return "" if last.group(1) in value or ">" in value else value


class CioLinkIdTag(Tag):
    name = "cio_link_id"
    block = False

    def parse(self, stream: TokenStream) -> Node:
        tag = stream.current
        arguments = parse_arguments(self.env, _arguments_token(stream))
        _only(arguments, {"url"}, tag)
        if "url" in arguments:
            return CioLinkIdNode(tag, arguments["url"][0])
        return CioLinkIdNode(tag, _enclosing_href(tag.source, tag.start_index))


# -- subscription_topic_name, generate_uuid, random -------------------------------------------------


class TopicNameNode(Node):
    __slots__ = ("language",)

    def __init__(self, token: Token, language: Expression | None) -> None:
        super().__init__(token)
        self.language = language
        self.blank = False

    def __str__(self) -> str:
        return "{% subscription_topic_name %}"

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        ours = tidings_context(context)
        if ours.links is None:
            return 0
        language = None if self.language is None else _plain(self.language.evaluate(context)) or None
        return buffer.write(_escaped(ours, ours.links.topic_name(language)))

    def expressions(self) -> Iterable[Expression]:
        if self.language is not None:
            yield self.language


class TopicNameTag(Tag):
    name = "subscription_topic_name"
    block = False

    def parse(self, stream: TokenStream) -> Node:
        tag = stream.current
        arguments = parse_arguments(self.env, _arguments_token(stream))
        _only(arguments, {"lang"}, tag)
        language = arguments.get("lang")
        return TopicNameNode(tag, None if language is None else language[0])


class UuidNode(Node):
    __slots__ = ()

    def __init__(self, token: Token) -> None:
        super().__init__(token)
        self.blank = False

    def __str__(self) -> str:
        return "{% generate_uuid %}"

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        return buffer.write(str(uuid.uuid4()))


class UuidTag(Tag):
    name = "generate_uuid"
    block = False

    def parse(self, stream: TokenStream) -> Node:
        return UuidNode(_no_arguments(stream))


class _ExpressionNode(Node):
    __slots__ = ("expression",)

    def __init__(self, token: Token, expression: Expression) -> None:
        super().__init__(token)
        self.expression = expression
        self.blank = False

    def expressions(self) -> Iterable[Expression]:
        yield self.expression


class RandomNode(_ExpressionNode):
    __slots__ = ()

    def __str__(self) -> str:
        return f"{{% random {self.expression} %}}"

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        value = self.expression.evaluate(context)
        try:
            upper = to_int(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else 0
        except ValueError:
            upper = 0
        if upper < 1:
            raise LiquidError(f"random expects a positive whole number, found {value!r}", token=self.token)
        return buffer.write(str(random.randrange(upper)))


def _expression_tag(tag_name: str, node: type[_ExpressionNode]) -> type[Tag]:
    class ExpressionTag(Tag):
        name = tag_name
        block = False

        def parse(self, stream: TokenStream) -> Node:
            tag = stream.eat(TOKEN_TAG)
            expression = FilteredExpression.parse(self.env, tag_expression(stream, tag))
            return node(tag, expression)

    ExpressionTag.__name__ = f"{tag_name.title().replace('_', '')}Tag"
    return ExpressionTag


# -- render_liquid ------------------------------------------------------------------------------------


class RenderLiquidNode(_ExpressionNode):
    __slots__ = ()

    def __str__(self) -> str:
        return f"{{% render_liquid {self.expression} %}}"

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        value = self.expression.evaluate(context)
        if value is None:
            return 0
        source = _text(value)
        ours = tidings_context(context)
        count = buffer.write(
            ours.render_nested(source, label="in render_liquid", token=self.token, isolated=False)
        )
        check_output(context, buffer, self.token)
        return count


# -- countdown ----------------------------------------------------------------------------------------

_COUNTDOWN_ARGUMENTS = (
    "point",
    "time",
    "fg",
    "bg",
    "apng",
    "font",
    "weight",
    "locale",
    "looping",
    "resolution",
    "frames",
)
_HEX_COLOUR = re.compile(r"#?(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
_COUNTDOWN_TIME = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(?: \(([^)]*)\))?")


class CountdownNode(Node):
    __slots__ = ("query",)

    def __init__(self, token: Token, query: str) -> None:
        super().__init__(token)
        self.query = query
        self.blank = False

    def __str__(self) -> str:
        return "{% countdown %}"

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        ours = tidings_context(context)
        if ours.links is None:
            return 0
        parts = urllib.parse.urlsplit(ours.links.view_in_browser_url())
        url = f"{parts.scheme}://{parts.netloc}/countdown?{self.query}"
        if not ours.html:
            return buffer.write(url)
        return buffer.write(f'<img src="{markupsafe.escape(url)}" alt="" style="display:block;border:0">')


class CountdownTag(Tag):
    name = "countdown"
    block = False

    def parse(self, stream: TokenStream) -> Node:
        tag = stream.current
        arguments = parse_arguments(self.env, _arguments_token(stream))
        _only(arguments, set(_COUNTDOWN_ARGUMENTS), tag)
        values: list[tuple[str, str]] = []
        for name, (expression, token) in arguments.items():
            if not isinstance(expression, (StringLiteral, IntegerLiteral, TrueLiteral, FalseLiteral)):
                raise LiquidSyntaxError(f"countdown {name}: must be written out, not a variable", token=token)
            # As written: "000000" is a colour, not the number 0.
            values.append((name, token.value))
        given = dict(values)
        for required in ("point", "time", "fg", "bg"):
            if required not in given:
                raise LiquidSyntaxError(f"countdown needs {required}:", token=tag)
        _check_countdown(given, arguments)
        return CountdownNode(tag, urllib.parse.urlencode(values))


def _check_countdown(given: dict[str, str], arguments: dict[str, tuple[Expression, Token]]) -> None:
    def refuse(name: str, why: str) -> LiquidSyntaxError:
        return LiquidSyntaxError(f"countdown {name}: {why}", token=arguments[name][1])

    if not given["point"].isdigit():
        raise refuse("point", "expected a font size in points")
    for colour in ("fg", "bg"):
        if not _HEX_COLOUR.fullmatch(given[colour]):
            raise refuse(colour, "expected a hex colour such as f2f6f9")
    time = _COUNTDOWN_TIME.fullmatch(given["time"])
    if time is None:
        raise refuse("time", 'expected "YYYY-MM-DD hh:mm:ss (GMT)"')
    try:
        datetime.strptime(time.group(1), "%Y-%m-%d %H:%M:%S")
    except ValueError as err:
        raise refuse("time", "not a valid date and time") from err
    frames = given.get("frames")
    if frames is not None and not (frames.isdigit() and 1 <= int(frames) <= 60):
        raise refuse("frames", "expected 1 to 60")
    resolution = given.get("resolution")
    if resolution is not None and resolution not in ("S", "M", "H", "D"):
        raise refuse("resolution", "expected S, M, H or D")


def _only(arguments: dict[str, tuple[Expression, Token]], allowed: set[str], tag: Token) -> None:
    for name, (_, token) in arguments.items():
        if name not in allowed:
            raise LiquidSyntaxError(f"'{tag.value}' has no argument '{name}'", token=token)


def register(env: Environment) -> None:
    for name, url in (
        ("unsubscribe_url", _unsubscribe),
        ("unsubscribe", _unsubscribe),
        ("manage_subscription_preferences_url", _preferences),
        ("view_in_browser_url", _view_in_browser),
        ("tracking_consent_url", _tracking_consent),
    ):
        env.add_tag(_link_tag(name, url))
    env.add_tag(CioLinkTag)
    env.add_tag(CioLinkIdTag)
    env.add_tag(TopicNameTag)
    env.add_tag(UuidTag)
    env.add_tag(_expression_tag("random", RandomNode))
    env.add_tag(_expression_tag("render_liquid", RenderLiquidNode))
    env.add_tag(CountdownTag)
