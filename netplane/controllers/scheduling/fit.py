"""Where a pod may run and where it had better run, as kube-scheduler's default profile decides it.

The filters run in the default profile's order, and a node that fails one is out for the reasons
that filter gives (NodeResourcesFit may give several): NodeUnschedulable, TaintToleration,
NodeAffinity (nodeSelector and required node affinity), NodePorts, NodeResourcesFit (requests
against allocatable, and the pod count), PodTopologySpread (DoNotSchedule), InterPodAffinity.
The scores favour nodes without PreferNoSchedule taints the pod does not tolerate, with the
preferred node and pod affinities, a lower topology skew (ScheduleAnyway), then the least allocated
(by pod count and requests). ``message`` counts the reasons as FailedScheduling events say them.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from netplane.api import objects
from netplane.api.quantity import parse as quantity
from netplane.controllers.scheduling import taints as tt

UNSCHEDULABLE = "node(s) were unschedulable"
NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
PORTS = "node(s) didn't have free ports for the requested pod ports"
SPREAD = "node(s) didn't match pod topology spread constraints"
SPREAD_LABEL = "node(s) didn't match pod topology spread constraints (missing required label)"
AFFINITY = "node(s) didn't match pod affinity rules"
ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
RESOURCES = ("cpu", "memory", "ephemeral-storage")
# a pod with no request is counted as this much when nodes are compared (upstream's non-zero defaults)
DEFAULT_REQUESTS = {"cpu": 0.1, "memory": 200 * 2**20}


class Cluster:
    """What the scheduler sees: the nodes, the pods bound to them (not finished), namespace labels;
    indexed by node once, as each pod is looked at against every node."""

    def __init__(self, nodes: list[dict], pods: list[dict],
                 namespace_labels: dict[str, dict[str, str]] | None = None) -> None:
        self.nodes, self.pods, self.namespace_labels = nodes, [], namespace_labels or {}
        self._by_name = {n["metadata"]["name"]: n for n in nodes}
        self._on: dict[str | None, list[dict]] = {}
        self._used: dict[str, Counter] = {}  # node -> its pods' requests, and their number, once asked
        for pod in pods:
            self.add(pod)

    def add(self, pod: dict) -> None:
        """A pod bound (or held) on its node."""
        self.pods.append(pod)
        node = pod["spec"].get("nodeName")
        self._on.setdefault(node, []).append(pod)
        if node in self._used:
            self._used[node].update({**requests(pod), "pods": 1})

    def used(self, node: str) -> Counter:
        """What the pods on a node ask for: each resource's requests summed, and ``pods``."""
        if node not in self._used:
            total: Counter = Counter()
            for pod in self.on(node):
                total.update({**requests(pod), "pods": 1})
            self._used[node] = total
        return self._used[node]

    def on(self, node: str) -> list[dict]:
        return self._on.get(node, [])

    def node(self, name: str | None) -> dict | None:
        return self._by_name.get(name) if name else None


@dataclass(frozen=True)
class Verdict:
    """Why a node cannot take a pod; ``preemptible``: removing lower-priority pods could help."""

    reasons: tuple[str, ...]
    preemptible: bool


def requests(pod: dict) -> dict[str, float]:
    """What a pod asks of a node: its containers' requests summed (an init container's, if larger,
    as it runs alone), plus its overhead."""
    spec = pod.get("spec") or {}

    def asked(c: dict) -> dict[str, float]:
        found = (c.get("resources") or {}).get("requests") or {}
        return {name: quantity(found[name]) for name in RESOURCES if name in found}
    total: dict[str, float] = Counter()
    for c in spec.get("containers") or []:
        total.update(asked(c))
    for c in spec.get("initContainers") or []:
        for name, value in asked(c).items():
            total[name] = max(total.get(name, 0), value)
    for name, value in (spec.get("overhead") or {}).items():
        if name in RESOURCES:
            total[name] = total.get(name, 0) + quantity(value)
    return dict(total)


def _allocatable(node: dict) -> dict[str, float]:
    found = node.get("status", {}).get("allocatable") or {}
    return {name: quantity(value) for name, value in found.items() if name in (*RESOURCES, "pods")}


