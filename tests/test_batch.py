"""The pure decisions of the Job, CronJob and StatefulSet controllers, the cron schedules, and the
API server's defaults and validation of those kinds."""
from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from netplane.api import cron, defaults, resources, validation, writes
from netplane.controllers import cronjob, job, statefulset
from netplane.controllers.workloads import controller_ref

UTC = timezone.utc
NOW = datetime(2026, 12, 5, 10, 7, 30, tzinfo=UTC)  # a Saturday


# -- cron schedules

@pytest.mark.parametrize("spec, after, expected", [
    ("*/15 9-17 * * mon-fri", NOW, datetime(2026, 12, 7, 9, 0, tzinfo=UTC)),  # Monday morning
    ("0 0 1,15 * 3", NOW, datetime(2026, 12, 9, 0, 0, tzinfo=UTC)),  # both day fields given: either day runs
    ("0 0 1,15 * *", NOW, datetime(2026, 12, 15, 0, 0, tzinfo=UTC)),  # weekday *: the day of month decides
    ("30 2 * feb *", NOW, datetime(2027, 2, 1, 2, 30, tzinfo=UTC)),
    ("5/20 * * * *", NOW, datetime(2026, 12, 5, 10, 25, tzinfo=UTC)),  # N/step runs from N to the end
    ("@hourly", NOW, datetime(2026, 12, 5, 11, 0, tzinfo=UTC)),
    ("@weekly", NOW, datetime(2026, 12, 6, 0, 0, tzinfo=UTC)),
    ("0 0 29 2 *", NOW, datetime(2028, 2, 29, 0, 0, tzinfo=UTC)),
    ("0 0 30 2 *", NOW, None),  # never
])
def test_cron_schedules_name_the_next_time(spec, after, expected):
    assert cron.parse(spec).next_after(after) == expected


def test_cron_schedules_in_a_time_zone_and_every():
    seoul = NOW.astimezone(ZoneInfo("Asia/Seoul"))  # 19:07 there
    assert cron.parse("0 20 * * *").next_after(seoul) == datetime(2026, 12, 5, 11, 0, tzinfo=UTC)
    assert cron.parse("@every 90m").next_after(NOW) == NOW.replace(microsecond=0) + timedelta(minutes=90)
    times = cron.parse("*/5 * * * *").times_between(NOW - timedelta(hours=1), NOW, most=3)
    assert times == [datetime(2026, 12, 5, 9, 55, tzinfo=UTC), datetime(2026, 12, 5, 10, 0, tzinfo=UTC),
                     datetime(2026, 12, 5, 10, 5, tzinfo=UTC)]


@pytest.mark.parametrize("spec, message", [
    ("bad", "expected exactly 5 fields, found 1: [bad]"),
    ("* * * *", "expected exactly 5 fields, found 4: [* * * *]"),
    ("0 0 0 * *", "beginning of range (0) below minimum (1): 0"),
    ("*/0 * * * *", "step of range should be a positive number: */0"),
    ("5-1 * * * *", "beginning of range (5) beyond end of range (1): 5-1"),
    ("x * * * *", 'failed to parse int from x: strconv.Atoi: parsing "x": invalid syntax'),
    ("@fortnightly", "unrecognized descriptor: @fortnightly"),
    ("", "empty spec string"),
])
def test_cron_schedules_refused_in_the_parsers_words(spec, message):
    with pytest.raises(cron.ScheduleError) as err:
        cron.parse(spec)
    assert str(err.value) == message


# -- Jobs

def a_job(**spec) -> dict:
    body = {"template": {"metadata": {"labels": {}}, "spec": {
        "restartPolicy": spec.pop("restartPolicy", "Never"), "containers": [{"name": "main", "image": "busybox"}]}},
        **spec}
    obj = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "work", "namespace": "default"}, "spec": body}
    writes.prepare_create(resources.by_kind("Job"), obj, NOW)
    obj["metadata"]["resourceVersion"] = "1"
    return obj


