"""Events last an hour, as kube-apiserver keeps them (its --event-ttl): once a minute, the Events
whose last sighting is older than that are deleted."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from netplane.api.errors import ApiError
from netplane.api.loop import Reconciler
from netplane.api.times import parse_time

TTL = timedelta(hours=1)
SWEEP_SECONDS = 60.0


def expired(event: dict, now: datetime, ttl: timedelta = TTL) -> bool:
    seen = event.get("lastTimestamp") or event.get("eventTime") or event["metadata"].get("creationTimestamp")
    if not seen:
        return False
    return now - parse_time(seen) > ttl


class EventTTL:
    def __init__(self, client, ttl: timedelta = TTL) -> None:
        self.client, self.ttl = client, ttl
        self.loop = Reconciler("event-ttl", self.reconcile, resync=SWEEP_SECONDS)

    async def reconcile(self) -> None:
        now = datetime.now(timezone.utc)
        for event in (await self.client.list("events")).get("items", []):
            if expired(event, now, self.ttl):
                try:
                    await self.client.delete("events", event["metadata"]["name"], event["metadata"]["namespace"])
                except ApiError as err:
                    if err.code != 404:
                        raise
