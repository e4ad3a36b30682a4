"""``/healthz``, ``/livez`` and ``/readyz`` as kube-apiserver answers them: ``ok``, or with
``?verbose`` each check on a line (``[+]etcd ok``) and ``<endpoint> check passed``; a failing check
is ``[-]<name> failed: reason withheld`` with status 500; ``?exclude=<name>`` leaves one out, and
``/<endpoint>/<check>`` asks one alone."""
from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

Check = Callable[[], bool]
ENDPOINTS = ("healthz", "livez", "readyz")


def checks(storage_ok: Check) -> dict[str, dict[str, Check]]:
    """Each endpoint's checks, by name, in the order they are said."""
    common = {"ping": lambda: True, "log": lambda: True, "etcd": storage_ok,
              "poststarthook/start-apiextensions-informers": lambda: True}
    return {"healthz": common, "livez": common, "readyz": {**common, "informer-sync": lambda: True,
                                                           "shutdown": lambda: True}}


def _answer(endpoint: str, found: dict[str, Check], query) -> web.Response:
    excluded = set(query.getall("exclude", []))
    results = [(name, check()) for name, check in found.items() if name not in excluded]
    passed = all(ok for _, ok in results)
    if not passed or "verbose" in query:
        lines = [f"[+]{name} ok" if ok else f"[-]{name} failed: reason withheld" for name, ok in results]
        lines.append(f"{endpoint} check {'passed' if passed else 'failed'}")
        return web.Response(status=200 if passed else 500, text="\n".join(lines) + "\n")
    return web.Response(text="ok")


def routes(router: web.UrlDispatcher, storage_ok: Check) -> list[str]:
    """The endpoints and each of their checks; the paths that need no token (all of them)."""
    paths = []
    for endpoint, found in checks(storage_ok).items():
        async def whole(request: web.Request, endpoint: str = endpoint, found: dict = found) -> web.Response:
            return _answer(endpoint, found, request.query)

        router.add_get(f"/{endpoint}", whole)
        paths.append(f"/{endpoint}")
        for name, check in found.items():
            async def one(request: web.Request, name: str = name, check: Check = check) -> web.Response:
                return web.Response(text="ok") if check() else web.Response(
                    status=500, text=f"internal server error: {name} failed\n")

            router.add_get(f"/{endpoint}/{name}", one)
            paths.append(f"/{endpoint}/{name}")
    return paths
