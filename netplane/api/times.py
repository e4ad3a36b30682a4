"""The API's two time formats, written once: metav1.Time (RFC 3339 in UTC, to the second: creation
and deletion timestamps, conditions, Events) and MicroTime (to the microsecond: a Lease's acquire
and renew times)."""
from __future__ import annotations

from datetime import datetime, timezone

TIME = "%Y-%m-%dT%H:%M:%SZ"
MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def _utc(when: datetime | float | None) -> datetime:
    if when is None:
        return datetime.now(timezone.utc)
    if isinstance(when, datetime):
        return when.astimezone(timezone.utc)
    return datetime.fromtimestamp(when, timezone.utc)


def time_text(when: datetime | float | None = None) -> str:
    """A metav1.Time: now, or a datetime, or Unix seconds."""
    return _utc(when).strftime(TIME)


def micro_time_text(when: datetime | float | None = None) -> str:
    """A MicroTime: now, or a datetime, or Unix seconds."""
    return _utc(when).strftime(MICRO_TIME)


def parse_time(stamp: str) -> datetime:
    """A metav1.Time (or any RFC 3339 time) as an aware datetime."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def parse_micro_time(stamp: str) -> datetime:
    return datetime.strptime(stamp, MICRO_TIME).replace(tzinfo=timezone.utc)


def age_seconds(stamp: str) -> float:
    """Seconds since a MicroTime."""
    return (datetime.now(timezone.utc) - parse_micro_time(stamp)).total_seconds()
