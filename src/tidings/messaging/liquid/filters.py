"""Customer.io's filters beyond Shopify's, on top of python-liquid's standard set.

Where Customer.io's two engines differ, the latest (LiquidJS) wins: ``escape`` only HTML-escapes,
``sha256`` with a key equals ``hmac_sha256``, ``date`` takes a timezone as its second argument (numbers are
minutes behind UTC). Locale formatting (``format_number``, ``currency``) uses Babel / CLDR data.

Expression filters (``find_exp``, ``where_exp``, ``group_by_exp``) parse their expression with
python-liquid's own parser, once per distinct expression, and evaluate it per item like an ``if``
condition (so a missing property is falsy, not an error); each item costs one loop iteration.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import random as random_module
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from datetime import date as date_type
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import markupsafe
from babel import Locale, UnknownLocaleError
from babel.core import get_global
from babel.numbers import format_currency, format_decimal, get_territory_currencies
from liquid import Markup
from liquid.builtin.expressions import BooleanExpression, FilteredExpression
from liquid.exceptions import (
    FilterArgumentError,
    FilterError,
    LiquidError,
    LiquidSyntaxError,
    ResourceLimitError,
)
from liquid.filter import with_context, with_environment
from liquid.token import TOKEN_EXPRESSION, Token
from liquid.undefined import Undefined

from tidings.messaging.liquid import dates
from tidings.messaging.liquid.strict import prepare_expression
from tidings.messaging.liquid.syntax import expression_tokens

if TYPE_CHECKING:
    from liquid import Environment, RenderContext
    from liquid.expression import Expression


# -- coercion ---------------------------------------------------------------------------------------


def _text(value: object) -> str:
    """Plain text of a value; Markup becomes a plain str so that str methods do not escape arguments."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(value: object, name: str) -> Decimal:
    if isinstance(value, bool):
        raise FilterArgumentError(f"{name}: expected a number, found {value!r}", token=None)
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str) and len(value) <= 100:
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            pass
        else:
            if number.is_finite():
                return number
    raise FilterArgumentError(f"{name}: expected a number, found {value!r}", token=None)


def _integer(value: object, name: str) -> int:
    return int(_number(value, name))


def _array(value: object) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, range)):
        return list(value)
    return [value]


def _property(item: object, key: object) -> object:
    if isinstance(item, Mapping):
        return item.get(key)
    if isinstance(item, Sequence) and not isinstance(item, str) and isinstance(key, int):
        try:
            return item[key]
        except IndexError:
            return None
    return None


def _truthy(value: object) -> bool:
    return not (value is None or value is False or isinstance(value, Undefined))


def _html(environment: Environment, text: str) -> str:
    """Already-escaped output: marked safe in HTML mode so autoescape does not escape it twice."""
    return Markup(text) if environment.autoescape else text


# -- strings ----------------------------------------------------------------------------------------


def _as_trusted_as(value: object, text: str) -> str:
    """Text reshaped from trusted HTML (a snippet) stays trusted: reshaping adds no markup."""
    return Markup(text) if isinstance(value, Markup) else text


def titlecase(value: object) -> str:
    return _as_trusted_as(
        value, re.sub(r"(^|\s)(\S)", lambda m: m.group(1) + m.group(2).upper(), _text(value))
    )


def pluralize(value: object, singular: object, plural: object = None) -> str:
    count = _number(value, "pluralize")
    word = _text(singular) if count == 1 else (_text(plural) if plural is not None else f"{_text(singular)}s")
    return f"{_text(value)} {word}"


def slugify(value: object) -> str:
    return re.sub(r"[\W_]+", "-", _text(value).lower()).strip("-")


def number_of_words(value: object) -> int:
    return len(_text(value).split())


def normalize_whitespace(value: object) -> str:
    return _as_trusted_as(value, re.sub(r"\s+", " ", _text(value)).strip())


def array_to_sentence_string(value: object, connector: object = "and") -> str:
    items = [_text(item) for item in _array(value)]
    word = _text(connector)
    if len(items) < 2:
        return "".join(items)
    if len(items) == 2:
        return f"{items[0]} {word} {items[1]}"
    return f"{', '.join(items[:-1])}, {word} {items[-1]}"


def base64_encode(value: object) -> str:
    return base64.b64encode(_text(value).encode()).decode()


