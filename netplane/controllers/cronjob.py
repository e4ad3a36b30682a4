"""The CronJob controller, as kube-controller-manager's (v2): at each time its schedule names (in
its ``timeZone``, UTC without one) a Job of its template, named ``<cronjob>-<minutes since the
epoch>``; ``concurrencyPolicy`` decides what happens while an earlier one still runs; a start missed
by more than ``startingDeadlineSeconds`` is skipped; only the most recent missed time is run; the
finished Jobs beyond the history limits are deleted. ``status.active`` lists the running Jobs it
made, ``lastScheduleTime`` and ``lastSuccessfulTime`` say when it last started one and when one last
succeeded.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from netplane.api import cron
from netplane.api.errors import ApiError
from netplane.api.events import NORMAL, WARNING, Recorder
from netplane.api.loop import Reconciler
from netplane.api.objects import write_status
from netplane.api.times import parse_time, time_text
from netplane.controllers.job import finished_condition
from netplane.controllers.workloads import Written, by_controller, controller_ref, sync_each

SCHEDULED_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
MISSED_LIMIT = 100  # more missed start times than this is worth a warning
REQUEUE_MARGIN = 0.1  # seconds after the scheduled time



@dataclass(frozen=True)
class Due:
    """The start time a pass acts on (None: none is due) and the next one after now."""

    scheduled: datetime | None
    next: datetime | None
    missed: int  # how many start times were missed (the last of them is ``scheduled``)


def zone_of(cronjob: dict) -> ZoneInfo | timezone:
    """The CronJob's time zone (ValueError when it names none that exists)."""
    name = cronjob["spec"].get("timeZone")
    if not name:
        return timezone.utc
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError as err:
        raise ValueError(f"unknown time zone {name}") from err


def due(cronjob: dict, now: datetime) -> Due:
    """The most recent start time not yet met (after lastScheduleTime, or the creation, and within
    startingDeadlineSeconds), and the next one."""
    spec, status = cronjob["spec"], cronjob.get("status") or {}
    schedule = cron.parse(spec["schedule"])
    zone = zone_of(cronjob)
    earliest = parse_time(status.get("lastScheduleTime") or cronjob["metadata"]["creationTimestamp"])
    deadline = spec.get("startingDeadlineSeconds")
    if deadline is not None:
        earliest = max(earliest, now - timedelta(seconds=deadline))
    local_now = now.astimezone(zone)
    times = schedule.times_between(earliest.astimezone(zone), local_now, MISSED_LIMIT + 1)
    following = schedule.next_after(local_now)
    return Due(times[-1] if times else None, following, len(times))


@dataclass(frozen=True)
class Decision:
    """What a pass does: start a Job for ``start`` (after deleting the ``replace``d active ones), say
    ``events``, and look again at ``wake``."""

    start: datetime | None = None
    replace: list[dict] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    wake: datetime | None = None


def decide(cronjob: dict, status: dict, now: datetime) -> Decision:
    """Whether a Job starts now (ValueError for an unknown time zone, cron.ScheduleError for a bad
    schedule)."""
    zone_of(cronjob)
    when = due({**cronjob, "status": status}, now)
    scheduled, wake = when.scheduled, when.next
    if scheduled is None:
        return Decision(wake=wake)
    events = []
    if when.missed > MISSED_LIMIT:
        events.append((WARNING, "TooManyMissedTimes", "too many missed start times. Set or decrease "
                       ".spec.startingDeadlineSeconds or check clock skew"))
    deadline = cronjob["spec"].get("startingDeadlineSeconds")
    if deadline is not None and scheduled + timedelta(seconds=deadline) < now:
        stamp = scheduled.astimezone(timezone.utc).strftime("%a, %d %b %Y %H:%M:%S %z")
        return Decision(events=[*events, (WARNING, "MissSchedule", f"Missed scheduled time to start a job: {stamp}")],
                        wake=wake)
    active = status.get("active") or []
    if any(ref.get("name") == job_name(cronjob, scheduled) for ref in active):
        return Decision(wake=wake)
    policy = cronjob["spec"].get("concurrencyPolicy", "Allow")
    if policy == "Forbid" and active:
        return Decision(events=[*events, (NORMAL, "JobAlreadyActive", "Not starting job because prior execution is "
                                          "running and concurrency policy is Forbid")], wake=wake)
    return Decision(scheduled, list(active) if policy == "Replace" else [], events, wake)


