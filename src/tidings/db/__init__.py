"""Engines, sessions, group commit and migrations."""

from tidings.db.database import Database

__all__ = ["Database"]
