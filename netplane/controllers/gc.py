"""The garbage collector: objects whose controlling owner is gone are deleted (background
propagation), e.g. a Deployment's ReplicaSets and their pods. An owner missing from the caches is
confirmed gone with a GET before anything is deleted, since caches of different kinds lag apart.

Foreground propagation: an owner deleted with it carries the ``foregroundDeletion`` finalizer; its
dependents are deleted (in the foreground too when they are owners themselves), and the finalizer
is removed once none that blocks its deletion (``blockOwnerDeletion``) is left, so the owner goes
last, as upstream's collector does it."""
from __future__ import annotations

import copy

from netplane.api import resources
from netplane.api.errors import ApiError
from netplane.api.writes import FOREGROUND
from netplane.api.loop import Reconciler


def orphans(dependents: list[dict], owner_uids: dict[str, set[str]]) -> list[tuple[dict, dict]]:
    """(dependent, owner reference) for each dependent whose controller, of a tracked kind, is unknown."""
    found = []
    for obj in dependents:
        for ref in obj["metadata"].get("ownerReferences", []):
            if ref.get("controller") and ref.get("kind") in owner_uids and ref.get("uid") not in owner_uids[ref["kind"]]:
                found.append((obj, ref))
    return found


class GarbageCollector:
    def __init__(self, client, owners: dict[str, object], dependents: list) -> None:
        """owners: kind -> informer of that kind; dependents: informers whose objects may be owned."""
        self.client, self.owners, self.dependents = client, owners, dependents
        self.loop = Reconciler("garbage-collector", self.reconcile)
        for informer in [*owners.values(), *dependents]:
            informer.add_handler(self.loop.trigger)

    async def reconcile(self) -> None:
        uids = {kind: {o["metadata"].get("uid") for o in inf.cache.values()} for kind, inf in self.owners.items()}
        objects = [o for inf in self.dependents for o in inf.cache.values()]
        for owner in [o for inf in self.owners.values() for o in inf.cache.values()]:
            if FOREGROUND in owner["metadata"].get("finalizers", []) and "deletionTimestamp" in owner["metadata"]:
                await self._delete_in_foreground(owner, objects)
        for obj, ref in orphans(objects, uids):
            namespace = obj["metadata"].get("namespace")
            owner = resources.by_kind(ref["kind"])
            try:
                live = await self.client.get(owner.plural, ref["name"], namespace)
                if live["metadata"].get("uid") == ref["uid"]:
                    continue  # the cache was behind
            except ApiError as err:
                if err.code != 404:
                    raise
            await self._delete(obj)

    async def _delete_in_foreground(self, owner: dict, objects: list[dict]) -> None:
        uid = owner["metadata"]["uid"]
        dependents = [(o, r) for o in objects for r in o["metadata"].get("ownerReferences", []) if r.get("uid") == uid]
        for obj, _ in dependents:
            if "deletionTimestamp" not in obj["metadata"]:
                policy = "Foreground" if obj["kind"] in self.owners else "Background"
                await self._delete(obj, policy)
        if any(ref.get("blockOwnerDeletion") for _, ref in dependents):
            return
        done = copy.deepcopy(owner)
        done["metadata"]["finalizers"] = [f for f in done["metadata"]["finalizers"] if f != FOREGROUND]
        try:
            await self.client.update(resources.by_kind(owner["kind"]).plural, done)
        except ApiError as err:
            if err.code != 404:
                raise

    async def _delete(self, obj: dict, policy: str | None = None) -> None:
        try:
            await self.client.delete(resources.by_kind(obj["kind"]).plural, obj["metadata"]["name"],
                                     obj["metadata"].get("namespace"), propagation_policy=policy)
        except ApiError as err:
            if err.code != 404:
                raise