def hex_base64(value: object) -> str:
    try:
        raw = bytes.fromhex(_text(value).strip())
    except ValueError as err:
        raise FilterArgumentError("hex_base64: expected a hexadecimal string", token=None) from err
    return base64.b64encode(raw).decode()


def md5(value: object) -> str:
    return hashlib.md5(_text(value).encode(), usedforsecurity=False).hexdigest()


def sha1(value: object) -> str:
    return hashlib.sha1(_text(value).encode(), usedforsecurity=False).hexdigest()


def _hmac(value: object, key: object, algorithm: str) -> str:
    if key is None:
        raise FilterArgumentError(f"hmac_{algorithm}: a key is required", token=None)
    return hmac.new(_text(key).encode(), _text(value).encode(), algorithm).hexdigest()


def sha256(value: object, key: object = None) -> str:
    # Customer.io's latest engine gives sha256 with a key the output of hmac_sha256.
    if key is not None:
        return _hmac(value, key, "sha256")
    return hashlib.sha256(_text(value).encode()).hexdigest()


def hmac_sha1(value: object, key: object = None) -> str:
    return _hmac(value, key, "sha1")


def hmac_sha256(value: object, key: object = None) -> str:
    return _hmac(value, key, "sha256")


@with_environment
def escape(value: object, *, environment: Environment) -> str:
    # Escapes even text already marked safe (a snippet), like LiquidJS; never URL-encodes.
    return _html(environment, str(markupsafe.escape(_text(value))))


@with_environment
def xml_escape(value: object, *, environment: Environment) -> str:
    return _html(environment, html.escape(_text(value), quote=False).replace('"', "&quot;"))


def cgi_escape(value: object) -> str:
    return urllib.parse.quote_plus(_text(value), safe="")


def uri_escape(value: object) -> str:
    return urllib.parse.quote(_text(value), safe="!#$&'()*+,/:;=?@[]~%")


# -- numbers ----------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _locale(name: str | None) -> Locale:
    if not name:
        return Locale("en", "US")
    try:
        return Locale.parse(name.replace("-", "_"))
    except (ValueError, TypeError, UnknownLocaleError) as err:
        raise FilterArgumentError(f"unknown locale {name!r}", token=None) from err


@lru_cache(maxsize=64)
def _default_currency(locale: Locale) -> str:
    territory = locale.territory
    if territory is None:
        likely = get_global("likely_subtags").get(locale.language)
        territory = Locale.parse(likely).territory if likely else None
    currencies = get_territory_currencies(territory) if territory else []
    return currencies[0] if currencies else "USD"


def _locale_arg(value: object) -> Locale:
    return _locale(None if value is None else _text(value))


def format_number(value: object, locale: object = None) -> str:
    return format_decimal(_number(value, "format_number"), locale=_locale_arg(locale))


def _currency_code(locale: Locale, code: object) -> str:
    if code is None or code == "":
        return _default_currency(locale)
    return _text(code).upper()


def currency(value: object, locale: object = None, code: object = None) -> str:
    where = _locale_arg(locale)
    return format_currency(_number(value, "currency"), _currency_code(where, code), locale=where)


def rounded_currency(value: object, locale: object = None, code: object = None) -> str:
    where = _locale_arg(locale)
    number = _number(value, "rounded_currency").quantize(Decimal(1), rounding=ROUND_HALF_UP)
    standard = where.currency_formats["standard"].pattern
    # The locale's own pattern without its fraction digits keeps the symbol's position and spacing.
    whole = re.sub(r"\.[0#]+", "", standard.split(";")[0])
    return format_currency(
        number, _currency_code(where, code), format=whole, locale=where, currency_digits=False
    )


def random(value: object) -> object:
    """A random item of an array, or a random integer from 0 to N-1 for a number N."""
    if isinstance(value, (list, tuple, range)):
        return random_module.choice(value) if len(value) else None
    upper = _integer(value, "random")
    return random_module.randrange(upper) if upper > 0 else 0


# -- dates ------------------------------------------------------------------------------------------


def _moment(value: object, name: str) -> datetime:
    moment = dates.to_datetime(value)
    if moment is None:
        raise FilterArgumentError(f"{name}: expected a date, found {value!r}", token=None)
    return moment


def date(value: object, fmt: object = None, tz: object = None) -> object:
    if value is None:
        return ""
    moment = dates.to_datetime(value)
    if moment is None:
        # As in LiquidJS: what is not a date is output unchanged.
        return value
    zone = dates.to_timezone(tz)
    if zone is not None:
        moment = moment.astimezone(zone)
    text = dates.strftime(moment, _text(fmt) if fmt is not None and fmt != "" else dates.DEFAULT_FORMAT)
    # A format written in the template (a Markup literal in HTML mode) yields trusted output.
    return Markup(text) if isinstance(fmt, Markup) else text


