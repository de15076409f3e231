"""The outcome log: one row per completion and the feedback stored against it (SQLite or PostgreSQL)."""

from .db import Database, is_postgres, sqlite_path
from .log import COLUMNS, Outcome, OutcomeLog

__all__ = ["COLUMNS", "Database", "Outcome", "OutcomeLog", "is_postgres", "sqlite_path"]
