"""The ``pods/log`` subresource as kube-apiserver serves it: the PodLogOptions checked, the container
chosen (or the request refused, worded as upstream), then the kubelet's answer from the pod's node
(``/containerLogs/NS/POD/CONTAINER``) streamed back as it comes, so ``kubectl logs -f`` follows."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from netplane.api.errors import ApiError
from netplane.api.kubelets import Kubelets
from netplane.api.times import parse_time

PASSED = ("follow", "previous", "timestamps", "tailLines", "limitBytes", "sinceSeconds", "sinceTime")


class LogOptionError(ValueError):
    """A PodLogOptions value that cannot be read; the message names it."""


def _number(query: Mapping[str, str], name: str, least: int) -> int | None:
    if name not in query:
        return None
    try:
        value = int(query[name])
    except ValueError:
        raise LogOptionError(f"{name}: Invalid value: {query[name]!r}: must be an integer") from None
    if value < least:
        bound = "greater than or equal to 0" if least == 0 else "greater than 0"
        raise LogOptionError(f"{name}: Invalid value: {value}: must be {bound}")
    return value


def _flag(query: Mapping[str, str], name: str) -> bool:
    return query.get(name, "false").lower() in ("true", "1")


def epoch(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time (with up to nanoseconds)."""
    return parse_time(text).timestamp()


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    since: float | None = None  # seconds since the epoch

    @classmethod
    def from_query(cls, query: Mapping[str, str], clock: Callable[[], float] = time.time) -> LogOptions:
        """PodLogOptions from a request's query, checked as kube-apiserver checks them."""
        since_seconds = _number(query, "sinceSeconds", 1)
        if since_seconds is not None and "sinceTime" in query:
            raise LogOptionError("at most one of `sinceTime` or `sinceSeconds` may be specified")
        since = clock() - since_seconds if since_seconds is not None else None
        if "sinceTime" in query:
            try:
                since = epoch(query["sinceTime"])
            except ValueError:
                raise LogOptionError(f"sinceTime: Invalid value: {query['sinceTime']!r}: "
                                     "must be an RFC 3339 time") from None
        return cls(follow=_flag(query, "follow"), previous=_flag(query, "previous"),
                   timestamps=_flag(query, "timestamps"), tail_lines=_number(query, "tailLines", 0),
                   limit_bytes=_number(query, "limitBytes", 1), since=since)


def container_of(pod: dict, asked: str) -> str:
    """The container a request means: the one named, or the pod's only one."""
    spec, name = pod.get("spec") or {}, pod["metadata"]["name"]
    app = [c["name"] for c in spec.get("containers") or []]
    init = [c["name"] for c in spec.get("initContainers") or []]
    ephemeral = [c["name"] for c in spec.get("ephemeralContainers") or []]
    if not asked:
        if len(app) == 1:
            return app[0]
        also = "".join(f" or one of the {kind} containers: [{' '.join(them)}]"
                       for kind, them in (("init", init), ("ephemeral", ephemeral)) if them)
        raise ApiError(400, "BadRequest",
                       f"a container name must be specified for pod {name}, choose one of: [{' '.join(app)}]{also}")
    if asked not in app + init + ephemeral:
        raise ApiError(400, "BadRequest", f"container {asked} is not valid for pod {name}")
    return asked


async def serve(request: web.Request, pod: dict, kubelets: Kubelets, node: dict | None) -> web.StreamResponse:
    """The log of the pod's container (``node``: the pod's Node, None while it has none)."""
    try:
        LogOptions.from_query(request.query)
    except LogOptionError as err:
        raise ApiError(422, "Invalid", f'PodLogOptions "{pod["metadata"]["name"]}" is invalid: {err}') from None
    container = container_of(pod, request.query.get("container", ""))
    out = web.StreamResponse(headers={"Content-Type": "text/plain"})
    if node is None:  # not scheduled yet: nothing to read, as upstream answers
        await out.prepare(request)
        return out
    meta = pod["metadata"]
    params = {k: v for k, v in request.query.items() if k in PASSED}
    path = f"containerLogs/{meta['namespace']}/{meta['name']}/{container}"
    async with await kubelets.request("GET", node, path, params=params) as resp:
        if resp.status != 200:
            raise ApiError.for_code(resp.status if resp.status >= 400 else 500, (await resp.text()).strip())
        await out.prepare(request)
        async for chunk in resp.content.iter_any():
            await out.write(chunk)
    await out.write_eof()
    return out