def a_pod(owner: dict, name: str, phase: str = "Running", exit_code: int | None = None, ready: bool = False,
          index: int | None = None, finished: datetime | None = None, **meta) -> dict:
    statuses = []
    if exit_code is not None:
        stamp = (finished or NOW).strftime("%Y-%m-%dT%H:%M:%SZ")
        statuses = [{"name": "main", "restartCount": 0, "state": {"terminated": {"exitCode": exit_code,
                                                                                 "finishedAt": stamp}}}]
    annotations = {job.INDEX_KEY: str(index)} if index is not None else {}
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "annotations": annotations,
                         "ownerReferences": [controller_ref(owner)], "finalizers": [job.TRACKING_FINALIZER], **meta},
            "spec": {}, "status": {"phase": phase, "containerStatuses": statuses,
                                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_the_api_server_labels_a_jobs_pods_and_selects_them_by_its_uid():
    j = a_job()
    uid = j["metadata"]["uid"]
    assert j["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert j["spec"]["template"]["metadata"]["labels"] == {
        "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": "work",
        "controller-uid": uid, "job-name": "work"}
    assert j["metadata"]["labels"] == j["spec"]["template"]["metadata"]["labels"]  # SetDefaults_Job copies them
    assert (j["spec"]["completions"], j["spec"]["parallelism"], j["spec"]["backoffLimit"]) == (1, 1, 6)
    assert j["spec"]["podReplacementPolicy"] == "TerminatingOrFailed" and j["spec"]["manualSelector"] is False
    queue = a_job(parallelism=3)
    assert "completions" not in queue["spec"] or queue["spec"]["completions"] is None


def test_a_job_runs_parallelism_pods_until_completions_succeed():
    j = a_job(completions=5, parallelism=2)
    assert job.plan(j, [], NOW).create == [None, None]
    running = [a_pod(j, "a"), a_pod(j, "b")]
    assert job.plan(j, running, NOW).create == []
    j["status"] = {"succeeded": 4}
    assert job.plan(j, [a_pod(j, "c")], NOW).create == []  # one left to do, one running
    p = job.plan(j, [], NOW)
    assert p.create == [None] and p.status["active"] == 1
    j["status"] = {"succeeded": 5}
    p = job.plan(j, [], NOW)
    assert [c["type"] for c in p.status["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    assert p.status["completionTime"] == p.status["conditions"][1]["lastTransitionTime"]
    assert p.events == [("Normal", "Completed", "Job completed")]


def test_an_indexed_job_makes_the_missing_indexes_lowest_first():
    j = a_job(completions=5, parallelism=2, completionMode="Indexed")
    j["status"] = {"completedIndexes": "0,2"}
    assert job.plan(j, [a_pod(j, "one", index=1)], NOW).create == [3]
    pod = job.new_pod(j, 3)
    assert pod["metadata"]["generateName"] == "work-3-" and pod["spec"]["hostname"] == "work-3"
    assert pod["metadata"]["labels"][job.INDEX_KEY] == "3" == pod["metadata"]["annotations"][job.INDEX_KEY]
    env = pod["spec"]["containers"][0]["env"][0]
    assert env == {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
        "apiVersion": "v1", "fieldPath": "metadata.labels['batch.kubernetes.io/job-completion-index']"}}}
    assert pod["metadata"]["finalizers"] == [job.TRACKING_FINALIZER]


def test_completed_indexes_are_written_as_upstream_writes_them():
    assert job.format_indexes({0, 1, 2, 4, 6, 7}) == "0-2,4,6,7"
    assert job.parse_indexes("0-2,4,6,7") == {0, 1, 2, 4, 6, 7}
    assert job.format_indexes(set()) == ""


def test_failed_pods_are_replaced_after_a_growing_back_off():
    j = a_job(backoffLimit=6)
    one = [a_pod(j, "f1", "Failed", 1, finished=NOW - timedelta(seconds=4))]
    p = job.plan(j, one, NOW)
    assert p.create == [] and p.wake == pytest.approx(6)  # 10 s after the failure
    assert job.plan(j, one, NOW + timedelta(seconds=7)).create == [None]
    two = one + [a_pod(j, "f2", "Failed", 1, finished=NOW)]
    assert job.plan(j, two, NOW + timedelta(seconds=19)).create == []  # 20 s after the second
    assert job.plan(j, two, NOW + timedelta(seconds=20)).create == [None]
    assert job.backoff(10) == job.BACKOFF_MAX
    success = two + [a_pod(j, "ok", "Succeeded", 0, finished=NOW + timedelta(seconds=1))]
    j2 = a_job(completions=2)
    assert job.plan(j2, [{**p, "metadata": {**p["metadata"], "ownerReferences": [controller_ref(j2)]}}
                         for p in success], NOW + timedelta(seconds=2)).create == [None]  # a success resets it


def test_the_backoff_limit_and_the_deadline_fail_a_job_after_its_pods_stop():
    j = a_job(backoffLimit=1, parallelism=2, completions=4)
    j["status"] = {"failed": 2, "startTime": "2026-12-05T10:00:00Z"}
    running = a_pod(j, "r")
    p = job.plan(j, [running], NOW)
    assert [c["type"] for c in p.status["conditions"]] == ["FailureTarget"] and p.delete == [running]
    j["status"] = p.status
    p = job.plan(j, [], NOW)
    assert [c["type"] for c in p.status["conditions"]] == ["FailureTarget", "Failed"]
    assert p.status["conditions"][1]["reason"] == "BackoffLimitExceeded" and "completionTime" not in p.status
    slow = a_job(activeDeadlineSeconds=60)
    slow["status"] = {"startTime": "2026-12-05T10:07:00Z"}
    assert job.plan(slow, [a_pod(slow, "s")], NOW).status.get("conditions") is None
    assert job.plan(slow, [a_pod(slow, "s")], NOW + timedelta(seconds=30)).status["conditions"][0]["reason"] == \
        "DeadlineExceeded"


def test_on_failure_restarts_count_against_the_backoff_limit():
    j = a_job(backoffLimit=2, restartPolicy="OnFailure")
    restarted = a_pod(j, "r")
    restarted["status"]["containerStatuses"] = [{"name": "main", "restartCount": 2, "state": {"running": {}}}]
    assert job.plan(j, [restarted], NOW).status["conditions"][0]["reason"] == "BackoffLimitExceeded"


def test_pod_failure_policy_rules_match_in_order():
    rules = [{"action": "Ignore", "onExitCodes": {"operator": "In", "values": [7]}},
             {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "NotIn", "values": [1, 7]}},
             {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
    j = a_job(podFailurePolicy={"rules": rules})
    assert job.failure_rule(j, a_pod(j, "a", "Failed", 7))[0] == "Ignore"
    assert job.failure_rule(j, a_pod(j, "b", "Failed", 1)) is None
    assert job.failure_rule(j, a_pod(j, "c", "Failed", 3)) == (
        "FailJob", "Container main for pod default/c failed with exit code 3 matching FailJob rule at index 1")
    evicted = a_pod(j, "d", "Failed")
    evicted["status"]["conditions"].append({"type": "DisruptionTarget", "status": "True"})
    assert job.failure_rule(j, evicted) == ("Ignore", "Pod default/d has condition DisruptionTarget matching "
                                                      "Ignore rule at index 2")
    p = job.plan(j, [a_pod(j, "c", "Failed", 3)], NOW)
    assert p.status["conditions"][0]["reason"] == "PodFailurePolicy"
    assert j["spec"]["podReplacementPolicy"] == "Failed"
    deleting = a_pod(j, "e", deletionTimestamp="2026-12-05T10:07:00Z", deletionGracePeriodSeconds=30)
    assert job.pod_finished(deleting, j) is None  # under podReplacementPolicy Failed: once the kubelet is done
    assert job.pod_finished(deleting, a_job()) == "Failed"


def test_a_suspended_job_stops_its_pods_and_a_resumed_one_starts_again():
    j = a_job(suspend=True)
    running = a_pod(j, "r")
    p = job.plan(j, [running], NOW)
    assert p.release == [running] and p.delete == [] and p.create == [] and "startTime" not in p.status
    assert p.status["conditions"][0] | {"lastProbeTime": 0, "lastTransitionTime": 0} == {
        "type": "Suspended", "status": "True", "reason": "JobSuspended", "message": "Job suspended",
        "lastProbeTime": 0, "lastTransitionTime": 0}
    j["status"], j["spec"]["suspend"] = p.status, False
    p = job.plan(j, [], NOW)
    assert p.create == [None] and p.status["conditions"][0]["reason"] == "JobResumed"
    assert p.events == [("Normal", "Resumed", "Job resumed")]


# -- CronJobs

def a_cronjob(schedule: str = "*/5 * * * *", created: str = "2026-12-05T09:00:00Z", **spec) -> dict:
    obj = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {
        "name": "backup", "namespace": "default", "uid": "cj-uid", "creationTimestamp": created},
        "spec": {"schedule": schedule, "jobTemplate": {"metadata": {"labels": {"app": "backup"}}, "spec": {}}, **spec}}
    defaults.apply(resources.by_kind("CronJob"), obj)
    return obj


def test_a_cronjob_starts_only_the_most_recent_missed_time():
    c = a_cronjob()
    d = cronjob.decide(c, {"lastScheduleTime": "2026-12-05T09:40:00Z"}, NOW)
    assert d.start == datetime(2026, 12, 5, 10, 5, tzinfo=UTC) and d.wake == datetime(2026, 12, 5, 10, 10, tzinfo=UTC)
    made = cronjob.job_for(c, d.start)
    assert made["metadata"]["name"] == f"backup-{int(d.start.timestamp()) // 60}"
    assert made["metadata"]["annotations"] == {cronjob.SCHEDULED_ANNOTATION: "2026-12-05T10:05:00Z"}
    assert made["metadata"]["labels"] == {"app": "backup"} and made["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    assert cronjob.decide(c, {"lastScheduleTime": "2026-12-05T10:05:00Z"}, NOW).start is None
    seoul = a_cronjob(timeZone="Asia/Seoul")
    start = cronjob.decide(seoul, {"lastScheduleTime": "2026-12-05T10:00:00Z"}, NOW).start
    assert cronjob.job_for(seoul, start)["metadata"]["annotations"][cronjob.SCHEDULED_ANNOTATION] == \
        "2026-12-05T19:05:00+09:00"


def test_a_cronjob_respects_its_starting_deadline_and_concurrency_policy():
    assert cronjob.decide(a_cronjob(startingDeadlineSeconds=200), {}, NOW).start == \
        datetime(2026, 12, 5, 10, 5, tzinfo=UTC)  # 150 s ago: within the deadline
    assert cronjob.decide(a_cronjob(startingDeadlineSeconds=60), {}, NOW).start is None  # too late
    tight = a_cronjob(startingDeadlineSeconds=200, schedule="0 * * * *")
    d = cronjob.decide(tight, {}, NOW)
    assert d.start is None  # 10:00 is 450 s ago: outside the deadline, not even considered
    running = {"active": [{"name": "backup-1", "namespace": "default", "uid": "u1"}],
               "lastScheduleTime": "2026-12-05T10:00:00Z"}
    forbid = cronjob.decide(a_cronjob(concurrencyPolicy="Forbid"), running, NOW)
    assert forbid.start is None and forbid.events[0][1] == "JobAlreadyActive"
    replace = cronjob.decide(a_cronjob(concurrencyPolicy="Replace"), running, NOW)
    assert replace.start is not None and replace.replace == running["active"]
    allow = cronjob.decide(a_cronjob(), running, NOW)
    assert allow.start is not None and allow.replace == []
    many = cronjob.decide(a_cronjob("* * * * *", created="2026-12-05T08:00:00Z"), {}, NOW)  # 127 missed
    assert many.events[0][1] == "TooManyMissedTimes" and many.start == datetime(2026, 12, 5, 10, 7, tzinfo=UTC)


def test_a_cronjob_keeps_as_many_finished_jobs_as_its_history_limits_say():
    c = a_cronjob(successfulJobsHistoryLimit=2, failedJobsHistoryLimit=0)

    def finished(name: str, kind: str, start: str | None) -> dict:
        return {"metadata": {"name": name}, "status": {**({"startTime": start} if start else {}),
                                                       "conditions": [{"type": kind, "status": "True"}]}}
    jobs = [finished("a", "Complete", "2026-12-05T10:00:00Z"), finished("b", "Complete", "2026-12-05T09:00:00Z"),
            finished("c", "Complete", None), finished("d", "Failed", "2026-12-05T08:00:00Z"),
            {"metadata": {"name": "e"}, "status": {}}]
    assert [j["metadata"]["name"] for j in cronjob.outdated_history(c, jobs)] == ["b", "d"]


# -- StatefulSets

def a_set(replicas: int = 3, **spec) -> dict:
    obj = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {
        "name": "db", "namespace": "default", "uid": "sts-uid", "generation": 1},
        "spec": {"replicas": replicas, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [
                     {"name": "c", "image": "nginx"}]}}, **spec}}
    defaults.apply(resources.by_kind("StatefulSet"), obj)
    return obj


