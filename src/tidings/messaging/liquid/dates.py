"""Dates as Customer.io's Liquid sees them: unix seconds, UTC by default, LiquidJS strftime and timezones.

- Inputs: unix seconds (int, float or numeric string), ISO 8601 strings, RFC 2822 strings, ``"now"`` /
  ``"today"``, and datetimes. Strings without an offset are UTC; naive datetimes (python-liquid's ``now``)
  are local time, Python's convention.
- Timezones: IANA names (``America/Los_Angeles``), Customer.io's detailed form (``(GMT-11:00) Hawaii``),
  ``+05:30`` / ``-0800`` / ``UTC+2`` offsets, and numbers, which are minutes *behind* UTC as in LiquidJS
  and Customer.io's latest engine (``360`` is UTC-6, ``-360`` is UTC+6).
- Formatting is done here, not by the C library, so ``%-d``, ``%P``, ``%e``, ``%s``, ``%q`` and friends
  behave the same on every platform and in English, as LiquidJS does.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from liquid.exceptions import FilterArgumentError

# LiquidJS's default when ``date`` is given no format.
DEFAULT_FORMAT = "%A, %B %-e, %Y at %-l:%M %P %z"

_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
_DETAILED = re.compile(r"\(GMT(?:([+-])(\d{1,2}):?(\d{2}))?\)")
_OFFSET = re.compile(r"(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?", re.IGNORECASE)
_DIRECTIVE = re.compile(r"%([-_0^#:]*)(\d*)([a-zA-Z%])")

_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def _from_epoch(seconds: float) -> datetime | None:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def to_datetime(value: object) -> datetime | None:
    """The instant ``value`` stands for, or None when it is not a date."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)):
        return _from_epoch(float(value))
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text in ("now", "today"):
        return datetime.now(UTC)
    if _NUMBER.fullmatch(text):
        if len(text) > 30:
            return None
        return _from_epoch(float(text))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _fixed(sign: str, hours: str, minutes: str | None) -> tzinfo:
    delta = timedelta(hours=int(hours), minutes=int(minutes or 0))
    try:
        return timezone(-delta if sign == "-" else delta)
    except ValueError as err:
        raise FilterArgumentError(f"timezone offset out of range: {sign}{hours}", token=None) from err


def _minutes_behind(minutes: float) -> tzinfo:
    try:
        return timezone(timedelta(minutes=-minutes))
    except (ValueError, OverflowError) as err:
        raise FilterArgumentError(f"timezone offset out of range: {minutes}", token=None) from err


