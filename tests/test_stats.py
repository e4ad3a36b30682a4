"""The kubelet's Summary and the metrics API made from it: the pure parts, with readings given in
(the lab test in test_pods_lab.py reads real cgroups through kubectl top)."""
from __future__ import annotations

from netplane.agent.stats import ContainerCgroup, PodCgroup, Stats
from netplane.api import metrics
from netplane.kernel.cgroups import Usage


def usage(cpu_ns: int, memory: int = 8 << 20, limit: int | None = None) -> Usage:
    return Usage(cpu_ns, memory, memory - 1024, memory // 2, 10, 0, limit)


class Readings:
    def __init__(self) -> None:
        self.now, self.values = 1000.0, {}

    def read(self, cgroup: str) -> Usage | None:
        return self.values.get(cgroup)


POD = PodCgroup("default", "web", "u1", "node/podu1", "2026-01-01T00:00:00Z",
                (ContainerCgroup("app", "node/podu1/app", "2026-01-01T00:00:01Z"),))


def test_a_rate_needs_two_samples_a_second_apart_and_starts_again_after_a_restart():
    r = Readings()
    stats = Stats("node-1", "node", 4 << 30, "2026-01-01T00:00:00Z", read=r.read, clock=lambda: r.now)
    r.values = {"node": usage(0), "node/podu1": usage(0), "node/podu1/app": usage(0)}
    first = stats.summary([POD])
    assert "usageNanoCores" not in first["pods"][0]["containers"][0]["cpu"]
    r.now += 0.5  # too soon for a rate
    r.values = {k: usage(100_000_000) for k in r.values}
    assert "usageNanoCores" not in stats.summary([POD])["pods"][0]["cpu"]
    r.now += 1.5  # 2 s after the first sample, 0.5 s of CPU: a quarter of a core
    r.values = {k: usage(500_000_000) for k in r.values}
    second = stats.summary([POD])
    assert second["pods"][0]["containers"][0]["cpu"]["usageNanoCores"] == 250_000_000
    assert second["node"]["cpu"]["usageNanoCores"] == 250_000_000
    assert second["node"]["memory"]["availableBytes"] == (4 << 30) - (8 << 20) + 1024
    r.now += 2  # the container was made again: its counter went back, so it has no rate yet
    r.values["node/podu1/app"] = usage(1000)
    third = stats.summary([POD])
    assert "usageNanoCores" not in third["pods"][0]["containers"][0]["cpu"]
    assert stats.summary([]) and set(stats.points) == {"node"}  # a pod gone is forgotten


def test_metrics_leave_out_a_pod_until_every_container_has_a_rate_and_format_quantities():
    pod = {"metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}}}
    entry = {"containers": [{"name": "a", "cpu": {"time": "t", "usageNanoCores": 1_500_000},
                             "memory": {"workingSetBytes": 3 << 20}},
                            {"name": "b", "cpu": {"time": "t"}, "memory": {"workingSetBytes": 1000}}]}
    assert metrics.pod_metrics(pod, entry) is None
    entry["containers"][1]["cpu"]["usageNanoCores"] = 0
    made = metrics.pod_metrics(pod, entry)
    assert made["containers"] == [{"name": "a", "usage": {"cpu": "1500000n", "memory": "3072Ki"}},
                                  {"name": "b", "usage": {"cpu": "0n", "memory": "1000"}}]
    assert made["metadata"]["labels"] == {"app": "web"} and made["kind"] == "PodMetrics"