def member(sts: dict, ordinal: int, revision: str = "r1", healthy: bool = True, **meta) -> dict:
    return {"metadata": {"name": f"db-{ordinal}", "labels": {statefulset.REVISION_LABEL: revision}, **meta},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if healthy else "False"}]}}


def test_a_statefulset_makes_its_pods_one_at_a_time_in_order():
    s = a_set()
    assert statefulset.plan(s, [], "r1", "r1").create == [(0, "r1")]
    assert statefulset.plan(s, [member(s, 0, healthy=False)], "r1", "r1").create == []  # waits for db-0
    assert statefulset.plan(s, [member(s, 0)], "r1", "r1").create == [(1, "r1")]
    parallel = a_set(podManagementPolicy="Parallel")
    assert statefulset.plan(parallel, [], "r1", "r1").create == [(0, "r1"), (1, "r1"), (2, "r1")]
    pod = statefulset.new_pod(s, 2, s["spec"]["template"], "r1")
    assert (pod["metadata"]["name"], pod["spec"]["hostname"], pod["spec"]["subdomain"]) == ("db-2", "db-2", "db")
    assert pod["metadata"]["labels"] == {"app": "db", statefulset.POD_NAME_LABEL: "db-2",
                                         statefulset.POD_INDEX_LABEL: "2", statefulset.REVISION_LABEL: "r1"}


