"""Jobs, CronJobs and StatefulSets on a three-node lab, driven by kubectl and the official Python
client, with real pods whose real exit codes decide the outcome."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from conftest import on_labs
from labtools import eventually, in_pod, kubectl, official_client

pytestmark = on_labs("three-nodes")


def job_manifest(name: str, command: str, **spec) -> str:
    template = {"spec": {"restartPolicy": spec.pop("restartPolicy", "Never"),
                         "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", command]}]}}
    return json.dumps({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
                       "spec": {**spec, "template": template}})


def read(lab: str, kind: str, name: str) -> dict:
    return json.loads(kubectl(lab, "get", kind, name, "-o", "json").stdout)


def pods_of(lab: str, selector: str) -> list[dict]:
    return json.loads(kubectl(lab, "get", "pods", "-l", selector, "-o", "json").stdout)["items"]


def events_of(lab: str, name: str, kind: str = "Job") -> list[dict]:
    selector = f"involvedObject.name={name},involvedObject.kind={kind}"
    return json.loads(kubectl(lab, "get", "events", "--field-selector", selector, "-o", "json").stdout)["items"]


def stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def cleanup(lab):
    """Kinds and names a test made, deleted afterwards (their pods with them)."""
    made: list[tuple[str, str]] = []
    yield made
    for kind, name in made:
        kubectl(lab, "delete", kind, name, "--ignore-not-found", "--wait=false", check=False)


def test_a_job_made_by_kubectl_create_completes_and_kubectl_wait_sees_it(lab, cleanup):
    cleanup.append(("job", "hello"))
    kubectl(lab, "create", "job", "hello", "--image=busybox", "--", "sh", "-c", "echo hello from $(hostname)")
    kubectl(lab, "wait", "--for=condition=complete", "job/hello", "--timeout=30s")
    pod = pods_of(lab, "batch.kubernetes.io/job-name=hello")[0]
    assert kubectl(lab, "logs", "job/hello").stdout == f"hello from {pod['metadata']['name']}\n"
    assert pod["status"]["phase"] == "Succeeded" and not pod["metadata"].get("finalizers")  # counted and released
    row = kubectl(lab, "get", "job", "hello", "--no-headers").stdout.split()
    assert row[:3] == ["hello", "Complete", "1/1"]
    from kubernetes import client
    job = client.BatchV1Api(official_client(lab)).read_namespaced_job_status("hello", "default")
    assert job.status.succeeded == 1 and job.status.completion_time is not None
    assert [c.type for c in job.status.conditions] == ["SuccessCriteriaMet", "Complete"]
    assert job.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": job.metadata.uid}
    assert job.spec.backoff_limit == 6 and job.spec.completion_mode == "NonIndexed"


def test_an_indexed_job_runs_each_index_once_with_its_index_and_hostname(lab, cleanup):
    cleanup.append(("job", "squares"))
    kubectl(lab, "apply", "-f", "-", stdin=job_manifest(
        "squares", "echo $((JOB_COMPLETION_INDEX * JOB_COMPLETION_INDEX)) $(hostname)",
        completions=4, parallelism=2, completionMode="Indexed"))
    kubectl(lab, "wait", "--for=condition=complete", "job/squares", "--timeout=40s")
    job = read(lab, "job", "squares")
    assert job["status"]["completedIndexes"] == "0-3" and job["status"]["succeeded"] == 4
    outputs = {}
    for pod in pods_of(lab, "job-name=squares"):
        index = pod["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"]
        assert pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == index
        outputs[int(index)] = kubectl(lab, "logs", pod["metadata"]["name"]).stdout.split()
    assert outputs == {i: [str(i * i), f"squares-{i}"] for i in range(4)}


def test_failures_back_off_then_fail_the_job_at_its_backoff_limit(lab, cleanup):
    cleanup.append(("job", "flaky"))
    kubectl(lab, "apply", "-f", "-", stdin=job_manifest("flaky", "echo trying; exit 3", backoffLimit=1))
    kubectl(lab, "wait", "--for=condition=failed", "job/flaky", "--timeout=40s")
    job = read(lab, "job", "flaky")
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert (failed["reason"], failed["message"]) == ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    assert job["status"]["failed"] == 2 and "completionTime" not in job["status"]
    first, second = sorted(pods_of(lab, "job-name=flaky"), key=lambda p: p["metadata"]["creationTimestamp"])
    ended = stamp(first["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"])
    assert first["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    assert stamp(second["metadata"]["creationTimestamp"]) - ended >= timedelta(seconds=9)  # the 10 s back-off
    eventually(lambda: any(e["reason"] == "BackoffLimitExceeded" and e["type"] == "Warning"
                           for e in events_of(lab, "flaky")))


def test_a_pod_failure_policy_fails_the_job_on_an_exit_code(lab, cleanup):
    cleanup.append(("job", "strict"))
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In",
                                                                "values": [42]}}]}
    kubectl(lab, "apply", "-f", "-", stdin=job_manifest("strict", "exit 42", backoffLimit=5, podFailurePolicy=policy))
    kubectl(lab, "wait", "--for=condition=failed", "job/strict", "--timeout=30s")
    job = read(lab, "job", "strict")
    pod = pods_of(lab, "job-name=strict")[0]["metadata"]["name"]
    assert [c["type"] for c in job["status"]["conditions"]] == ["FailureTarget", "Failed"]
    assert job["status"]["conditions"][1]["reason"] == "PodFailurePolicy"
    assert job["status"]["conditions"][1]["message"] == \
        f"Container main for pod default/{pod} failed with exit code 42 matching FailJob rule at index 0"
    assert job["status"]["failed"] == 1 and job["spec"]["podReplacementPolicy"] == "Failed"


def test_a_deadline_stops_a_running_job_and_a_finished_job_goes_after_its_ttl(lab, cleanup):
    cleanup += [("job", "slow"), ("job", "brief")]
    kubectl(lab, "apply", "-f", "-", stdin=job_manifest("slow", "sleep 60", activeDeadlineSeconds=2))
    kubectl(lab, "apply", "-f", "-", stdin=job_manifest("brief", "true", ttlSecondsAfterFinished=2))
    kubectl(lab, "wait", "--for=condition=failed", "job/slow", "--timeout=30s")
    job = read(lab, "job", "slow")
    failed = job["status"]["conditions"][-1]
    assert (failed["reason"], failed["message"]) == ("DeadlineExceeded", "Job was active longer than specified deadline")
    assert stamp(failed["lastTransitionTime"]) - stamp(job["status"]["startTime"]) < timedelta(seconds=6)
    pod = pods_of(lab, "job-name=slow")
    assert not pod or pod[0]["status"]["phase"] == "Failed"  # its sleep was stopped, not left to run
    assert job["status"]["failed"] == 1 and not job["status"].get("active")
    eventually(lambda: kubectl(lab, "get", "job", "brief", check=False).returncode != 0, timeout=20)
    eventually(lambda: not pods_of(lab, "job-name=brief"), timeout=20)  # its pods went with it


def test_a_suspended_job_runs_nothing_until_it_is_resumed(lab, cleanup):
    cleanup.append(("job", "later"))
    kubectl(lab, "apply", "-f", "-", stdin=job_manifest("later", "echo done", suspend=True))
    eventually(lambda: read(lab, "job", "later")["status"].get("conditions"))
    job = read(lab, "job", "later")
    assert job["status"]["conditions"][0] | {"lastProbeTime": "", "lastTransitionTime": ""} == {
        "type": "Suspended", "status": "True", "reason": "JobSuspended", "message": "Job suspended",
        "lastProbeTime": "", "lastTransitionTime": ""}
    assert kubectl(lab, "get", "job", "later", "--no-headers").stdout.split()[1] == "Suspended"
    assert not pods_of(lab, "job-name=later")
    kubectl(lab, "patch", "job", "later", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    kubectl(lab, "wait", "--for=condition=complete", "job/later", "--timeout=30s")
    resumed = next(c for c in read(lab, "job", "later")["status"]["conditions"] if c["type"] == "Suspended")
    assert (resumed["status"], resumed["reason"]) == ("False", "JobResumed")


def cronjob_manifest(name: str, **spec) -> str:
    template = {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [
        {"name": "main", "image": "busybox", "command": ["sh", "-c", "echo backup done"]}]}}}}
    return json.dumps({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
                       "spec": {"schedule": "*/5 * * * *", "jobTemplate": template, **spec}})


def test_a_cronjob_runs_the_most_recent_missed_time_once_and_keeps_its_history(lab, cleanup):
    """The schedule is every five minutes: made suspended, told (through its status) that it last ran
    twenty minutes ago, and resumed, it starts one Job for the latest of the start times it missed, as
    the controller does after a downtime; `kubectl create job --from` runs it by hand."""
    cleanup.append(("cronjob", "backup"))
    kubectl(lab, "apply", "-f", "-", stdin=cronjob_manifest("backup", suspend=True, timeZone="Asia/Seoul",
                                                           successfulJobsHistoryLimit=1))
    row = kubectl(lab, "get", "cronjob", "backup", "--no-headers").stdout.split()
    assert row[:4] == ["backup", "*/5", "*", "*"] and row[6:9] == ["Asia/Seoul", "True", "0"]
    now = datetime.now(timezone.utc)
    long_ago = (now - timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    kubectl(lab, "patch", "cronjob", "backup", "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"lastScheduleTime": long_ago}}))
    kubectl(lab, "patch", "cronjob", "backup", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    latest = now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0)
    name = f"backup-{int(latest.timestamp()) // 60}"
    eventually(lambda: kubectl(lab, "get", "job", name, check=False).returncode == 0)
    kubectl(lab, "wait", "--for=condition=complete", f"job/{name}", "--timeout=30s")
    jobs = json.loads(kubectl(lab, "get", "jobs", "-o", "json").stdout)["items"]
    assert [j["metadata"]["name"] for j in jobs if j["metadata"]["name"].startswith("backup-")] == [name]
    job = read(lab, "job", name)
    assert job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"] == \
        latest.astimezone(timezone(timedelta(hours=9))).isoformat()
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    assert kubectl(lab, "logs", f"job/{name}").stdout == "backup done\n"
    eventually(lambda: read(lab, "cronjob", "backup")["status"].get("lastSuccessfulTime"))
    cron = read(lab, "cronjob", "backup")
    assert cron["status"]["lastScheduleTime"] == latest.strftime("%Y-%m-%dT%H:%M:%SZ") and not cron["status"].get("active")
    kubectl(lab, "create", "job", "backup-now", "--from=cronjob/backup")
    kubectl(lab, "wait", "--for=condition=complete", "job/backup-now", "--timeout=30s")
    manual = read(lab, "job", "backup-now")
    assert manual["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    # one successful Job is kept: the older one goes
    eventually(lambda: kubectl(lab, "get", "job", name, check=False).returncode != 0, timeout=20)
    from kubernetes import client
    listed = client.BatchV1Api(official_client(lab)).list_namespaced_cron_job("default").items
    assert [(c.metadata.name, c.spec.concurrency_policy, c.spec.failed_jobs_history_limit) for c in listed] == \
        [("backup", "Allow", 1)]


def test_kubectl_create_cronjob_and_invalid_schedules(lab, cleanup):
    cleanup.append(("cronjob", "nightly"))
    kubectl(lab, "create", "cronjob", "nightly", "--image=busybox", "--schedule=@daily", "--", "echo", "hi")
    assert read(lab, "cronjob", "nightly")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] == \
        "OnFailure"
    bad = kubectl(lab, "create", "cronjob", "broken", "--image=busybox", "--schedule=61 * * * *", check=False)
    assert 'spec.schedule: Invalid value: "61 * * * *": end of range (61) above maximum (59): 61' in bad.stderr


def statefulset_manifest(name: str, replicas: int, **spec) -> str:
    container = {"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80, "name": "http"}],
                 "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 1}}
    return json.dumps({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
                       "spec": {"serviceName": name, "replicas": replicas, "selector": {"matchLabels": {"app": name}},
                                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
                                **spec}})


def headless_service(name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                       "spec": {"clusterIP": "None", "selector": {"app": name}, "ports": [{"port": 80}]}})


def ready_since(pod: dict) -> datetime:
    return stamp(next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")["lastTransitionTime"])


def test_a_statefulset_makes_stable_pods_in_order_with_dns_names_and_rolls_from_the_top(lab, cleanup):
    cleanup += [("statefulset", "db"), ("service", "db")]
    kubectl(lab, "apply", "-f", "-", stdin=headless_service("db"))
    kubectl(lab, "apply", "-f", "-", stdin=statefulset_manifest("db", 3))
    kubectl(lab, "rollout", "status", "statefulset/db", "--timeout=60s")
    pods = {p["metadata"]["name"]: p for p in pods_of(lab, "app=db")}
    assert sorted(pods) == ["db-0", "db-1", "db-2"]
    for ordinal in (1, 2):  # each one made only once the one before it was Ready
        assert stamp(pods[f"db-{ordinal}"]["metadata"]["creationTimestamp"]) >= ready_since(pods[f"db-{ordinal - 1}"])
    for name, pod in pods.items():
        assert (pod["spec"]["hostname"], pod["spec"]["subdomain"]) == (name, "db")
        assert pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] == name
        found = eventually(lambda: in_pod(lab, "client", "getent", "hosts", f"{name}.db.default.svc.cluster.local")
                           .stdout.split())
        assert found[0] == pod["status"]["podIP"]
    assert in_pod(lab, "db-1", "hostname").stdout.strip() == "db-1"
    # a partitioned rolling update replaces only the pods from the partition up, highest first
    kubectl(lab, "patch", "statefulset", "db", "--type=merge", "-p",
            '{"spec":{"updateStrategy":{"rollingUpdate":{"partition":1}}}}')
    kubectl(lab, "set", "image", "statefulset/db", "nginx=nginx:1.25")
    kubectl(lab, "rollout", "status", "statefulset/db", "--timeout=60s")
    sts = read(lab, "statefulset", "db")
    assert sts["status"]["updatedReplicas"] == 2 and sts["status"]["currentRevision"] != sts["status"]["updateRevision"]
    images = {p["metadata"]["name"]: p["spec"]["containers"][0]["image"] for p in pods_of(lab, "app=db")}
    assert images == {"db-0": "nginx", "db-1": "nginx:1.25", "db-2": "nginx:1.25"}
    events = events_of(lab, "db", "StatefulSet")
    deleted = [e["message"] for e in sorted(events, key=lambda e: e["lastTimestamp"]) if e["reason"] == "SuccessfulDelete"]
    assert deleted == ["delete Pod db-2 in StatefulSet db successful", "delete Pod db-1 in StatefulSet db successful"]
    history = kubectl(lab, "rollout", "history", "statefulset/db").stdout.split()
    assert history[-4:] == ["1", "<none>", "2", "<none>"]
    kubectl(lab, "rollout", "undo", "statefulset/db")
    eventually(lambda: {p["spec"]["containers"][0]["image"] for p in pods_of(lab, "app=db")} == {"nginx"}, timeout=40)
    # scaled down, the highest ordinals go
    kubectl(lab, "rollout", "status", "statefulset/db", "--timeout=60s")
    kubectl(lab, "scale", "statefulset", "db", "--replicas=1")
    eventually(lambda: sorted(p["metadata"]["name"] for p in pods_of(lab, "app=db")) == ["db-0"], timeout=40)
    from kubernetes import client
    sts = client.AppsV1Api(official_client(lab)).read_namespaced_stateful_set("db", "default")
    assert sts.spec.pod_management_policy == "OrderedReady" and sts.spec.update_strategy.rolling_update.partition == 1


def test_a_parallel_statefulset_makes_all_its_pods_at_once(lab, cleanup):
    cleanup += [("statefulset", "cache"), ("service", "cache")]
    kubectl(lab, "apply", "-f", "-", stdin=headless_service("cache"))
    kubectl(lab, "apply", "-f", "-", stdin=statefulset_manifest("cache", 3, podManagementPolicy="Parallel"))
    kubectl(lab, "rollout", "status", "statefulset/cache", "--timeout=60s")
    pods = {p["metadata"]["name"]: p for p in pods_of(lab, "app=cache")}
    assert sorted(pods) == ["cache-0", "cache-1", "cache-2"]
    assert stamp(pods["cache-2"]["metadata"]["creationTimestamp"]) <= ready_since(pods["cache-0"])