def timezone(value: object, tz: object = None) -> object:
    moment = dates.to_datetime(value)
    if moment is None:
        return value
    zone = dates.to_timezone(tz)
    return moment.astimezone(zone) if zone is not None else moment


def _shift(name: str, step: Callable[[datetime, int], datetime], sign: int) -> Callable[..., int]:
    def shift(value: object, amount: object = 1) -> int:
        moment = _moment(value, name)
        try:
            return int(step(moment, sign * _integer(amount, name)).timestamp())
        except (OverflowError, ValueError) as err:
            raise FilterArgumentError(f"{name}: date out of range", token=None) from err

    shift.__name__ = name
    return shift


def _days(moment: datetime, amount: int) -> datetime:
    return moment + timedelta(days=amount)


def _months(moment: datetime, amount: int) -> datetime:
    return dates.add_months(moment, amount)


def _years(moment: datetime, amount: int) -> datetime:
    return dates.add_months(moment, 12 * amount)


def _stringify_date(value: object, month: str, kind: object, style: object) -> object:
    moment = dates.to_datetime(value)
    if moment is None:
        return value
    if kind == "ordinal":
        day = f"{moment.day}{dates.ordinal(moment.day)}"
        if style == "US":
            return dates.strftime(moment, f"{month} {day}, %Y")
        return dates.strftime(moment, f"{day} {month} %Y")
    return dates.strftime(moment, f"%d {month} %Y")


def date_to_string(value: object, kind: object = None, style: object = None) -> object:
    return _stringify_date(value, "%b", kind, style)


def date_to_long_string(value: object, kind: object = None, style: object = None) -> object:
    return _stringify_date(value, "%B", kind, style)


def date_to_rfc822(value: object) -> object:
    moment = dates.to_datetime(value)
    return value if moment is None else dates.strftime(moment, "%a, %d %b %Y %H:%M:%S %z")


def date_to_xmlschema(value: object) -> object:
    moment = dates.to_datetime(value)
    return value if moment is None else moment.isoformat(timespec="seconds")


# -- arrays -----------------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _compile(env: Environment, source: str, condition: bool) -> Expression:
    """Parse an expression argument once; conditions are lenient like ``if``, keys are strict."""
    token = Token(TOKEN_EXPRESSION, source, 0, source)
    expression: Expression
    try:
        if condition:
            expression = BooleanExpression.parse(env, expression_tokens(token))
        else:
            try:
                expression = FilteredExpression.parse(env, expression_tokens(token))
            except LiquidSyntaxError:
                expression = BooleanExpression.parse(env, expression_tokens(token))
        prepare_expression(expression, env, lenient=condition)
    except LiquidError as err:
        raise FilterArgumentError(f"invalid expression {source!r}: {err.message}", token=None) from err
    return expression


def _each(context: RenderContext, value: object, name: object, source: object, *, condition: bool) -> Any:
    items = _array(value)
    if not isinstance(name, str) or not isinstance(source, str):
        raise FilterArgumentError("expected a variable name and an expression", token=None)
    expression = _compile(context.env, source, condition)
    context.raise_for_loop_limit(len(items))
    namespace: dict[str, object] = {name: None}
    results: list[tuple[object, object]] = []
    try:
        with context.extend(namespace):
            for item in items:
                namespace[name] = item
                results.append((item, expression.evaluate(context)))
    except ResourceLimitError:
        raise
    except LiquidError as err:
        raise FilterError(f"in expression {source!r}: {err.message}", token=None) from err
    return results


@with_context
def where_exp(value: object, name: object, source: object, *, context: RenderContext) -> list[object]:
    return [item for item, hit in _each(context, value, name, source, condition=True) if hit]


@with_context
def find_exp(value: object, name: object, source: object, *, context: RenderContext) -> object:
    return next((item for item, hit in _each(context, value, name, source, condition=True) if hit), None)


def _groups(pairs: list[tuple[object, object]]) -> list[dict[str, object]]:
    groups: list[dict[str, object]] = []
    index: dict[str, dict[str, Any]] = {}
    for item, key in pairs:
        marker = json.dumps(key, sort_keys=True, default=str)
        group = index.get(marker)
        if group is None:
            group = index[marker] = {"name": key, "items": [], "size": 0}
            groups.append(group)
        group["items"].append(item)
        group["size"] += 1
    return groups


