"""The Job controller, as kube-controller-manager's: pods of the template until enough of them
succeed (``completions``, ``parallelism`` at a time; one per index for ``completionMode: Indexed``),
a failed pod replaced after an exponential back-off, and the Job finished as ``Complete`` or as
``Failed`` (``backoffLimit`` passed, ``activeDeadlineSeconds`` over, a ``podFailurePolicy`` rule).

Finished pods are counted as upstream counts them: each pod carries the ``job-tracking`` finalizer;
a finished one goes into ``status.uncountedTerminatedPods`` first, loses its finalizer, and only
then into ``succeeded`` or ``failed``, so a count survives the pod's deletion and a restart of the
controller. ``plan`` decides everything from the Job, its pods and the time; the controller writes it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from netplane.api.errors import ApiError
from netplane.api.events import NORMAL, WARNING, Recorder
from netplane.api.loop import Reconciler
from netplane.api.objects import ready, write_status
from netplane.api.times import parse_time, time_text
from netplane.controllers.workloads import (Expectations, Written, by_controller, deletion_order, make_and_remove,
                                            pod_from_template, sync_each)

TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"  # the annotation and label of an Indexed Job's pod
INDEX_ENV = "JOB_COMPLETION_INDEX"
BACKOFF_BASE = timedelta(seconds=10)  # DefaultJobPodFailureBackOff
BACKOFF_MAX = timedelta(minutes=10)  # MaxJobPodFailureBackOff
FINISHED = ("Complete", "Failed")
MANAGER = "kubernetes.io/job-controller"  # spec.managedBy of the Jobs this controller runs



@dataclass(frozen=True)
class Outcome:
    """Why a Job ends: its condition type (Complete or Failed), reason and message."""

    type: str
    reason: str
    message: str


@dataclass
class Plan:
    create: list[int | None] = field(default_factory=list)  # the indexes of new pods (None: NonIndexed)
    delete: list[dict] = field(default_factory=list)  # stopped because the Job has its outcome: they count
    release: list[dict] = field(default_factory=list)  # stopped but no failures (suspended, surplus, duplicates)
    status: dict = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    wake: float | None = None  # seconds until a back-off or a deadline is due


def _conditions(job: dict) -> list[dict]:
    return (job.get("status") or {}).get("conditions") or []


def condition(job: dict, kind: str) -> dict | None:
    return next((c for c in _conditions(job) if c.get("type") == kind and c.get("status") == "True"), None)


def finished_condition(job: dict) -> dict | None:
    """The Job's Complete or Failed condition, when it has ended."""
    return next((c for c in _conditions(job) if c.get("type") in FINISHED and c.get("status") == "True"), None)


def index_of(pod: dict) -> int | None:
    text = (pod["metadata"].get("annotations") or {}).get(INDEX_KEY)
    return int(text) if text is not None and text.isdigit() else None


def pod_finished(pod: dict, job: dict) -> str | None:
    """Succeeded or Failed once a pod is done. A pod deleted before it succeeded counts as Failed
    at once, unless the Job replaces only Failed pods: then when the kubelet is done with it."""
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        return phase
    meta = pod["metadata"]
    if "deletionTimestamp" not in meta:
        return None
    if job["spec"].get("podReplacementPolicy") == "Failed" or job["spec"].get("podFailurePolicy"):
        return "Failed" if meta.get("deletionGracePeriodSeconds") == 0 else None
    return "Failed"


def _running(pod: dict) -> bool:
    """Not in a terminal phase (it may be deleting)."""
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _finish_time(pod: dict, now: datetime) -> datetime:
    """When a pod finished, as upstream's back-off reads it: its containers' last finishedAt, else
    when it stopped being Ready, else its deletion, else its creation."""
    status = pod.get("status") or {}
    ends = [(s.get("state") or {}).get("terminated", {}).get("finishedAt")
            for s in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])]
    ends = [parse_time(e) for e in ends if e]
    if ends:
        return max(ends)
    unready = next((c.get("lastTransitionTime") for c in status.get("conditions") or []
                    if c.get("type") == "Ready" and c.get("status") == "False" and c.get("lastTransitionTime")), None)
    stamp = unready or pod["metadata"].get("deletionTimestamp") or pod["metadata"].get("creationTimestamp")
    return parse_time(stamp) if stamp else now


def parse_indexes(text: str) -> set[int]:
    """``1,3-5`` as the set {1, 3, 4, 5}."""
    found: set[int] = set()
    for part in filter(None, (text or "").split(",")):
        low, _, high = part.partition("-")
        if low.isdigit() and (high.isdigit() or not high):  # anything else is not an index a pod had
            found |= set(range(int(low), int(high or low) + 1))
    return found


