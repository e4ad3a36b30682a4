"""The kubelet's resource stats: the Summary API (``/stats/summary``, stats/v1alpha1) that
metrics-server, and through it ``kubectl top``, reads, made from the pods' cgroups as cAdvisor
makes it.

CPU is cumulative time (``usageCoreNanoSeconds``) and a rate (``usageNanoCores``) between two
samples at least MIN_INTERVAL apart; until a cgroup has two, the rate is left out, as cAdvisor does.
The node agent samples every HOUSEKEEPING seconds (cAdvisor's housekeeping interval) and on each
request. Memory is read fresh: usage, working set (usage less the inactive file cache, what
metrics-server reports), RSS, page faults. An emulated node's own figures are those of its cgroup,
which holds its pods."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from netplane.kernel import cgroups
from netplane.api.times import time_text

MIN_INTERVAL = 1.0  # seconds between two samples a rate is taken from
HOUSEKEEPING = 10.0


@dataclass(frozen=True)
class ContainerCgroup:
    name: str
    cgroup: str
    start_time: str


@dataclass(frozen=True)
class PodCgroup:
    namespace: str
    name: str
    uid: str
    cgroup: str
    start_time: str
    containers: tuple[ContainerCgroup, ...]


class Stats:
    """Summaries of one node; ``read`` is how a cgroup's use is read, ``clock`` the wall clock."""

    def __init__(self, node_name: str, node_cgroup: str, memory_capacity: int, start_time: str,
                 read: Callable[[str], cgroups.Usage | None] = cgroups.usage,
                 clock: Callable[[], float] = time.time) -> None:
        self.node_name, self.node_cgroup = node_name, node_cgroup
        self.memory_capacity, self.start_time = memory_capacity, start_time
        self.read, self.clock = read, clock
        self.points: dict[str, tuple[float, int]] = {}  # the latest sample a rate was taken from
        self.rates: dict[str, int] = {}  # nanocores, by cgroup

    def _cpu(self, cgroup: str, when: float, used: cgroups.Usage) -> dict:
        point = self.points.get(cgroup)
        if point is None or used.cpu_nanoseconds < point[1]:  # new, or made again (a restart)
            self.points[cgroup] = (when, used.cpu_nanoseconds)
            self.rates.pop(cgroup, None)
        elif when - point[0] >= MIN_INTERVAL:
            self.rates[cgroup] = round((used.cpu_nanoseconds - point[1]) / (when - point[0]))
            self.points[cgroup] = (when, used.cpu_nanoseconds)
        cpu = {"time": time_text(when), "usageCoreNanoSeconds": used.cpu_nanoseconds}
        if cgroup in self.rates:
            cpu["usageNanoCores"] = self.rates[cgroup]
        return cpu

    def _memory(self, when: float, used: cgroups.Usage, limit: int | None) -> dict:
        memory = {"time": time_text(when), "usageBytes": used.memory_bytes, "workingSetBytes": used.working_set_bytes,
                  "rssBytes": used.rss_bytes, "pageFaults": used.page_faults,
                  "majorPageFaults": used.major_page_faults}
        if limit is not None:
            memory["availableBytes"] = max(limit - used.working_set_bytes, 0)
        return memory

    def _usage(self, cgroup: str, when: float, limit: int | None = None) -> dict:
        used = self.read(cgroup)
        if used is None:
            return {}
        return {"cpu": self._cpu(cgroup, when, used),
                "memory": self._memory(when, used, used.memory_limit if limit is None else limit)}

    def summary(self, pods: list[PodCgroup]) -> dict:
        """The Summary of the node and these pods; what is not read any more is forgotten."""
        when = self.clock()
        node = {"nodeName": self.node_name, "startTime": self.start_time,
                **self._usage(self.node_cgroup, when, self.memory_capacity)}
        out_pods = []
        for pod in pods:
            entry = {"podRef": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
                     "startTime": pod.start_time,
                     "containers": [{"name": c.name, "startTime": c.start_time, **self._usage(c.cgroup, when)}
                                    for c in pod.containers],
                     **self._usage(pod.cgroup, when)}
            out_pods.append(entry)
        seen = {self.node_cgroup} | {p.cgroup for p in pods} | {c.cgroup for p in pods for c in p.containers}
        self.points = {k: v for k, v in self.points.items() if k in seen}
        self.rates = {k: v for k, v in self.rates.items() if k in seen}
        return {"node": node, "pods": out_pods}
