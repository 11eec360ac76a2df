"""The one clock. Workflow and ingestion code asks it for the time instead of reading the wall clock,
so tests (and the benchmark harness) can move time without sleeping."""

from __future__ import annotations

import time


class Clock:
    def __init__(self, offset_seconds: float = 0.0) -> None:
        self.offset_seconds = offset_seconds

    def now(self) -> float:
        return time.time() + self.offset_seconds

    def now_int(self) -> int:
        return int(self.now())

    def advance(self, seconds: float) -> None:
        self.offset_seconds += seconds
