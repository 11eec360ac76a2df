"""When each recipient of a newsletter may be sent it: pure functions of the recipient's place in the send
order (or time zone), so the due times do not depend on how fast workers expand or send.

- **Rate limit**: at most ``rate`` messages per ``period`` seconds. Recipient ``i`` goes in period
  ``i // rate``, at the period's start, or (``spread``) ``(i % rate) * period / rate`` seconds into it, so
  sends are evenly spaced. Periods are aligned to the send's start, so any aligned window of one period
  holds at most ``rate`` messages.
- **Ramp** (domain warming): day ``d`` counted from the send's start allows ``floor(start * growth^d)``
  messages (capped by what the rate limit allows in a day). Within a day, the rate limit applies from the
  day's start.
- **Time zone**: ``scheduled_at``'s wall-clock time (in UTC) read in the person's zone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAY = 86400
PERIODS = (60, 3600, 86400)
# Time zones run from UTC-12 to UTC+14: a time-zone send starts expanding this long before scheduled_at.
EARLIEST_OFFSET = 14 * 3600
LATEST_OFFSET = 12 * 3600
_HUGE = 10**15


@dataclass(frozen=True)
class Pace:
    """A newsletter's rate limit and ramp (each optional)."""

    rate: int | None = None
    period: int | None = None
    spread: bool = False
    ramp_start: int | None = None
    ramp_growth: float = 1.0

    @property
    def limited(self) -> bool:
        return self.rate is not None or self.ramp_start is not None

    def _within(self, index: int) -> int:
        """Seconds after a (day's or the send's) start of the ``index``-th message under the rate limit."""
        if self.rate is None or self.period is None:
            return 0
        period, place = divmod(index, self.rate)
        offset = period * self.period
        if self.spread:
            offset += place * self.period // self.rate
        return offset

    def _day_cap(self) -> int:
        if self.rate is None or self.period is None:
            return _HUGE
        return self.rate * (DAY // self.period)

    def _allowance(self, day: int) -> int:
        """Messages the ramp allows on ``day`` (at least 1), capped by the rate limit's daily capacity."""
        assert self.ramp_start is not None
        cap = self._day_cap()
        exponent = math.log(self.ramp_start) + day * math.log(self.ramp_growth)
        if exponent > math.log(_HUGE):
            return cap
        return max(1, min(cap, math.floor(self.ramp_start * self.ramp_growth**day)))

    def offset(self, index: int) -> int:
        """Seconds after the send's start at which the ``index``-th recipient (0-based) may be sent."""
        if self.ramp_start is None:
            return self._within(index)
        day, passed = 0, 0
        while True:
            allowance = self._allowance(day)
            if allowance >= self._day_cap() or self.ramp_growth == 1:
                # Every later day allows the same: the rest is a division.
                skip, place = divmod(index - passed, allowance)
                return (day + skip) * DAY + self._within(place)
            if index < passed + allowance:
                return day * DAY + self._within(index - passed)
            passed += allowance
            day += 1


@lru_cache(maxsize=1024)
def zone_of(name: object) -> ZoneInfo:
    """The zone a ``timezone`` attribute names; UTC when it is missing or not an IANA name."""
    if not isinstance(name, str) or not name or "\x00" in name or len(name) > 64:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return ZoneInfo("UTC")


def local_time(scheduled_at: int, zone_name: object) -> int:
    """``scheduled_at``'s UTC wall-clock time, read in the zone ``zone_name`` (a person's ``timezone``)."""
    wall = datetime.fromtimestamp(scheduled_at, UTC).replace(tzinfo=None)
    return int(wall.replace(tzinfo=zone_of(zone_name)).timestamp())
