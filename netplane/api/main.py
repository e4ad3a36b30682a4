"""The API server alone, on a store of its own:

    python -m netplane.api.main --storage sqlite:///var/lib/netplane/api.db --listen 127.0.0.1:6443
    python -m netplane.api.main --storage etcd://127.0.0.1:2379 --listen 127.0.0.1:0 --token T

Prints ``listening on http://HOST:PORT`` once it serves (the bound port when given 0) and stops on
SIGTERM or SIGINT. Several of them may share one etcd.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from netplane.api.server import start
from netplane.api.store import Store


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m netplane.api.main", description=__doc__.split("\n")[0])
    parser.add_argument("--storage", required=True,
                        help="sqlite:///path/to/api.db (or a path), or etcd://host:port[,host:port...][/prefix]")
    parser.add_argument("--listen", type=_listen, default=("127.0.0.1", 8080), metavar="HOST:PORT",
                        help="address to serve on (default 127.0.0.1:8080; port 0 picks a free one)")
    parser.add_argument("--token", help="bearer token every request must carry (default: none)")
    parser.add_argument("--log-size", type=int, default=10_000, help="events kept for watches from a resourceVersion")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    store = Store(args.storage, log_size=args.log_size)
    try:
        host, port = args.listen
        runner, bound = await start(store, host, port, args.token)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"listening on http://{host}:{bound}", flush=True)
        await stop.wait()
        await runner.cleanup()
    finally:
        store.close()


def setup_logging() -> None:
    """The log of a long-running netplane process: level from NETPLANE_LOG (INFO), time-stamped lines."""
    logging.basicConfig(level=os.environ.get("NETPLANE_LOG", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # not a line per request


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    asyncio.run(serve(parse(argv)))


if __name__ == "__main__":
    main()