def test_a_statefulset_scales_down_from_the_highest_ordinal_one_at_a_time():
    s = a_set(replicas=1)
    pods = [member(s, i) for i in range(3)]
    assert [p["metadata"]["name"] for p in statefulset.plan(s, pods, "r1", "r1").delete] == ["db-2"]
    going = pods[:2] + [member(s, 2, deletionTimestamp="2026-12-05T10:00:00Z")]
    assert statefulset.plan(s, going, "r1", "r1").delete == []  # db-1 waits until db-2 is gone
    parallel = a_set(replicas=1, podManagementPolicy="Parallel")
    assert [p["metadata"]["name"] for p in statefulset.plan(parallel, pods, "r1", "r1").delete] == ["db-2", "db-1"]


def test_a_rolling_update_goes_from_the_top_down_to_the_partition():
    s = a_set(updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 1}})
    pods = [member(s, i) for i in range(3)]
    p = statefulset.plan(s, pods, "r1", "r2")
    assert [x["metadata"]["name"] for x in p.delete] == ["db-2"]
    pods[2] = member(s, 2, "r2", healthy=False)
    assert statefulset.plan(s, pods, "r1", "r2").delete == []  # the new db-2 is not Ready yet
    pods[2] = member(s, 2, "r2")
    assert [x["metadata"]["name"] for x in statefulset.plan(s, pods, "r1", "r2").delete] == ["db-1"]
    pods[1] = member(s, 1, "r2")
    p = statefulset.plan(s, pods, "r1", "r2")
    assert p.delete == [] and p.status["updatedReplicas"] == 2 and p.status["currentRevision"] == "r1"
    assert statefulset.plan(s, pods[1:], "r1", "r2").create == [(0, "r1")]  # below the partition: the old revision
    on_delete = a_set(updateStrategy={"type": "OnDelete"})
    assert statefulset.plan(on_delete, [member(s, i) for i in range(3)], "r1", "r2").delete == []


