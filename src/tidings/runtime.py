"""What one Tidings process shares: settings, the database, the clock."""

from __future__ import annotations

from dataclasses import dataclass

from tidings.clock import Clock
from tidings.config import Settings
from tidings.db import Database


@dataclass
class Runtime:
    settings: Settings
    db: Database
    clock: Clock

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        return cls(
            settings=settings,
            db=Database(
                settings.database_url,
                writers=settings.writer_threads,
                batch_size=settings.write_batch_size,
            ),
            clock=Clock(settings.clock_offset_seconds),
        )