def format_indexes(indexes: set[int]) -> str:
    """The set {1, 3, 4, 5, 7, 8} as ``1,3-5,7,8`` (status.completedIndexes: runs of three or more as ranges)."""
    runs: list[list[int]] = []
    for i in sorted(indexes):
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a},{b}" if b == a + 1 else f"{a}-{b}" for a, b in runs)


# -- podFailurePolicy

def _exit_codes_match(pod: dict, requirement: dict) -> tuple[str, int] | None:
    """The first container (and its exit code) that ended with a non-zero code the requirement lists."""
    status = pod.get("status") or {}
    for s in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
        ended = (s.get("state") or {}).get("terminated")
        if not ended or not ended.get("exitCode"):
            continue
        if requirement.get("containerName") not in (None, s.get("name")):
            continue
        listed = ended["exitCode"] in (requirement.get("values") or [])
        if listed == (requirement.get("operator") == "In"):
            return s.get("name", ""), ended["exitCode"]
    return None


def _conditions_match(pod: dict, patterns: list[dict]) -> dict | None:
    for pattern in patterns:
        for c in (pod.get("status") or {}).get("conditions") or []:
            if c.get("type") == pattern.get("type") and c.get("status") == pattern.get("status", "True"):
                return c
    return None


def failure_rule(job: dict, pod: dict) -> tuple[str, str] | None:
    """The action of the first podFailurePolicy rule a failed pod matches, and why (None: no rule)."""
    rules = ((job["spec"].get("podFailurePolicy") or {}).get("rules")) or []
    name = f"{pod['metadata'].get('namespace', 'default')}/{pod['metadata']['name']}"
    for i, rule in enumerate(rules):
        action = rule.get("action", "")
        if rule.get("onExitCodes"):
            matched = _exit_codes_match(pod, rule["onExitCodes"])
            if matched:
                return action, (f"Container {matched[0]} for pod {name} failed with exit code {matched[1]} "
                                f"matching {action} rule at index {i}")
        elif rule.get("onPodConditions"):
            found = _conditions_match(pod, rule["onPodConditions"])
            if found:
                return action, f"Pod {name} has condition {found['type']} matching {action} rule at index {i}"
    return None


# -- the plan

def _restarts(pods: list[dict]) -> int:
    return sum(s.get("restartCount", 0) for p in pods for key in ("initContainerStatuses", "containerStatuses")
               for s in (p.get("status") or {}).get(key) or [])


def _fail_job_message(job: dict, pods: list[dict]) -> str | None:
    """Why a failed pod fails the whole Job by a FailJob rule, if one does."""
    for pod in pods:
        if (pod.get("status") or {}).get("phase") == "Failed":
            rule = failure_rule(job, pod)
            if rule is not None and rule[0] == "FailJob":
                return rule[1]
    return None