# -- validation

def check(kind: str, obj: dict, old: dict | None = None) -> list[str]:
    return [f"{p.field}: {p.body()}" for p in validation.problems(resources.by_kind(kind), obj, old)]


def test_jobs_are_validated_as_upstream_validates_them():
    bad = {"metadata": {"name": "bad"}, "spec": {
        "backoffLimit": -1, "completionMode": "Indexed",
        "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [0, 3, 2]}},
                                       {"action": "Ignore"}, {"action": "FailIndex", "onPodConditions": [
                                           {"type": "DisruptionTarget"}]}]},
        "template": {"spec": {"containers": [{"name": "main", "image": "busybox"}]}}}}
    assert check("Job", bad) == [
        "spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0",
        "spec.completions: Required value: when completion mode is Indexed",
        'spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"',
        "spec.podFailurePolicy.rules[0].onExitCodes.values[0]: Invalid value: 0: must not be 0 for the In operator",
        "spec.podFailurePolicy.rules[0].onExitCodes.values[2]: Invalid value: 2: must be ordered",
        "spec.podFailurePolicy.rules[1]: Invalid value: specifying one of OnExitCodes and OnPodConditions is required",
        'spec.podFailurePolicy.rules[2].action: Invalid value: "FailIndex": requires the backoffLimitPerIndex to be set',
    ]
    on_failure = a_job(restartPolicy="OnFailure", podFailurePolicy={"rules": []})
    assert check("Job", on_failure) == ['spec.template.spec.restartPolicy: Invalid value: "OnFailure": only "Never" '
                                        'is supported when podFailurePolicy is specified']
    picked = {"metadata": {"name": "x"}, "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {
        "metadata": {"labels": {"app": "x"}}, "spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": "busybox"}]}}}}
    assert check("Job", picked) == ['spec.selector: Invalid value: {"matchLabels":{"app":"x"}}: '
                                    '`selector` not auto-generated']
    old = a_job()
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx"
    new["spec"]["parallelism"] = 3
    assert check("Job", new, old) == ["spec.template: Invalid value: core.PodTemplateSpec{...}: field is immutable"]


