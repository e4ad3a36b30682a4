"""Leader election through a coordination.k8s.io/v1 Lease, as upstream's controller-manager and
scheduler do it: every replica runs an elector, and only the one holding the Lease runs the
controllers.

A candidate takes the Lease when it is free or when its holder has not renewed it within
``leaseDurationSeconds`` (then ``leaseTransitions`` grows by one). Every write names the
resourceVersion it read, so of two candidates that race, one gets a Conflict and stays a follower.
The leader renews every ``retry`` seconds; when it cannot renew for ``renew_deadline`` seconds it
stops leading at once, before anyone may take the Lease over (renew_deadline < lease_duration).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from netplane.api.client import Client
from netplane.api.errors import ApiError
from netplane.api.times import age_seconds, micro_time_text

log = logging.getLogger(__name__)


class LeaderElector:
    def __init__(self, client: Client, name: str, namespace: str, identity: str, lease_duration: float = 15.0,
                 renew_deadline: float = 10.0, retry: float = 2.0) -> None:
        if not retry < renew_deadline < lease_duration:
            raise ValueError("leader election needs retry < renew_deadline < lease_duration")
        self.client, self.name, self.namespace, self.identity = client, name, namespace, identity
        self.lease_duration, self.renew_deadline, self.retry = lease_duration, renew_deadline, retry

    def _lease(self, old: dict | None) -> dict:
        spec = (old or {}).get("spec", {})
        ours = spec.get("holderIdentity") == self.identity
        stamp = micro_time_text()
        new_spec = {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_duration),
                    "acquireTime": spec.get("acquireTime", stamp) if ours else stamp, "renewTime": stamp,
                    "leaseTransitions": spec.get("leaseTransitions", 0) + (0 if ours or old is None else 1)}
        metadata = {"name": self.name, "namespace": self.namespace}
        if old is not None:
            metadata["resourceVersion"] = old["metadata"]["resourceVersion"]
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": new_spec}

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; whether we hold the Lease afterwards."""
        try:
            old = await self.client.get("leases", self.name, self.namespace)
        except ApiError as err:
            if err.code != 404:
                raise
            old = None
        if old is not None:
            spec = old.get("spec", {})
            holder, renewed = spec.get("holderIdentity"), spec.get("renewTime")
            duration = spec.get("leaseDurationSeconds", self.lease_duration)
            if holder and holder != self.identity and renewed and age_seconds(renewed) < duration:
                return False
        try:
            if old is None:
                await self.client.create("leases", self._lease(None))
            else:
                await self.client.update("leases", self._lease(old))
        except ApiError as err:
            if err.code in (404, 409):  # someone else wrote first
                return False
            raise
        return True

    async def run(self, lead: Callable[[], Awaitable]) -> None:
        """Forever: wait to become leader, run lead() while leading, stop it when leadership is lost."""
        while True:
            while not await self._attempt():
                await asyncio.sleep(self.retry)
            log.info("%s leads %s/%s", self.identity, self.namespace, self.name)
            leading = asyncio.create_task(lead(), name=f"leading/{self.name}")
            try:
                await self._keep(leading)
            finally:
                leading.cancel()
                await asyncio.gather(leading, return_exceptions=True)
            log.warning("%s lost %s/%s", self.identity, self.namespace, self.name)

    async def _attempt(self) -> bool:
        try:
            return await self.try_acquire_or_renew()
        except (ApiError, OSError, asyncio.TimeoutError) as err:
            log.warning("leader election: %s", err)
            return False
        except Exception as err:  # noqa: BLE001 - a client error (connection refused, ...) is a failed attempt
            log.warning("leader election: %s: %s", type(err).__name__, err)
            return False

    async def _keep(self, leading: asyncio.Task) -> None:
        """Renew until a renewal has failed for renew_deadline seconds (or the work ended)."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not leading.done():
            await asyncio.sleep(self.retry)
            if await self._attempt():
                last = loop.time()
            elif loop.time() - last >= self.renew_deadline:
                return
