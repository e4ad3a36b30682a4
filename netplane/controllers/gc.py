"""The garbage collector: objects whose controlling owner is gone are deleted (background
propagation), e.g. a Deployment's ReplicaSets and their pods. An owner missing from the caches is
confirmed gone with a GET before anything is deleted, since caches of different kinds lag apart."""
from __future__ import annotations

from netplane.api import resources
from netplane.api.errors import ApiError
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
            try:
                await self.client.delete(resources.by_kind(obj["kind"]).plural, obj["metadata"]["name"], namespace)
            except ApiError as err:
                if err.code != 404:
                    raise
