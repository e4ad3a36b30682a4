"""netplane's resident CNI server: runs the plugins' commands for their entry point, cni/netplane-plugin.

One server per checkout (its socket is the checkout's ``.venv/cni.sock``), started by the first
plugin call that finds none, living in an empty
network namespace of its own (not in the lab node that happened to start it) and ending after IDLE_SECONDS
without a request. Each request gets a fresh thread that enters the caller's network namespace
(found through SO_PEERCRED) and runs the plugin's handlers there with the caller's CNI_*
variables and stdin, exactly as the plugin would in its own process. The server declines (and
ends) when netplane's code on disk is newer than what it loaded, and declines callers in another
mount namespace (their paths would mean something else here) or of another user.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path

from netplane.cni import INTERNAL, SPEC_VERSION, CNIError, Handler, main
from netplane.kernel import netns

IDLE_SECONDS = 300.0
DECLINED = 255  # the reply that asks the entry point to run the command itself
SOCKET = Path(__file__).resolve().parents[2] / ".venv" / "cni.sock"  # where cni/netplane-plugin looks
LOCK = SOCKET.with_name("cni.sock.lock")  # held by the running server, which writes its pid in it
LOG = SOCKET.with_name("cni.sock.log")


def _loaded_code_mtime() -> float:
    """The newest modification time among the netplane modules this process has loaded."""
    files = [getattr(m, "__file__", None) for name, m in list(sys.modules.items()) if name.startswith("netplane")]
    return max((os.stat(f).st_mtime for f in files if f and os.path.exists(f)), default=0.0)


class Server:
    def __init__(self, plugins: Mapping[str, Mapping[str, Handler]]) -> None:
        self.plugins = plugins
        self.code_mtime = _loaded_code_mtime()
        self.mount_ns = os.stat("/proc/self/ns/mnt").st_ino
        self.busy = 0
        self.last_request = time.monotonic()
        self.stopping = False
        self.lock = threading.Lock()

    def serve(self, listener: socket.socket) -> None:
        """Accept requests until idle for IDLE_SECONDS, told to stop, or the code on disk changed."""
        listener.settimeout(1.0)
        while not self.stopping:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                with self.lock:
                    if not self.busy and time.monotonic() - self.last_request > IDLE_SECONDS:
                        return
                continue
            with self.lock:
                self.busy += 1
                self.last_request = time.monotonic()
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def stop(self) -> None:
        self.stopping = True

    def drain(self, limit: float = 60.0) -> None:
        """Wait (up to limit seconds) for the requests under way to be answered."""
        deadline = time.monotonic() + limit
        while self.busy and time.monotonic() < deadline:
            time.sleep(0.01)

    def _handle(self, conn: socket.socket) -> None:
        try:
            with conn:
                try:
                    reply = self._answer(conn)
                except Exception as err:  # noqa: BLE001 - the caller gets the SPEC's error, the log the trace
                    traceback.print_exc()
                    error = CNIError(INTERNAL, f"netplane's CNI server failed: {err}").to_json(SPEC_VERSION)
                    reply = b"1\n" + json.dumps(error).encode()
                conn.sendall(reply)
        except OSError:
            pass  # the caller went away
        finally:
            with self.lock:
                self.busy -= 1

    def _answer(self, conn: socket.socket) -> bytes:
        pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        chunks = []
        while chunk := conn.recv(1 << 16):
            chunks.append(chunk)
        header, _, stdin = b"".join(chunks).partition(b"\0\0")
        plugin, *variables = header.decode().split("\0")
        if uid != os.geteuid() or plugin not in self.plugins or not self._same_mounts(pid):
            return f"{DECLINED}\n".encode()
        if _loaded_code_mtime() > self.code_mtime:
            self.stopping = True
            return f"{DECLINED}\n".encode()
        netns.enter(f"/proc/{pid}/ns/net")  # this thread exists for this request only
        env = dict(v.split("=", 1) for v in variables)
        out = io.StringIO()
        start = time.monotonic()
        status = main(self.plugins[plugin], env=env, stdin=io.StringIO(stdin.decode()), stdout=out)
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {plugin} {env.get('CNI_COMMAND')} "
              f"container={env.get('CNI_CONTAINERID', '-')} ifname={env.get('CNI_IFNAME', '-')} pid={pid} "
              f"status={status} {1000 * (time.monotonic() - start):.1f} ms", file=sys.stderr)
        return f"{status}\n{out.getvalue()}".encode()

    def _same_mounts(self, pid: int) -> bool:
        try:
            return os.stat(f"/proc/{pid}/ns/mnt").st_ino == self.mount_ns
        except OSError:
            return False


def run() -> int:
    """Serve the checkout's socket unless another server already does; return the exit status."""
    path = str(SOCKET)
    with open(LOCK, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # a server is running (or starting) already
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        netns.enter_new()  # in no lab's namespace, so no lab's `down` ends us; requests enter the caller's
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        temporary = f"{path}.{os.getpid()}"
        listener.bind(temporary)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)  # a stale socket of a dead server is replaced, never half-made
        listener.listen(128)
        mine = os.stat(path).st_ino
        from netplane.cni import bridge, ipam  # the netlink library: only once this server is the one
        server = Server({"bridge": bridge.HANDLERS, "ipam": ipam.HANDLERS})
        signal.signal(signal.SIGTERM, lambda *_: server.stop())
        try:
            server.serve(listener)
        finally:
            if os.path.exists(path) and os.stat(path).st_ino == mine:
                os.unlink(path)
            listener.close()  # callers not yet accepted see a reset and run in-process
            server.drain()
    return 0


def running() -> int | None:
    """The pid of the checkout's running server, if one holds the lock."""
    try:
        with open(LOCK) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return None
            except BlockingIOError:
                return int(lock.read().strip() or 0) or None
    except FileNotFoundError:
        return None


def stop() -> int | None:
    """Tell the checkout's server to end after the commands under way (for `netplane clean`);
    its pid, or None when none was running."""
    pid = running()
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    return pid


if __name__ == "__main__":
    sys.stderr = open(LOG, "a", buffering=1)  # noqa: SIM115 - the server's log, for its whole life
    sys.exit(run())
