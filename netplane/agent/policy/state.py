"""A node's policy fragments kept current from one snapshot of the API's objects to the next, doing
only what the change needs: a pod that came, went or changed is applied to each policy by looking at
that pod alone (nftables.Plan.changed), and its group (the policies selecting it, if it is on this
node) found among its namespace's policies; a new or changed policy is planned and rendered again,
and the groups of its namespace's pods found again; a change of namespace labels, which namespace
selectors read, plans every policy again. It answers ruleset.diff as a FragmentCache does (the keys
it changed, the holders of shared elements)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Hashable

from netplane.agent.policy import model, nftables
from netplane.agent.ruleset import Fragment, holders_of


def _key(obj: dict) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', 'default')}/{meta['name']}"


class NodePolicies:
    def __init__(self, node: str) -> None:
        self.node = node
        self.pod_objects: dict[str, dict] = {}  # key -> the API object last read (unchanged: the same object)
        self.pods: dict[str, model.Pod] = {}  # the pods with an address
        self.namespaces: dict[str, dict[str, str]] = {}
        self.policy_objects: dict[str, dict] = {}
        self.policies: dict[str, model.Policy] = {}
        self.plans: dict[str, nftables.Plan] = {}
        self.groups: nftables.Groups = {}  # this node's isolated pods
        self.fragments: dict[str, Fragment] = {}
        self.changed: set[str] = set()  # the keys whose fragment the last update made anew or removed
        self.shared = nftables.SharedPeers()  # the sets whose elements several policies may hold
        self.holders: Counter[tuple[str, Hashable, Hashable]] = Counter()

    def update(self, pods: list[dict], namespaces: list[dict], policies: list[dict]) -> dict[str, Fragment]:
        """The fragments for these objects: the base ("") and each policy's."""
        gone, come = self._pods(pods)
        labels = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in namespaces}
        replan = labels != self.namespaces
        self.namespaces = labels
        objects = {_key(p): p for p in policies}
        by_namespace = nftables.by_namespace(self.pods.values())
        fragments: dict[str, Fragment] = {}
        for key, obj in sorted(objects.items()):
            old = self.fragments.get(key)
            if replan or old is None or self.policy_objects.get(key) is not obj:
                self.policies[key] = model.policy_of(obj)
                self.plans[key] = nftables.plan(self.policies[key], labels, self.node)
                fragments[key] = self.plans[key].render(by_namespace)
            else:
                fragments[key] = self.plans[key].changed(old, gone, come)
        for key in self.policy_objects.keys() - objects.keys():
            del self.policies[key], self.plans[key]
        touched = {k.split("/", 1)[0] for k in objects.keys() ^ self.policy_objects.keys()} | {
            k.split("/", 1)[0] for k, o in objects.items() if self.policy_objects.get(k) is not o}
        self.policy_objects = objects
        peer_sets = {n for plan in self.plans.values() for n in plan.contributions if n in self.shared}
        if self._regroup(touched, gone, come) or "" not in self.fragments or peer_sets != set(self.fragments[""].sets):
            fragments[""] = nftables.base(self.groups, peer_sets)
        else:
            fragments[""] = self.fragments[""]
        self.changed = {k for k in fragments.keys() | self.fragments.keys()
                        if fragments.get(k) is not self.fragments.get(k)}
        self.holders -= holders_of((self.fragments[k] for k in self.changed if k in self.fragments), self.shared)
        self.holders += holders_of((fragments[k] for k in self.changed if k in fragments), self.shared)
        self.fragments = fragments
        return fragments

    def _regroup(self, namespaces: set[str], gone: list[model.Pod], come: list[model.Pod]) -> bool:
        """Find again the groups of this node's pods in these namespaces and of the pods that changed;
        whether any group changed."""
        by_namespace: dict[str, list[model.Policy]] = {}
        for policy in self.policies.values():
            by_namespace.setdefault(policy.namespace, []).append(policy)
        before = dict(self.groups)
        for pod in gone:
            self.groups.pop(pod.ip, None)
        again = [p for p in self.pods.values() if p.node == self.node and p.namespace in namespaces]
        for pod in [*again, *(p for p in come if p.node == self.node)]:
            found = {d: tuple(sorted((p for p in by_namespace.get(pod.namespace, ()) if p.rules(d) is not None
                                      and p.selects(pod)), key=lambda p: p.key)) for d in (model.INGRESS, model.EGRESS)}
            found = {d: policies for d, policies in found.items() if policies}
            if found:
                self.groups[pod.ip] = found
            else:
                self.groups.pop(pod.ip, None)
        return self.groups != before

    def _pods(self, objects: list[dict]) -> tuple[list[model.Pod], list[model.Pod]]:
        """The pods that went (as they were) and came (as they are) since the last update."""
        gone, come = [], []
        seen = {}
        for obj in objects:
            key = _key(obj)
            seen[key] = obj
            if self.pod_objects.get(key) is obj:
                continue
            old, new = self.pods.get(key), model.pod_of(obj)
            if old != new:
                gone += [old] if old is not None else []
                come += [new] if new is not None else []
        gone += [self.pods[k] for k in self.pod_objects.keys() - seen.keys() if k in self.pods]
        self.pod_objects = seen
        for pod in gone:
            self.pods.pop(pod.key, None)
        for pod in come:
            self.pods[pod.key] = pod
        return gone, come