def test_cronjobs_and_statefulsets_are_validated_as_upstream_validates_them():
    cron_bad = {"metadata": {"name": "c" * 53}, "spec": {
        "schedule": "TZ=UTC 0 * * * *", "timeZone": "Local", "concurrencyPolicy": "Sometimes",
        "jobTemplate": {"spec": {"selector": {}, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}}
    assert check("CronJob", cron_bad) == [
        f'metadata.name: Invalid value: "{"c" * 53}": must be no more than 52 characters',
        'spec.schedule: Invalid value: "TZ=UTC 0 * * * *": cannot use TZ or CRON_TZ in schedule, use timeZone '
        'field instead',
        'spec.timeZone: Invalid value: "Local": timeZone must be an explicit time zone as defined in '
        'https://www.iana.org/time-zones',
        'spec.concurrencyPolicy: Unsupported value: "Sometimes": supported values: "Allow", "Forbid", "Replace"',
        "spec.jobTemplate.spec.selector: Invalid value: {}: `selector` will be auto-generated",
    ]
    s = a_set()
    s["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert check("StatefulSet", s) == ['spec.template.spec.restartPolicy: Unsupported value: "Never": '
                                       'supported values: "Always"']
    old, new = a_set(), a_set()
    new["spec"]["serviceName"] = "other"
    assert check("StatefulSet", new, old) == [
        "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
        "'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"]


def test_a_work_queue_starts_no_pod_after_its_first_success_and_lets_the_others_finish():
    j = a_job(parallelism=3)
    assert job.plan(j, [], NOW).create == [None, None, None]
    j["status"] = {"succeeded": 1}
    running = [a_pod(j, "a"), a_pod(j, "b")]
    p = job.plan(j, running, NOW)
    assert p.create == [] and p.delete == [] and p.status.get("conditions") is None
    p = job.plan(j, [], NOW)
    assert [c["type"] for c in p.status["conditions"]] == ["SuccessCriteriaMet", "Complete"]


def test_surplus_and_duplicate_pods_go_without_counting_as_failures():
    j = a_job(completions=6, parallelism=1)
    two = [a_pod(j, "a", ready=True), a_pod(j, "b")]
    p = job.plan(j, two, NOW)
    assert [x["metadata"]["name"] for x in p.release] == ["b"] and p.delete == []  # parallelism lowered to 1
    indexed = a_job(completions=3, parallelism=3, completionMode="Indexed")
    indexed["status"] = {"completedIndexes": "2"}
    pods = [a_pod(indexed, "first", index=0), a_pod(indexed, "twin", index=0), a_pod(indexed, "done", index=2),
            a_pod(indexed, "stray", index=7)]
    p = job.plan(indexed, pods, NOW)
    assert {x["metadata"]["name"] for x in p.release} == {"twin", "done", "stray"} and p.create == [1]


def test_a_deadline_is_looked_at_again_when_it_ends_and_finish_times_fall_back():
    j = a_job(activeDeadlineSeconds=60)
    j["status"] = {"startTime": "2026-12-05T10:07:00Z"}
    assert job.plan(j, [a_pod(j, "r")], NOW).wake == pytest.approx(30)
    ended = job.plan(j, [a_pod(j, "r")], NOW + timedelta(seconds=30))
    assert ended.wake is None and ended.status["conditions"][0]["type"] == "FailureTarget"
    stuck = a_pod(j, "init", "Failed", creationTimestamp="2026-12-05T09:00:00Z")
    stuck["status"]["initContainerStatuses"] = [{"name": "setup", "state": {"terminated": {
        "exitCode": 1, "finishedAt": "2026-12-05T10:00:00Z"}}}]
    assert job.plan(a_job(), [stuck], NOW).create == [None]  # its init container's end starts the back-off
    never = a_pod(j, "never", "Failed", creationTimestamp="2026-12-05T10:07:25Z")
    assert job.plan(a_job(), [never], NOW).wake == pytest.approx(5)  # from its creation, lacking anything else


def test_a_selector_that_names_another_uid_and_unimplemented_fields_are_refused():
    from netplane.api.errors import ApiError
    stale = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "again", "namespace": "default"},
             "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "old-uid"}},
                      "template": {"metadata": None, "spec": {"restartPolicy": "Never",
                                                              "containers": [{"name": "c", "image": "busybox"}]}}}}
    writes.prepare_create(resources.by_kind("Job"), stale, NOW)
    with pytest.raises(ApiError) as err:
        validation.generated_selector(resources.by_kind("Job"), stale)
    assert err.value.code == 422 and "`selector` not auto-generated" in str(err.value.message)
    per_index = {"metadata": {"name": "p"}, "spec": {"completionMode": "Indexed", "completions": 2,
                                                    "backoffLimitPerIndex": 1, "template": {"spec": {
                                                        "restartPolicy": "Never", "containers": [
                                                            {"name": "c", "image": "busybox"}]}}}}
    assert check("Job", per_index) == ["spec.backoffLimitPerIndex: Forbidden: netplane's Job controller does not "
                                       "implement per-index back-off limits yet"]