def _free(node: dict, cluster: Cluster) -> dict[str, float]:
    """What is left of each resource the node reports (one it does not report is not limited)."""
    used = cluster.used(node["metadata"]["name"])
    return {name: value - used.get(name, 0) for name, value in _allocatable(node).items()}


def resource_reasons(pod: dict, node: dict, cluster: Cluster) -> list[str]:
    free = _free(node, cluster)
    out = ["Too many pods"] if free.get("pods", 1) < 1 else []
    for name, value in sorted(requests(pod).items()):
        if name in free and value > 0 and value > free[name]:
            out.append(f"Insufficient {name}")
    return out


def _expression_matches(expr: dict, labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator"), expr.get("values") or []
    if op in ("Gt", "Lt"):
        try:
            have, want = int(labels[key]), int(values[0])
        except (KeyError, ValueError, IndexError):
            return False
        return have > want if op == "Gt" else have < want
    return {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
            "Exists": key in labels, "DoesNotExist": key not in labels}.get(op, False)


def node_term_matches(term: dict, node: dict) -> bool:
    """A NodeSelectorTerm: every matchExpressions (on labels) and matchFields (metadata.name) entry."""
    exprs, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not exprs and not fields:
        return False
    labels = node["metadata"].get("labels") or {}
    return all(_expression_matches(e, labels) for e in exprs) and \
        all(_expression_matches(f, {"metadata.name": node["metadata"]["name"]}) for f in fields)


def node_affinity_fits(pod: dict, node: dict) -> bool:
    """nodeSelector and requiredDuringSchedulingIgnoredDuringExecution (its terms ORed)."""
    spec = pod.get("spec") or {}
    if not objects.selects(spec.get("nodeSelector") or {}, node["metadata"].get("labels") or {}):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")
    return required is None or any(node_term_matches(t, node) for t in required.get("nodeSelectorTerms") or [])


def _host_ports(pod: dict) -> set[tuple[str, int]]:
    return {(p.get("protocol", "TCP"), p["hostPort"]) for c in pod.get("spec", {}).get("containers") or []
            for p in c.get("ports") or [] if p.get("hostPort")}


def _term_pods(term: dict, owner: dict, cluster: Cluster) -> list[dict]:
    """The pods a pod (anti-)affinity term selects: its labelSelector, in its namespaces (the owner's
    when neither namespaces nor namespaceSelector is given)."""
    namespaces = set(term.get("namespaces") or [])
    selector = term.get("namespaceSelector")
    if not namespaces and selector is None:
        namespaces = {owner["metadata"].get("namespace", "default")}

    def in_scope(ns: str) -> bool:
        return ns in namespaces or (selector is not None and (
            selector == {} or objects.matches(selector, cluster.namespace_labels.get(ns, {}))))
    return [p for p in cluster.pods if in_scope(p["metadata"].get("namespace", "default"))
            and objects.matches(term.get("labelSelector"), p["metadata"].get("labels") or {})]


def _term_selects(term: dict, owner: dict, pod: dict, cluster: Cluster) -> bool:
    """Whether an (anti-)affinity term of ``owner`` selects ``pod``."""
    return bool(_term_pods(term, owner, Cluster([], [pod], cluster.namespace_labels)))


def _domain(node: dict | None, key: str) -> str | None:
    return None if node is None else (node["metadata"].get("labels") or {}).get(key)


def _affinity_terms(pod: dict, kind: str, mode: str = "required") -> list:
    rules = ((pod.get("spec") or {}).get("affinity") or {}).get(kind) or {}
    return rules.get(f"{mode}DuringSchedulingIgnoredDuringExecution") or []


def inter_pod_reasons(pod: dict, node: dict, cluster: Cluster) -> list[str]:
    for term in _affinity_terms(pod, "podAffinity"):
        key = term.get("topologyKey", "")
        matched = _term_pods(term, pod, cluster)
        here = _domain(node, key)
        if here is None or not any(_domain(cluster.node(p["spec"].get("nodeName")), key) == here
                                   for p in matched):
            itself = objects.matches(term.get("labelSelector"), pod["metadata"].get("labels") or {})
            if matched or not itself or here is None:  # the first of a group may go anywhere
                return [AFFINITY]
    for term in _affinity_terms(pod, "podAntiAffinity"):
        key = term.get("topologyKey", "")
        here = _domain(node, key)
        if here is not None and any(_domain(cluster.node(p["spec"].get("nodeName")), key) == here
                                    for p in _term_pods(term, pod, cluster)):
            return [ANTI_AFFINITY]
    for other in cluster.pods:
        for term in _affinity_terms(other, "podAntiAffinity"):
            key = term.get("topologyKey", "")
            here = _domain(node, key)
            if here is not None and _domain(cluster.node(other["spec"].get("nodeName")), key) == here \
                    and _term_selects(term, other, pod, cluster):
                return [EXISTING_ANTI_AFFINITY]
    return []


def _spread_counts(pod: dict, constraint: dict, cluster: Cluster) -> dict[str, int]:
    """Matching pods per domain, over the nodes the pod's node affinity allows that have the key."""
    key = constraint.get("topologyKey", "")
    counts = {d: 0 for n in cluster.nodes if node_affinity_fits(pod, n) and (d := _domain(n, key)) is not None}
    namespace = pod["metadata"].get("namespace", "default")
    for other in cluster.pods:
        if other["metadata"].get("namespace", "default") == namespace and \
                objects.matches(constraint.get("labelSelector"), other["metadata"].get("labels") or {}):
            domain = _domain(cluster.node(other["spec"].get("nodeName")), key)
            if domain in counts:
                counts[domain] += 1
    return counts


def _constraints(pod: dict, when: str) -> list[dict]:
    return [c for c in (pod.get("spec") or {}).get("topologySpreadConstraints") or []
            if c.get("whenUnsatisfiable", "DoNotSchedule") == when]


def spread_reasons(pod: dict, node: dict, cluster: Cluster) -> list[str]:
    for constraint in _constraints(pod, "DoNotSchedule"):
        here = _domain(node, constraint.get("topologyKey", ""))
        if here is None:
            return [SPREAD_LABEL]
        counts = _spread_counts(pod, constraint, cluster)
        if counts and counts.get(here, 0) + 1 - min(counts.values()) > int(constraint.get("maxSkew", 1)):
            return [SPREAD]
    return []


def verdict(pod: dict, node: dict, cluster: Cluster) -> Verdict | None:
    """None when the node can take the pod, else why not."""
    if node.get("spec", {}).get("unschedulable") and \
            tt.untolerated(pod, [{"key": tt.UNSCHEDULABLE, "effect": tt.NO_SCHEDULE}], (tt.NO_SCHEDULE,)):
        return Verdict((UNSCHEDULABLE,), False)
    blocking = tt.untolerated(pod, [t for t in tt.effective_taints(node) if t.get("key") != tt.UNSCHEDULABLE],
                              (tt.NO_SCHEDULE, tt.NO_EXECUTE))
    if blocking:
        taint = blocking[0]
        return Verdict((f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}",), False)
    if not node_affinity_fits(pod, node):
        return Verdict((NODE_AFFINITY,), False)
    wanted_ports = _host_ports(pod)
    if wanted_ports and any(wanted_ports & _host_ports(p) for p in cluster.on(node["metadata"]["name"])):
        return Verdict((PORTS,), True)
    short = resource_reasons(pod, node, cluster)
    if short:
        return Verdict(tuple(short), True)
    for reasons, preemptible in ((spread_reasons(pod, node, cluster), False),
                                 (inter_pod_reasons(pod, node, cluster), True)):
        if reasons:
            return Verdict(tuple(reasons), preemptible and reasons != [AFFINITY])
    return None


def message(verdicts: dict[str, Verdict], total: int, preemption: str | None = None) -> str:
    """A FailedScheduling message: ``0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had
    untolerated taint {node-role: }. preemption: ...``; ``preemption`` "" when preemption made room
    (nothing is said of it then), None to say why it could not."""
    if total == 0:
        return "no nodes available to schedule pods"
    counts = Counter(reason for v in verdicts.values() for reason in v.reasons)
    reasons = ", ".join(sorted(f"{n} {reason}" for reason, n in counts.items()))
    if preemption is None:
        helpless = Counter("No preemption victims found for incoming pod" if v.preemptible
                           else "Preemption is not helpful for scheduling" for v in verdicts.values())
        preemption = ", ".join(sorted(f"{n} {reason}" for reason, n in helpless.items()))
    said = f"0/{total} nodes are available: {reasons}."
    return f"{said} preemption: 0/{total} nodes are available: {preemption}." if preemption else said


# -- scores

def _normalized(raw: dict[str, float], reverse: bool = False) -> dict[str, float]:
    """Scores scaled to 0-100 over the candidates (the highest 100; or the lowest, ``reverse``)."""
    if not raw:
        return {}
    low, high = min(raw.values()), max(raw.values())
    if high == low:
        return {k: 0.0 for k in raw}  # no difference between them
    span = high - low
    return {k: 100 * ((high - v) if reverse else (v - low)) / span for k, v in raw.items()}


def _preferred_node_affinity(pod: dict, node: dict) -> float:
    return sum(int(t.get("weight", 0)) for t in _affinity_terms(pod, "nodeAffinity", "preferred")
               if node_term_matches(t.get("preference") or {}, node))


def _preferred_pod_affinity(pod: dict, node: dict, cluster: Cluster) -> float:
    total = 0.0
    for kind, sign in (("podAffinity", 1), ("podAntiAffinity", -1)):
        for weighted in _affinity_terms(pod, kind, "preferred"):
            term = weighted.get("podAffinityTerm") or {}
            key = term.get("topologyKey", "")
            here = _domain(node, key)
            if here is not None and any(_domain(cluster.node(p["spec"].get("nodeName")), key) == here
                                        for p in _term_pods(term, pod, cluster)):
                total += sign * int(weighted.get("weight", 0))
    return total


def _skew(pod: dict, node: dict, cluster: Cluster) -> float:
    total = 0.0
    for constraint in _constraints(pod, "ScheduleAnyway"):
        counts = _spread_counts(pod, constraint, cluster)
        here = _domain(node, constraint.get("topologyKey", ""))
        total += counts.get(here, 0) if here is not None else max(counts.values(), default=0) + 1
    return total


def _allocated(pod: dict, node: dict, cluster: Cluster) -> float:
    """How full the node would be: the mean share of cpu, memory and pods the pods there ask for."""
    allocatable = _allocatable(node)
    used: Counter[str] = Counter()
    for other in [*cluster.on(node["metadata"]["name"]), pod]:
        asked = requests(other)
        used.update({name: asked.get(name) or DEFAULT_REQUESTS[name] for name in DEFAULT_REQUESTS})
        used["pods"] += 1
    shares = [used[name] / allocatable[name] for name in ("cpu", "memory", "pods") if allocatable.get(name)]
    return sum(shares) / len(shares) if shares else float(used["pods"])


def best(pod: dict, candidates: Iterable[dict], cluster: Cluster) -> str | None:
    """The feasible node with the highest weighted score (by name on a tie)."""
    nodes = list(candidates)
    if not nodes:
        return None
    names = [n["metadata"]["name"] for n in nodes]

    def raw(fn) -> dict[str, float]:
        return {n["metadata"]["name"]: fn(n) for n in nodes}
    prefer_no = raw(lambda n: len(tt.untolerated(pod, tt.effective_taints(n), (tt.PREFER_NO_SCHEDULE,))))
    parts = [
        (3, _normalized(prefer_no, reverse=True)),
        (2, _normalized(raw(lambda n: _preferred_node_affinity(pod, n)))),
        (2, _normalized(raw(lambda n: _preferred_pod_affinity(pod, n, cluster)))),
        (2, _normalized(raw(lambda n: _skew(pod, n, cluster)), reverse=True)),
        (1, _normalized(raw(lambda n: _allocated(pod, n, cluster)), reverse=True)),
    ]
    totals = {name: sum(weight * scores[name] for weight, scores in parts) for name in names}
    return min(sorted(names), key=lambda name: -totals[name])
