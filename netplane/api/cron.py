"""Cron schedules as a CronJob's ``spec.schedule`` gives them (the standard parser of the cron
library kube-controller-manager uses): five fields (minute, hour, day of month, month, day of week)
of lists, ranges, steps, ``*`` and ``?``, month and weekday names, or a descriptor (``@hourly``,
``@daily``, ``@every 90m``, ...). Errors use that parser's words, which the API server shows.

Days match as cron's: when both day fields are restricted, a day matching either runs; when one is
``*``, both must match.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

MONTHS = {name: i + 1 for i, name in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
WEEKDAYS = {name: i for i, name in enumerate("sun mon tue wed thu fri sat".split())}
BOUNDS = ((0, 59, {}), (0, 23, {}), (1, 31, {}), (1, 12, MONTHS), (0, 6, WEEKDAYS))
DESCRIPTORS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
               "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
SEARCH_YEARS = 5  # the library gives up on a schedule that never fires within this many years


class ScheduleError(ValueError):
    """A schedule the parser refuses, in its words."""


@dataclass(frozen=True)
class Schedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool  # day of month was * or ?
    any_weekday: bool
    every: timedelta | None = None  # @every DURATION

    def _day_matches(self, t: datetime) -> bool:
        day, weekday = t.day in self.days, (t.isoweekday() % 7) in self.weekdays
        return day and weekday if self.any_day or self.any_weekday else day or weekday

    def next_after(self, t: datetime) -> datetime | None:
        """The first time the schedule fires strictly after t (in t's zone), None if never."""
        if self.every is not None:
            return t.replace(microsecond=0) + self.every
        t = (t + timedelta(minutes=1)).replace(second=0, microsecond=0)
        limit = t.year + SEARCH_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                t = _first_of_next_month(t)
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + timedelta(days=1)  # wall-clock arithmetic in t's zone
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t = t + timedelta(minutes=1)
            else:
                return t
        return None

    def times_between(self, start: datetime, end: datetime, most: int) -> list[datetime]:
        """The times it fires after start and up to end, at most ``most`` of them (the last ones
        are the ones kept when there are more)."""
        found: list[datetime] = []
        t = self.next_after(start)
        while t is not None and t <= end:
            found.append(t)
            if len(found) > most:
                found.pop(0)
            t = self.next_after(t)
        return found


def _first_of_next_month(t: datetime) -> datetime:
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return t.replace(year=year, month=month, day=1, hour=0, minute=0)


def _number(text: str, names: dict[str, int]) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ScheduleError(f'failed to parse int from {text}: strconv.Atoi: parsing "{text}": invalid syntax')
    value = int(text)
    if value < 0:
        raise ScheduleError(f"negative number ({value}) not allowed: {text}")
    return value


def _range(expr: str, low: int, high: int, names: dict[str, int]) -> tuple[set[int], bool]:
    """One comma-separated term's values, and whether it was * or ?."""
    range_and_step = expr.split("/")
    bounds = range_and_step[0].split("-")
    star = bounds[0] in ("*", "?")
    if len(bounds) > 2:
        raise ScheduleError(f"too many hyphens: {expr}")
    if star:
        start, end = low, high
    else:
        start = _number(bounds[0], names)
        end = _number(bounds[1], names) if len(bounds) == 2 else start
    if len(range_and_step) > 2:
        raise ScheduleError(f"too many slashes: {expr}")
    step = 1
    if len(range_and_step) == 2:
        step = _number(range_and_step[1], {})
        if len(bounds) == 1 and not star:
            end = high  # N/step: from N to the end
    if start < low:
        raise ScheduleError(f"beginning of range ({start}) below minimum ({low}): {expr}")
    if end > high:
        raise ScheduleError(f"end of range ({end}) above maximum ({high}): {expr}")
    if start > end:
        raise ScheduleError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")
    if step == 0:
        raise ScheduleError(f"step of range should be a positive number: {expr}")
    return set(range(start, end + 1, step)), star and step == 1


def _field(text: str, low: int, high: int, names: dict[str, int]) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    star = False
    for term in text.split(","):
        found, was_star = _range(term, low, high, names)
        values |= found
        star = star or was_star
    return frozenset(values), star


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def _duration(text: str) -> timedelta:
    """A Go duration (``90m``, ``1h30m``)."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ScheduleError(f'failed to parse duration {text}: time: invalid duration "{text}"')
    return timedelta(seconds=sum(float(n) * _DURATION_UNITS[u] for n, u in parts))


def parse(spec: str) -> Schedule:
    """The schedule of a five-field spec or a descriptor; ScheduleError says what is wrong."""
    if not spec:
        raise ScheduleError("empty spec string")
    if spec.startswith(("TZ=", "CRON_TZ=")):  # the library reads a zone here; CronJobs refuse it apart
        spec = spec.split(" ", 1)[1].strip() if " " in spec else ""
    if spec.startswith("@every "):
        every = _duration(spec.removeprefix("@every ").strip())
        if every < timedelta(seconds=1):
            every = timedelta(seconds=1)
        return Schedule(frozenset(), frozenset(), frozenset(), frozenset(), frozenset(), True, True, every)
    if spec.startswith("@"):
        if spec not in DESCRIPTORS:
            raise ScheduleError(f"unrecognized descriptor: {spec}")
        spec = DESCRIPTORS[spec]
    fields = spec.split()
    if len(fields) != 5:
        raise ScheduleError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
    (minutes, _), (hours, _), (days, any_day), (months, _), (weekdays, any_weekday) = (
        _field(text, low, high, names) for text, (low, high, names) in zip(fields, BOUNDS))
    return Schedule(minutes, hours, days, months, weekdays, any_day, any_weekday)
