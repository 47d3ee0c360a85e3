"""Comparing BGP session start times ("since") to detect resets.

BIRD keeps timestamps on a monotonic clock and converts them to wall-clock time when printing, so the same
"since" can print a millisecond apart on two reads. A real reset moves it by the time that passed (at least
the hold-down and reconnect, seconds). Two values within :data:`JITTER` are the same session start.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from datetime import datetime

JITTER = 0.1  # seconds


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.strip())


def resets(before: Mapping[Hashable, str], after: Mapping[Hashable, str]) -> dict[Hashable, tuple[str, str]]:
    """Sessions of ``before`` that were reset (or vanished) in ``after``: key -> (before, after)."""
    changed: dict[Hashable, tuple[str, str]] = {}
    for key, was in before.items():
        now = after.get(key)
        if now is None or abs((_parse(now) - _parse(was)).total_seconds()) > JITTER:
            changed[key] = (was, now or "gone")
    return changed


def assert_no_reset(before: Mapping[Hashable, str], after: Mapping[Hashable, str],
                    message: str = "a BGP session was reset") -> None:
    """Fail naming every session of ``before`` whose start time moved (or that disappeared) in ``after``."""
    changed = resets(before, after)
    assert not changed, f"{message}: {changed}"