def rfc3339(t: datetime) -> str:
    """As Go writes time.RFC3339: ``Z`` for a zero offset."""
    text = t.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def job_name(cronjob: dict, scheduled: datetime) -> str:
    return f"{cronjob['metadata']['name']}-{int(scheduled.timestamp()) // 60}"


def job_for(cronjob: dict, scheduled: datetime) -> dict:
    """The Job a CronJob starts at ``scheduled``."""
    template = copy.deepcopy(cronjob["spec"].get("jobTemplate") or {})
    meta = template.get("metadata") or {}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            "name": job_name(cronjob, scheduled), "namespace": cronjob["metadata"]["namespace"],
            "labels": dict(meta.get("labels") or {}),
            "annotations": {**(meta.get("annotations") or {}), SCHEDULED_ANNOTATION: rfc3339(scheduled)},
            "ownerReferences": [controller_ref(cronjob)],
        },
        "spec": template.get("spec") or {},
    }


def reference(job: dict) -> dict:
    meta = job["metadata"]
    return {"kind": "Job", "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"],
            "apiVersion": "batch/v1", "resourceVersion": meta.get("resourceVersion", "")}


def outdated_history(cronjob: dict, jobs: list[dict]) -> list[dict]:
    """The finished Jobs beyond successfulJobsHistoryLimit and failedJobsHistoryLimit, oldest first."""
    spec = cronjob["spec"]
    out = []
    for kind, limit in (("Complete", spec.get("successfulJobsHistoryLimit", 3)),
                        ("Failed", spec.get("failedJobsHistoryLimit", 1))):
        done = [j for j in jobs if (finished_condition(j) or {}).get("type") == kind]
        done.sort(key=lambda j: ((j.get("status") or {}).get("startTime") is None,
                                 (j.get("status") or {}).get("startTime") or "", j["metadata"]["name"]))
        out += done[:max(0, len(done) - int(limit if limit is not None else len(done)))]
    return out


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class CronJobController:
    def __init__(self, client, cronjobs, jobs) -> None:
        self.client, self.cronjobs, self.jobs = client, cronjobs, jobs
        self.loop = Reconciler("cronjobs", self.reconcile)
        self.events = Recorder(client, "cronjob-controller")
        self.written = Written()
        cronjobs.add_handler(self.loop.trigger)
        jobs.add_handler(self.loop.trigger)

    async def reconcile(self) -> None:
        jobs = list(self.jobs.cache.values())
        cronjobs = list(self.cronjobs.cache.values())
        self.written.keep_only({c["metadata"]["uid"] for c in cronjobs})
        by_owner = by_controller(jobs, "CronJob")
        await sync_each(self.loop, [self.written.newest(c) for c in cronjobs],
                        lambda cronjob: self._sync(cronjob, by_owner.get(cronjob["metadata"]["uid"], [])))

    async def _sync(self, cronjob: dict, mine: list[dict]) -> None:
        status = await self._track(cronjob, mine)
        if "deletionTimestamp" not in cronjob["metadata"] and not cronjob["spec"].get("suspend"):
            await self._start_due(cronjob, status, mine)
        cronjob = self.written.remember(await write_status(self.client, "cronjobs", cronjob, status, merge=False),
                                        cronjob)
        await self._clean_history(cronjob, mine)

    async def _track(self, cronjob: dict, jobs: list[dict]) -> dict:
        """The status with the active list brought up to date, and the last success."""
        status = copy.deepcopy(cronjob.get("status") or {})
        by_uid = {j["metadata"]["uid"]: j for j in jobs}
        active = []
        for ref in status.get("active") or []:
            job = by_uid.get(ref.get("uid"))
            if job is None and not await self._exists(ref):
                self.events.record(cronjob, NORMAL, "MissingJob", f"Active job went missing: {ref.get('name')}")
                continue
            ended = finished_condition(job) if job is not None else None
            if ended is not None:
                self.events.record(cronjob, NORMAL, "SawCompletedJob",
                                   f"Saw completed job: {ref['name']}, status: {ended['type']}")
                continue
            active.append(ref)
        listed = {ref.get("uid") for ref in active}
        for job in jobs:
            if job["metadata"]["uid"] not in listed and finished_condition(job) is None \
                    and "deletionTimestamp" not in job["metadata"]:
                self.events.record(cronjob, WARNING, "UnexpectedJob",
                                   f"Saw a job that the controller did not create or forgot: {job['metadata']['name']}")
        successes = [j["status"]["completionTime"] for j in jobs
                     if (finished_condition(j) or {}).get("type") == "Complete" and j["status"].get("completionTime")]
        if successes and max(successes) > status.get("lastSuccessfulTime", ""):
            status["lastSuccessfulTime"] = max(successes)
        if active:
            status["active"] = active
        else:
            status.pop("active", None)
        return status

    async def _exists(self, ref: dict) -> bool:
        try:
            live = await self.client.get("jobs", ref["name"], ref["namespace"])
        except ApiError as err:
            if err.code != 404:
                raise
            return False
        return live["metadata"]["uid"] == ref.get("uid")

    async def _start_due(self, cronjob: dict, status: dict, jobs: list[dict]) -> None:
        """Start the Job of the most recent start time that is due, as concurrencyPolicy allows."""
        now = _utc_now()
        spec = cronjob["spec"]
        try:
            d = decide(cronjob, status, now)
        except cron.ScheduleError as err:
            self.events.record(cronjob, WARNING, "UnparseableSchedule", f'unparseable schedule: "{spec["schedule"]}" : {err}')
            return
        except ValueError as err:
            self.events.record(cronjob, WARNING, "UnknownTimeZone", f'invalid timeZone: "{spec["timeZone"]}": {err}')
            return
        if d.wake is not None:
            self.loop.wake_in((d.wake - now).total_seconds() + REQUEUE_MARGIN)
        for type_, reason, message in d.events:
            self.events.record(cronjob, type_, reason, message)
        if d.start is None:
            return
        for ref in d.replace:
            await self._delete(cronjob, ref["name"], ref["namespace"])
        status["active"] = [ref for ref in status.get("active") or [] if ref not in d.replace]
        name = job_name(cronjob, d.start)
        try:
            job = await self.client.create("jobs", job_for(cronjob, d.start))
            self.events.record(cronjob, NORMAL, "SuccessfulCreate", f"Created job {name}")
        except ApiError as err:
            if err.code != 409:
                self.events.record(cronjob, WARNING, "FailedCreate", f"Error creating job: {err}")
                raise
            job = next((j for j in jobs if j["metadata"]["name"] == name), None)
            if job is None:
                return  # not ours, or not in the cache yet: the next pass sees it
        status["active"] = [*status["active"], reference(job)]
        status["lastScheduleTime"] = time_text(d.start)

    async def _clean_history(self, cronjob: dict, jobs: list[dict]) -> None:
        for job in outdated_history(cronjob, [j for j in jobs if "deletionTimestamp" not in j["metadata"]]):
            await self._delete(cronjob, job["metadata"]["name"], job["metadata"]["namespace"])

    async def _delete(self, cronjob: dict, name: str, namespace: str) -> None:
        try:
            await self.client.delete("jobs", name, namespace, propagation_policy="Background")
        except ApiError as err:
            if err.code != 404:
                raise
            return
        self.events.record(cronjob, NORMAL, "SuccessfulDelete", f"Deleted job {name}")