def to_timezone(value: object) -> tzinfo | None:
    """The timezone ``value`` names; None (meaning UTC) for nil or an empty string."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise FilterArgumentError(f"not a timezone: {value!r}", token=None)
    if isinstance(value, (int, float, Decimal)):
        return _minutes_behind(float(value))
    if not isinstance(value, str):
        raise FilterArgumentError(f"not a timezone: {value!r}", token=None)
    text = value.strip()
    if not text:
        return None
    if _NUMBER.fullmatch(text) and len(text) < 12:
        return _minutes_behind(float(text))
    detailed = _DETAILED.match(text)
    if detailed:
        sign, hours, minutes = detailed.groups()
        return UTC if sign is None else _fixed(sign, hours, minutes)
    offset = _OFFSET.fullmatch(text)
    if offset:
        return _fixed(*offset.groups())
    if text.upper() in ("UTC", "GMT", "Z"):
        return UTC
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError) as err:
        raise FilterArgumentError(f"unknown timezone {text!r}", token=None) from err


def ordinal(day: int) -> str:
    if 11 <= day % 100 <= 13:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def _offset(moment: datetime, colon: bool) -> str:
    delta = moment.utcoffset() or timedelta(0)
    total = int(delta.total_seconds()) // 60
    sign = "-" if total < 0 else "+"
    hours, minutes = divmod(abs(total), 60)
    return f"{sign}{hours:02d}:{minutes:02d}" if colon else f"{sign}{hours:02d}{minutes:02d}"


def _hour12(moment: datetime) -> int:
    return moment.hour % 12 or 12


# conversion -> (value of a moment, padding character, padded width)
_NUMERIC: dict[str, tuple[Callable[[datetime], int], str, int]] = {
    "C": (lambda m: m.year // 100, "0", 2),
    "d": (lambda m: m.day, "0", 2),
    "e": (lambda m: m.day, " ", 2),
    "G": (lambda m: m.isocalendar()[0], "0", 4),
    "H": (lambda m: m.hour, "0", 2),
    "I": (_hour12, "0", 2),
    "j": (lambda m: m.timetuple().tm_yday, "0", 3),
    "k": (lambda m: m.hour, " ", 2),
    "l": (_hour12, " ", 2),
    "L": (lambda m: m.microsecond // 1000, "0", 3),
    "m": (lambda m: m.month, "0", 2),
    "M": (lambda m: m.minute, "0", 2),
    "S": (lambda m: m.second, "0", 2),
    "s": (lambda m: int(m.timestamp()), "0", 1),
    "u": (lambda m: m.isoweekday(), "0", 1),
    "U": (lambda m: int(m.strftime("%U")), "0", 2),
    "V": (lambda m: m.isocalendar()[1], "0", 2),
    "w": (lambda m: m.isoweekday() % 7, "0", 1),
    "W": (lambda m: int(m.strftime("%W")), "0", 2),
    "y": (lambda m: m.year % 100, "0", 2),
    "Y": (lambda m: m.year, "0", 4),
}
_TEXT: dict[str, Callable[[datetime], str]] = {
    "a": lambda m: _DAYS[m.weekday()][:3],
    "A": lambda m: _DAYS[m.weekday()],
    "b": lambda m: _MONTHS[m.month - 1][:3],
    "h": lambda m: _MONTHS[m.month - 1][:3],
    "B": lambda m: _MONTHS[m.month - 1],
    "p": lambda m: "AM" if m.hour < 12 else "PM",
    "P": lambda m: "am" if m.hour < 12 else "pm",
    "q": lambda m: ordinal(m.day),
    "Z": lambda m: m.tzname() or "",
    "%": lambda m: "%",
    "n": lambda m: "\n",
    "t": lambda m: "\t",
}
_COMPOUND = {
    "c": "%a %b %e %H:%M:%S %Y",
    "D": "%m/%d/%y",
    "F": "%Y-%m-%d",
    "r": "%I:%M:%S %p",
    "R": "%H:%M",
    "T": "%H:%M:%S",
    "x": "%m/%d/%y",
    "X": "%H:%M:%S",
}


def _field(moment: datetime, conversion: str, flags: str, width: str) -> tuple[str, str, int] | None:
    """(text, padding character, padded width) of one directive; None when it is not one."""
    numeric = _NUMERIC.get(conversion)
    if numeric is not None:
        value, pad, size = numeric
        return str(value(moment)), pad, size
    text = _TEXT.get(conversion)
    if text is not None:
        return text(moment), " ", 0
    if conversion == "N":
        digits = int(width) if width else 9
        return f"{moment.microsecond:06d}000"[:digits].ljust(digits, "0"), "", 0
    if conversion == "z":
        return _offset(moment, ":" in flags), "", 0
    if conversion in _COMPOUND:
        return strftime(moment, _COMPOUND[conversion]), "", 0
    return None


def strftime(moment: datetime, fmt: str) -> str:
    def directive(match: re.Match[str]) -> str:
        flags, width, conversion = match.groups()
        found = _field(moment, conversion, flags, width)
        if found is None:
            return match.group(0)
        text, pad, size = found
        if conversion != "N":
            if width:
                size = int(width)
                pad = pad or " "
            if "-" in flags:
                size = 0
            elif "_" in flags:
                pad = " "
            elif "0" in flags:
                pad = "0"
            if size and len(text) < size:
                text = text.rjust(size, pad or " ")
        if "^" in flags:
            text = text.upper()
        elif "#" in flags:
            text = text.swapcase()
        return text

    return _DIRECTIVE.sub(directive, fmt)


def add_months(moment: datetime, months: int) -> datetime:
    years, month_index = divmod(moment.month - 1 + months, 12)
    year = moment.year + years
    month = month_index + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)
