"""Injectable clocks: every "now" of the gateway comes from one of these.

Lease expiry is decided by comparing ``end_time`` with the clock on each query, so a test (or a class that
wants to show expiry without waiting a day) can move time without any background job.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

logger = logging.getLogger(__name__)


class Clock(Protocol):
    """Something that tells the current time as a timezone-aware UTC datetime."""

    def now(self) -> datetime:
        """The current time (UTC, timezone-aware)."""
        ...


class SystemClock:
    """Real time."""

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)


class ManualClock:
    """A clock for in-process tests: starts at a given time and moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The clock's current time."""
        with self._lock:
            return self._now

    def advance(self, **delta: float) -> None:
        """Move the clock forward, e.g. ``advance(hours=2)``."""
        with self._lock:
            self._now += timedelta(**delta)


class OffsetFileClock:
    """Real time plus an offset in seconds read from a file on every call (``--clock-file``).

    A testing and classroom aid, off by default: write ``7200`` into the file and the gateway behaves as
    if two hours had passed. A missing or empty file means no offset; a malformed one is logged and ignored.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def offset(self) -> float:
        """The offset in seconds currently in the file."""
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return 0.0
        if not text:
            return 0.0
        try:
            return float(text)
        except ValueError:
            logger.warning("clock file %s does not hold a number of seconds: %r", self.path, text[:40])
            return 0.0

    def now(self) -> datetime:
        """Real UTC time shifted by the file's offset."""
        return datetime.now(UTC) + timedelta(seconds=self.offset())