def group_by(value: object, key: object) -> list[dict[str, object]]:
    return _groups([(item, _property(item, key)) for item in _array(value)])


@with_context
def group_by_exp(
    value: object, name: object, source: object, *, context: RenderContext
) -> list[dict[str, object]]:
    return _groups(_each(context, value, name, source, condition=False))


def where_not(value: object, key: object, target: object = None) -> list[object]:
    items = _array(value)
    if target is None:
        return [item for item in items if not _truthy(_property(item, key))]
    return [item for item in items if _property(item, key) != target]


def json_array_uniq(value: object, key: object = None) -> list[object]:
    seen: set[str] = set()
    unique: list[object] = []
    for item in _array(value):
        marker = json.dumps(item if key is None else _property(item, key), sort_keys=True, default=str)
        if marker not in seen:
            seen.add(marker)
            unique.append(item)
    return unique


def limit(value: object, count: object) -> list[object]:
    return _array(value)[: max(_integer(count, "limit"), 0)]


def push(value: object, item: object) -> list[object]:
    return [*_array(value), item]


def unshift(value: object, item: object) -> list[object]:
    return [item, *_array(value)]


def pop(value: object, count: object = 1) -> list[object]:
    items = _array(value)
    remove = max(_integer(count, "pop"), 0)
    return items[: len(items) - remove] if remove else items


def shift(value: object, count: object = 1) -> list[object]:
    return _array(value)[max(_integer(count, "shift"), 0) :]


# -- JSON -------------------------------------------------------------------------------------------


def _json_default(value: object) -> object:
    if isinstance(value, (datetime, date_type)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, range):
        return list(value)
    if isinstance(value, Undefined):
        return None
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)


def json_filter(value: object, indent: object = None) -> str:
    spaces = None if indent is None else _integer(indent, "json")
    try:
        if spaces:
            return json.dumps(value, ensure_ascii=False, indent=min(spaces, 16), default=_json_default)
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)
    except (ValueError, RecursionError) as err:
        raise FilterArgumentError(f"json: cannot serialise: {err}", token=None) from err


def to_json(value: object) -> str:
    return json_filter(value)


def from_json(value: object) -> object:
    try:
        return json.loads(_text(value))
    except (ValueError, RecursionError) as err:
        raise FilterArgumentError(f"from_json: invalid JSON: {err}", token=None) from err


FILTERS: dict[str, Callable[..., Any]] = {
    "titlecase": titlecase,
    "pluralize": pluralize,
    "slugify": slugify,
    "array_to_sentence_string": array_to_sentence_string,
    "number_of_words": number_of_words,
    "normalize_whitespace": normalize_whitespace,
    "base64": base64_encode,
    "hex_base64": hex_base64,
    "md5": md5,
    "sha1": sha1,
    "sha256": sha256,
    "hmac_sha1": hmac_sha1,
    "hmac_sha256": hmac_sha256,
    "escape": escape,
    "xml_escape": xml_escape,
    "cgi_escape": cgi_escape,
    "uri_escape": uri_escape,
    "format_number": format_number,
    "currency": currency,
    "rounded_currency": rounded_currency,
    "random": random,
    "date": date,
    "timezone": timezone,
    "add_day": _shift("add_day", _days, 1),
    "add_month": _shift("add_month", _months, 1),
    "add_year": _shift("add_year", _years, 1),
    "subtract_day": _shift("subtract_day", _days, -1),
    "subtract_month": _shift("subtract_month", _months, -1),
    "subtract_year": _shift("subtract_year", _years, -1),
    "date_to_string": date_to_string,
    "date_to_long_string": date_to_long_string,
    "date_to_rfc822": date_to_rfc822,
    "date_to_xmlschema": date_to_xmlschema,
    "find_exp": find_exp,
    "where_exp": where_exp,
    "group_by": group_by,
    "group_by_exp": group_by_exp,
    "where_not": where_not,
    "json_array_uniq": json_array_uniq,
    "limit": limit,
    "push": push,
    "pop": pop,
    "shift": shift,
    "unshift": unshift,
    "to_json": to_json,
    "json": json_filter,
    "from_json": from_json,
}


def register(env: Environment) -> None:
    for name, func in FILTERS.items():
        env.add_filter(name, func)