def _outcome(job: dict, pods: list[dict], succeeded: int, failed: int, indexes: set[int], active: list[dict],
             now: datetime, start: datetime | None) -> Outcome | None:
    spec = job["spec"]
    completions = spec.get("completions")
    fail_job = _fail_job_message(job, pods)
    if fail_job:
        return Outcome("Failed", "PodFailurePolicy", fail_job)
    backoff_limit = int(spec.get("backoffLimit", 6))
    restarts = _restarts(active) if spec["template"]["spec"].get("restartPolicy") == "OnFailure" else 0
    if failed > backoff_limit or (restarts and (restarts > 0 if backoff_limit == 0 else restarts >= backoff_limit)):
        return Outcome("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and start is not None and now - start >= timedelta(seconds=deadline):
        return Outcome("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
    if spec.get("completionMode") == "Indexed":
        done = len(indexes) >= int(completions or 0)
    elif completions is None:
        done = succeeded > 0 and not active
    else:
        done = succeeded >= int(completions)
    return Outcome("Complete", "CompletionsReached", "Reached expected number of succeeded pods") if done else None


def _condition(kind: str, reason: str, message: str, now: datetime, status: str = "True") -> dict:
    stamp = time_text(now)
    return {"type": kind, "status": status, "lastProbeTime": stamp, "lastTransitionTime": stamp,
            "reason": reason, "message": message}


def _set_condition(conditions: list[dict], new: dict) -> list[dict]:
    """The conditions with ``new`` in its type's place (or added), unchanged if it says the same."""
    old = next((c for c in conditions if c["type"] == new["type"]), None)
    if old is not None and (old.get("status"), old.get("reason")) == (new["status"], new["reason"]):
        return conditions
    return [new if c is old else c for c in conditions] if old is not None else [*conditions, new]


def backoff(failures: int) -> timedelta:
    """How long a Job waits before a new pod after ``failures`` failures in a row."""
    if failures <= 0:
        return timedelta(0)
    return min(BACKOFF_BASE * 2 ** (failures - 1), BACKOFF_MAX)


def plan(job: dict, pods: list[dict], now: datetime) -> Plan:
    """What a pass does to a Job whose finished pods are all counted (status.succeeded, failed,
    completedIndexes) and whose ``pods`` are its own."""
    spec, status = job["spec"], copy.deepcopy(job.get("status") or {})
    out = Plan(status=status)
    conditions = list(status.get("conditions") or [])
    live = [p for p in pods if _running(p) and "deletionTimestamp" not in p["metadata"]]
    terminating = [p for p in pods if _running(p) and "deletionTimestamp" in p["metadata"]]
    succeeded, failed = int(status.get("succeeded", 0)), int(status.get("failed", 0))
    indexes = parse_indexes(status.get("completedIndexes", ""))
    ended = finished_condition(job)
    if ended is None and spec.get("suspend"):
        out.release = live
        if not condition(job, "Suspended"):
            conditions = _set_condition(conditions, _condition("Suspended", "JobSuspended", "Job suspended", now))
            out.events.append((NORMAL, "Suspended", "Job suspended"))
        status.pop("startTime", None)
        _report(status, conditions, live, terminating, out, spec)
        return out
    if ended is None and condition(job, "Suspended"):
        conditions = _set_condition(conditions, _condition("Suspended", "JobResumed", "Job resumed", now, "False"))
        out.events.append((NORMAL, "Resumed", "Job resumed"))
    start = parse_time(status["startTime"]) if status.get("startTime") else None
    if ended is None and start is None:
        start = now
        status["startTime"] = time_text(now)
    target = next((c for c in conditions if c["type"] in ("FailureTarget", "SuccessCriteriaMet")
                   and c.get("status") == "True"), None)
    if ended is None and target is None:
        outcome = _outcome(job, pods, succeeded, failed, indexes, live, now, start)
        if outcome is not None:
            kind = "FailureTarget" if outcome.type == "Failed" else "SuccessCriteriaMet"
            target = _condition(kind, outcome.reason, outcome.message, now)
            conditions = _set_condition(conditions, target)
    if ended is None and target is not None:
        out.delete = live  # the Job has its outcome: what still runs is stopped
        if not live and not terminating:
            final = "Failed" if target["type"] == "FailureTarget" else "Complete"
            conditions = _set_condition(conditions, _condition(final, target["reason"], target["message"], now))
            if final == "Complete":
                status["completionTime"] = time_text(now)
                out.events.append((NORMAL, "Completed", "Job completed"))
            else:
                out.events.append((WARNING, target["reason"], target["message"]))
    elif ended is None:
        _more_pods(job, live, terminating, succeeded, indexes, pods, now, out)
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None:  # look again when it is over
            left = (start + timedelta(seconds=deadline) - now).total_seconds()
            out.wake = left if out.wake is None else min(out.wake, left)
    _report(status, conditions, live, terminating, out, spec)
    return out


def _more_pods(job: dict, live: list[dict], terminating: list[dict], succeeded: int, indexes: set[int],
               pods: list[dict], now: datetime, out: Plan) -> None:
    """The pods to create (after the back-off) or delete to reach the wanted number running."""
    spec = job["spec"]
    parallelism, completions = int(spec.get("parallelism", 1)), spec.get("completions")
    busy = len(live) + (len(terminating) if spec.get("podReplacementPolicy") == "Failed" else 0)
    if spec.get("completionMode") == "Indexed":
        running: dict[int | None, dict] = {}
        for pod in live:  # one pod per index; a second one, or one outside the range, goes
            index = index_of(pod)
            if index is None or index >= int(completions) or index in running or index in indexes:
                out.release.append(pod)
            else:
                running[index] = pod
        missing = [i for i in range(int(completions)) if i not in indexes and i not in running]
        busy -= len(out.release)
        room = max(0, min(parallelism, len(missing) + len(running)) - busy)
        wanted: list[int | None] = list(missing[:room])
    else:
        want = parallelism if completions is None else min(parallelism, int(completions) - succeeded)
        if completions is None and succeeded > 0:  # a work queue with one success: the rest finish, none start
            want = len(live)
        if len(live) > max(want, 0):
            out.release = deletion_order(live)[:len(live) - max(want, 0)]
        wanted = [None] * max(0, want - busy)
    if not wanted:
        return
    due = _backoff_due(job, pods, now)
    if due > now:
        out.wake = (due - now).total_seconds()
        return
    out.create = wanted


def _backoff_due(job: dict, pods: list[dict], now: datetime) -> datetime:
    """When a new pod may start: the back-off of the failures since the last success, counted from
    the last failure (a failure a podFailurePolicy rule ignores does not count)."""
    finished = [(_finish_time(p, now), pod_finished(p, job), p) for p in pods if pod_finished(p, job)]
    last_success = max((t for t, how, _ in finished if how == "Succeeded"), default=None)
    failures = [t for t, how, p in finished if how == "Failed" and (last_success is None or t > last_success)
                and (failure_rule(job, p) or ("",))[0] != "Ignore"]
    return max(failures) + backoff(len(failures)) if failures else now


def _report(status: dict, conditions: list[dict], live: list[dict], terminating: list[dict], out: Plan,
            spec: dict) -> None:
    """The status's pod counts and conditions (the counts of finished pods are the accounting's)."""
    deleting = {p["metadata"]["uid"] for p in [*out.delete, *out.release]}
    status["active"] = len([p for p in live if p["metadata"]["uid"] not in deleting]) + len(out.create)
    status["ready"] = sum(ready(p) for p in live if p["metadata"]["uid"] not in deleting)
    status["terminating"] = len(terminating) + len(deleting)
    status.setdefault("uncountedTerminatedPods", {})
    if conditions:
        status["conditions"] = conditions
    if spec.get("completionMode") == "Indexed":
        status.setdefault("completedIndexes", "")
    for key in ("active", "succeeded", "failed"):
        if not status.get(key):
            status.pop(key, None)


# -- the controller

def new_pod(job: dict, index: int | None) -> dict:
    """A pod of the Job's template, carrying the tracking finalizer (and, for an Indexed Job, its
    index: annotation, label, JOB_COMPLETION_INDEX and the hostname ``<job>-<index>``)."""
    template = copy.deepcopy(job["spec"]["template"])
    pod = pod_from_template(job, template)
    pod["metadata"]["finalizers"] = [TRACKING_FINALIZER]
    if index is not None:
        name = job["metadata"]["name"]
        pod["metadata"]["generateName"] = f"{name}-{index}-"
        pod["metadata"]["annotations"][INDEX_KEY] = str(index)
        pod["metadata"]["labels"][INDEX_KEY] = str(index)
        pod["spec"].setdefault("hostname", f"{name}-{index}")
        source = {"fieldRef": {"apiVersion": "v1", "fieldPath": f"metadata.labels['{INDEX_KEY}']"}}
        for key in ("initContainers", "containers"):
            for c in pod["spec"].get(key) or []:
                if not any(e.get("name") == INDEX_ENV for e in c.get("env") or []):
                    c["env"] = [{"name": INDEX_ENV, "valueFrom": source}, *(c.get("env") or [])]
    return pod


def _now() -> datetime:
    return datetime.now(timezone.utc)


class JobController:
    def __init__(self, client, jobs, pods) -> None:
        self.client, self.jobs, self.pods = client, jobs, pods
        self.loop = Reconciler("jobs", self.reconcile)
        self.events = Recorder(client, "job-controller")
        self.expectations = Expectations()
        self.written = Written()
        self.released: set[str] = set()  # pods counted and released whose finalizer the cache still shows
        jobs.add_handler(self.loop.trigger)
        pods.add_handler(self.loop.trigger)

    async def reconcile(self) -> None:
        jobs = {j["metadata"]["uid"]: j for j in self.jobs.cache.values()}
        by_job = by_controller(self.pods.cache.values(), "Job")
        self.released &= {p["metadata"]["uid"] for p in self.pods.cache.values()
                          if TRACKING_FINALIZER in (p["metadata"].get("finalizers") or [])}
        for owner, pods in by_job.items():  # a pod whose Job is gone keeps no finalizer of the Job's
            if owner not in jobs:
                for pod in pods:
                    await self._release(pod)
        self.written.keep_only(set(jobs))
        runs = [job for job in map(self.written.newest, jobs.values())
                if (job["spec"].get("managedBy") or MANAGER) == MANAGER  # not another controller's Job
                and self.expectations.satisfied(job["metadata"]["uid"], self.pods.cache)]
        await sync_each(self.loop, runs, lambda job: self._sync(job, by_job.get(job["metadata"]["uid"], [])))

    async def _sync(self, job: dict, pods: list[dict]) -> None:
        job = await self._account(job, pods)
        if "deletionTimestamp" in job["metadata"]:
            return
        now = _now()
        ended = finished_condition(job)
        if ended is not None:
            await self._expire(job, ended, now)
            return
        p = plan(job, pods, now)
        for pod in p.release:  # not failures (suspended, surplus): released before they go
            await self._release(pod)
        removed = [d for d in [*p.release, *p.delete] if "deletionTimestamp" not in d["metadata"]]
        created = await make_and_remove(self.client, self.events, job, [new_pod(job, i) for i in p.create], removed)
        self.expectations.expect(job["metadata"]["uid"], created, removed)
        for type_, reason, message in p.events:
            self.events.record(job, type_, reason, message)
        await self._write(job, p.status)
        if p.wake is not None:
            self.loop.wake_in(p.wake)

    async def _account(self, job: dict, pods: list[dict]) -> dict:
        """Count the Job's newly finished pods (through uncountedTerminatedPods) and release them;
        a finished Job's are only released."""
        tracked = [p for p in pods if TRACKING_FINALIZER in (p["metadata"].get("finalizers") or [])
                   and p["metadata"]["uid"] not in self.released and pod_finished(p, job)]
        if finished_condition(job) is not None:
            for pod in tracked:
                await self._release(pod)
            return job
        if not tracked and not _uncounted(job):
            return job
        status = copy.deepcopy(job.get("status") or {})
        uncounted = status.setdefault("uncountedTerminatedPods", {})
        for pod in tracked:
            how = pod_finished(pod, job)
            if how == "Failed" and (failure_rule(job, pod) or ("",))[0] == "Ignore":
                continue
            listed = uncounted.setdefault(how.lower(), [])
            if pod["metadata"]["uid"] not in listed:
                listed.append(pod["metadata"]["uid"])
        job = await self._write(job, status)
        for pod in tracked:
            await self._release(pod)
        by_uid = {p["metadata"]["uid"]: p for p in pods}
        status = copy.deepcopy(job.get("status") or {})
        uncounted = status.get("uncountedTerminatedPods") or {}
        indexes = parse_indexes(status.get("completedIndexes", ""))
        for uid in uncounted.get("succeeded") or []:
            status["succeeded"] = int(status.get("succeeded", 0)) + 1
            index = index_of(by_uid[uid]) if uid in by_uid else None
            if index is not None:
                indexes.add(index)
        status["failed"] = int(status.get("failed", 0)) + len(uncounted.get("failed") or [])
        if job["spec"].get("completionMode") == "Indexed":
            status["completedIndexes"] = format_indexes(indexes)
        status["uncountedTerminatedPods"] = {}
        for key in ("succeeded", "failed"):
            if not status.get(key):
                status.pop(key, None)
        return await self._write(job, status)

    async def _write(self, job: dict, status: dict) -> dict:
        return self.written.remember(await write_status(self.client, "jobs", job, status, merge=False), job)

    async def _release(self, pod: dict) -> None:
        """Take the tracking finalizer off (only it: others' finalizers stay)."""
        if TRACKING_FINALIZER not in (pod["metadata"].get("finalizers") or []) or \
                pod["metadata"]["uid"] in self.released:
            return
        try:
            await self.client.patch("pods", pod["metadata"]["name"],
                                    {"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER]}},
                                    pod["metadata"]["namespace"], patch_type="strategic")
        except ApiError as err:
            if err.code != 404:
                raise
        self.released.add(pod["metadata"]["uid"])

    async def _expire(self, job: dict, ended: dict, now: datetime) -> None:
        """The TTL-after-finished controller's part: a finished Job with ttlSecondsAfterFinished
        is deleted (its pods with it) that many seconds after it finished."""
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        finished = parse_time(ended["lastTransitionTime"]) if ended.get("lastTransitionTime") else now
        left = (finished + timedelta(seconds=ttl) - now).total_seconds()
        if left > 0:
            self.loop.wake_in(left)
            return
        try:
            await self.client.delete("jobs", job["metadata"]["name"], job["metadata"]["namespace"],
                                     propagation_policy="Foreground", preconditions={"uid": job["metadata"]["uid"]})
        except ApiError as err:
            if err.code not in (404, 409):  # gone, or another Job of the name now
                raise


def _uncounted(job: dict) -> bool:
    lists = (job.get("status") or {}).get("uncountedTerminatedPods") or {}
    return any(lists.get(k) for k in ("succeeded", "failed"))
