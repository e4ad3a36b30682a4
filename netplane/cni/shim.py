"""The entry point of netplane's CNI plugins: hand the command to netplane's resident CNI server, or
run it in this process when there is none.

A runtime starts a plugin for every command and waits for it, so a pod's start waits for the
plugin's start. Python that imports pyroute2 needs about 200 ms before it does anything; the
reference plugins answer an ADD in 10-15 ms. So the launchers in ``cni/`` run this module with
``python3 -I -S`` as a top-level module (not through the ``netplane`` package), and it imports
nothing beyond the interpreter's built-ins. It sends the command to the server
(``netplane.cni.server``), which has the netlink library loaded and does the work in a thread
that enters this process's network namespace. With no server listening it starts one for the next
command and runs this one in-process (``python -m netplane.cni.<plugin>`` from the checkout's
virtual environment), so the plugins work for any runtime, with or without the server.

The protocol, over a Unix stream socket: the request is ``plugin NUL (KEY=VALUE NUL)* NUL stdin``
with the CNI_* variables, then the client shuts its write side; the reply is one status byte and
then the plugin's stdout. The status DECLINED asks the client to run the command itself.
"""
import os
import sys

import _socket

RUN_DIR = "/run/netplane"
DECLINED = 255
SERVER_SWITCH = "NETPLANE_CNI_SERVER"  # "off": run every command in-process and start no server
STATUS_INTERNAL = 1


def checkout() -> str:
    """The netplane checkout this module belongs to (it lives in <checkout>/netplane/cni)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def socket_path(root: str) -> str:
    """The server's socket for a checkout: one server per checkout, so two checkouts never mix code."""
    st = os.stat(root)
    return f"{RUN_DIR}/cni-{st.st_dev:x}-{st.st_ino:x}.sock"


def python(root: str) -> str:
    return os.path.join(root, ".venv", "bin", "python")


def _fail(msg: str, stdin: bytes) -> int:
    """Print the SPEC's error object (code 999) for a failure of the entry point itself."""
    import json
    try:
        version = json.loads(stdin).get("cniVersion", "1.1.0")
    except (ValueError, AttributeError):
        version = "1.1.0"
    sys.stdout.write(json.dumps({"cniVersion": version, "code": 999, "msg": msg}) + "\n")
    return STATUS_INTERNAL


def in_process(root: str, plugin: str, stdin: bytes | None) -> int:
    """Replace this process by the plugin run in-process, with stdin given back when already read."""
    if stdin is not None:
        fd = os.memfd_create("cni-stdin")
        os.write(fd, stdin)
        os.lseek(fd, 0, os.SEEK_SET)
        os.dup2(fd, 0)
        os.close(fd)
    exe = python(root)
    try:
        os.execv(exe, [exe, "-m", f"netplane.cni.{plugin}"])
    except OSError as err:
        return _fail(f"cannot run {exe} ({err.strerror}); run netplane's scripts/install",
                     stdin if stdin is not None else sys.stdin.buffer.read())


def _server_running(root: str) -> bool:
    """Whether a server holds the checkout's lock (it may be starting and not yet listening)."""
    import fcntl
    try:
        with open(socket_path(root) + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        pass
    return False


def start_server(root: str) -> None:
    """Start the server in the background, detached from this process and its pipes."""
    try:
        os.makedirs(RUN_DIR, mode=0o700, exist_ok=True)
        if _server_running(root):
            return
        pid = os.fork()
    except OSError:
        return
    if pid:
        os.waitpid(pid, 0)
        return
    try:
        os.setsid()
        if os.fork() == 0:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(3, 1 << 16)  # never hold the runtime's pipes open
            os.execv(python(root), [python(root), "-m", "netplane.cni.server"])
    finally:
        os._exit(0)


def main(plugin: str) -> int:
    """Run one CNI command of plugin (a module of netplane.cni); return the exit status."""
    root = checkout()
    if os.environ.get(SERVER_SWITCH) == "off":
        return in_process(root, plugin, None)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(socket_path(root))
    except OSError:
        sock.close()
        start_server(root)
        return in_process(root, plugin, None)
    stdin = sys.stdin.buffer.read()
    env = [f"{key}={value}".encode() for key, value in os.environ.items() if key.startswith("CNI_")]
    reply = bytearray()
    try:
        sock.sendall(b"\0".join([plugin.encode(), *env]) + b"\0\0" + stdin)
        sock.shutdown(_socket.SHUT_WR)
        while chunk := sock.recv(1 << 16):
            reply += chunk
    except OSError:  # reset: the server closed before accepting us (it was stopping), nothing was done
        return in_process(root, plugin, stdin)
    finally:
        sock.close()
    if not reply:
        return _fail("netplane's CNI server ended without answering (see /run/netplane/cni-*.log)", stdin)
    if reply[0] == DECLINED:
        return in_process(root, plugin, stdin)
    sys.stdout.buffer.write(reply[1:])
    return reply[0]
