"""A node's policy fragments kept current from one snapshot of the API's objects to the next, doing
only what the change needs: a pod that came, went or changed is applied to each policy by looking at
that pod alone (nftables.Plan.changed); a new or changed policy is planned and rendered again; a
change of namespace labels, which namespace selectors read, plans every policy again. It answers
ruleset.diff as a FragmentCache does (the keys it changed, the holders of shared elements)."""
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
        self.fragments: dict[str, Fragment] = {}
        self.changed: set[str] = set()  # the keys whose fragment the last update made anew or removed
        self.shared = nftables.HELD_BY_SEVERAL
        self.holders: Counter[tuple[str, Hashable, Hashable]] = Counter()

    def update(self, pods: list[dict], namespaces: list[dict], policies: list[dict]) -> dict[str, Fragment]:
        """The fragments for these objects: the base ("") and each policy's."""
        gone, come = self._pods(pods)
        labels = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in namespaces}
        replan = labels != self.namespaces
        self.namespaces = labels
        objects = {_key(p): p for p in policies}
        fragments: dict[str, Fragment] = {}
        for key, obj in sorted(objects.items()):
            old = self.fragments.get(key)
            if replan or old is None or self.policy_objects.get(key) is not obj:
                self.policies[key] = model.policy_of(obj)
                self.plans[key] = nftables.plan(self.policies[key], labels, self.node)
                fragments[key] = self.plans[key].render(self.pods.values())
            else:
                fragments[key] = self.plans[key].changed(old, gone, come)
        for key in self.policy_objects.keys() - objects.keys():
            del self.policies[key], self.plans[key]
        policies_changed = objects.keys() != self.policy_objects.keys() or any(
            self.policy_objects.get(k) is not o for k, o in objects.items())
        self.policy_objects = objects
        fragments[""] = nftables.base([self.policies[k] for k in sorted(objects)]) \
            if policies_changed or "" not in self.fragments else self.fragments[""]
        self.changed = {k for k in fragments.keys() | self.fragments.keys()
                        if fragments.get(k) is not self.fragments.get(k)}
        self.holders -= holders_of((self.fragments[k] for k in self.changed if k in self.fragments), self.shared)
        self.holders += holders_of((fragments[k] for k in self.changed if k in fragments), self.shared)
        self.fragments = fragments
        return fragments

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
