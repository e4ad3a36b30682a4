"""A node's container launcher: the small runtime (runc's and the pause container's part) that makes
a pod a host of its own, forked from one warm interpreter per node.

The kubelet starts one (``python -I -S launcher.py``, inside the node's network namespace) and
sends it one JSON line per request on stdin; replies and exits come back on stdout:

- ``{"op": "sandbox", "id", "netns", "hostname"}``: the pod's pause process (Debian's catatonit in
  pause mode), in the pod's network namespace and new UTS, IPC and PID namespaces: PID 1 there,
  it reaps orphans; its hostname is the pod's. Reply ``{"id", "pid"}``.
- ``{"op": "start", "id", "sandbox", "mounts", "argv" | "builtin", "env", "cwd", "uid", "gid",
  "log", "cgroups"}``: a container, forked into the pause process's PID namespace (the launcher
  moves its children there for one fork), which joins its cgroups (``cgroups``: the cgroup.procs
  files to write 0 to) and the pod's other namespaces, takes a mount namespace of its own, carries
  out ``mounts`` (the container's root, built by netplane.agent.rootfs) and execs ``argv`` with
  ``env`` (or runs a built-in server of agnhost.py). Reply ``{"id", "pid"}`` once
  it has exec'd (or bound its ports); ``{"id", "error", "reason"}`` when it could not start.
  Its stdout and stderr are pipes to a log copier the launcher forks beside it (conmon's part,
  outside the pod's namespaces): each line goes to the file ``log`` in the CRI logging format
  the kubelet reads (``<RFC 3339 time with nanoseconds> stdout|stderr F|P <line>``; P marks a
  part of a line longer than LINE_MAX or unfinished at the end), rotated at LOG_MAX_BYTES with
  LOG_MAX_FILES kept, the kubelet's containerLogMaxSize and containerLogMaxFiles.
- ``{"exit": pid, "code": n}``, unasked: a container's process or a pause process ended, with its
  exit status (128 + the signal for one killed by a signal, as container runtimes say).

Everything in here is the standard library, so the launcher starts in a few tens of milliseconds
and a container forked from it shares its pages (``gc.freeze``). It ends when its stdin closes
(the kubelet has gone) and leaves the pods running, to be adopted by the next kubelet.
"""
from __future__ import annotations

import ctypes
import fcntl
import json
import os
import selectors
import signal
import socket
import struct
import sys
import termios
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # agnhost.py beside it; -I leaves it out
import agnhost  # noqa: E402

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x4000000, 0x8000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_NAME, PR_SET_CHILD_SUBREAPER = 15, 36
START_SECONDS = 10.0
PAUSE_PROGRAM = ["catatonit", "-P"]  # a pod's PID 1
LOG_MAX_BYTES, LOG_MAX_FILES = 10 << 20, 5
LINE_MAX = 16 << 10  # a longer line is written in parts (P records), as containerd's limit

libc = ctypes.CDLL(None, use_errno=True)


class StartError(Exception):
    """A container that could not be started; ``reason`` as the kubelet reports it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _setns(path: str, nstype: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        _check(libc.setns(fd, nstype), f"setns into {path}")
    finally:
        os.close(fd)


def _mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                      flags, data.encode() if data else None), f"mount {fstype or source} on {target}")


def _like(source: str, target: str) -> None:
    """Make target (a mount point) of source's type, a file or a directory, when it is missing."""
    if os.path.lexists(target):
        return
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))


def inside(root: str, path: str) -> str:
    """``path`` of a container whose root is ``root``, as a path of the launcher's: each symbolic
    link on the way is followed inside the root (an absolute one from the root, ``..`` never above
    it), so that no name in a pod leads out of its root (/var/run -> /run is the container's /run)."""
    parts, resolved, links = [p for p in path.split("/") if p], "", 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            resolved = os.path.dirname(resolved)
            continue
        candidate = f"{resolved}/{part}" if resolved else part
        if os.path.islink(f"{root}/{candidate}"):
            links += 1
            if links > 40:  # the kernel's own limit
                raise OSError(40, f"too many levels of symbolic links in {path}")
            to = os.readlink(f"{root}/{candidate}")
            resolved = "" if to.startswith("/") else resolved
            parts = [p for p in to.split("/") if p] + parts
            continue
        resolved = candidate
    return f"{root}/{resolved}" if resolved else root


def apply_mount(op: dict) -> None:
    """One step of a container's root (netplane.agent.rootfs says which and in what order); a step
    with a ``root`` names its target as the container sees it."""
    kind, target = op["op"], op.get("target", "")
    if "root" in op:
        target = inside(op["root"], target)
    if kind == "mkdir":
        os.makedirs(target, mode=op.get("mode", 0o755), exist_ok=True)
    elif kind == "file":
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as out:
            out.write(op["data"])
        os.chmod(target, op.get("mode", 0o644))
    elif kind == "symlink":
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.symlink(op["to"], target)
    elif kind == "tmpfs":
        os.makedirs(target, exist_ok=True)
        _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, op.get("options", "mode=755"))
    elif kind == "overlay":
        os.makedirs(target, exist_ok=True)
        for d in (op["upper"], op["work"]):
            os.makedirs(d, exist_ok=True)
        _mount("overlay", target, "overlay", 0,
               f"lowerdir={':'.join(op['lower'])},upperdir={op['upper']},workdir={op['work']}")
    elif kind == "bind":
        _like(op["source"], target)
        _mount(op["source"], target, None, MS_BIND | (MS_REC if op.get("recursive") else 0))
        if op.get("readonly"):
            _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    elif kind == "proc":
        os.makedirs(target, exist_ok=True)
        _mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    elif kind == "sysfs":
        os.makedirs(target, exist_ok=True)
        try:  # the pod's own: /sys/class/net lists its interfaces
            _mount("sysfs", target, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
        except OSError:
            _mount("/sys", target, None, MS_BIND | MS_REC)
    elif kind == "chroot":
        os.chdir(target)
        os.chroot(".")
        os.chdir("/")
    else:
        raise ValueError(f"unknown mount step {kind!r}")


# --- the sandbox ----------------------------------------------------------------------------------

def _sandbox(request: dict, status_w: int) -> None:
    """In a forked child: make the pod's namespaces and start its pause process there (PID 1:
    catatonit in pause mode, which reaps orphans, as podman's pause is), say its pid, and end (the
    pause process is the launcher's now, a subreaper's). Never returns."""
    try:
        _setns(request["netns"], CLONE_NEWNET)
        _check(libc.unshare(CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID), "unshare the pod's namespaces")
        name = request["hostname"].encode()
        _check(libc.sethostname(name, len(name)), "sethostname")
        exec_r, exec_w = os.pipe()  # close-on-exec: EOF when the pause program has started
        pid = os.fork()
        if pid == 0:
            os.close(status_w)
            os.close(exec_r)
            try:
                os.execvp(PAUSE_PROGRAM[0], PAUSE_PROGRAM)
            except OSError as err:
                os.write(exec_w, f"{PAUSE_PROGRAM[0]}: {err.strerror}".encode())
            os._exit(127)
        os.close(exec_w)
        failed = os.read(exec_r, 4096).decode(errors="replace")
        os.write(status_w, f"error {failed}".encode() if failed else f"ok {pid}".encode())
        os._exit(0)
    except BaseException as err:  # noqa: BLE001 - reported to the launcher
        os.write(status_w, f"error {type(err).__name__}: {err}".encode())
        os._exit(1)


# --- a container ----------------------------------------------------------------------------------

def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _process(request: dict, ready_w: int) -> None:
    """The container's process, forked into the pod's PID namespace: the pod's other namespaces, its
    own mount namespace and root, then exec (or a built-in server). Never returns; a failure is
    written to ready_w."""
    try:
        os.setsid()
        for procs in request.get("cgroups") or []:  # in its cgroups before anything of it runs
            with open(procs, "w") as joining:
                joining.write("0")
        for ns, flag in (("ipc", CLONE_NEWIPC), ("uts", CLONE_NEWUTS), ("net", CLONE_NEWNET)):
            _setns(f"/proc/{request['sandbox']}/ns/{ns}", flag)
        _check(libc.unshare(CLONE_NEWNS), "unshare the mount namespace")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        for op in request["mounts"]:
            apply_mount(op)
        try:
            os.chdir(request.get("cwd") or "/")
        except OSError as err:
            raise StartError("StartError", f"chdir to {request.get('cwd')}: {err.strerror}") from None
        if request.get("gid") is not None:
            os.setgroups([int(request["gid"])])
            os.setgid(int(request["gid"]))
        if request.get("uid") is not None:
            os.setuid(int(request["uid"]))
        stdin, stdout, stderr = request["stdio"]
        if stdin is None:
            stdin = os.open(os.devnull, os.O_RDONLY)
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
        for fd in {stdin, stdout, stderr}:
            os.close(fd)
        if request.get("tty"):  # the terminal is its controlling terminal, as a runtime's console
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        builtin = request.get("builtin")
        if builtin and builtin.get("name") == "pause":  # the pause image: wait for SIGTERM, exit 0
            libc.prctl(PR_SET_NAME, b"pause", 0, 0, 0)
            signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
            signal.signal(signal.SIGINT, lambda *_: os._exit(0))
            os.write(ready_w, b"ok")
            os.close(ready_w)
            while True:
                signal.pause()
        if builtin:
            os.environ.clear()
            os.environ.update(request.get("env", {}))
            try:
                bound = agnhost.bind(builtin.get("tcp", []), builtin.get("udp", []))
            except OSError as err:  # it started, and ends at once, as a server that cannot bind does
                os.write(2, f"{err}\n".encode())
                os.write(ready_w, b"ok")
                os._exit(1)
            libc.prctl(PR_SET_NAME, builtin.get("title", "netplane-echo").encode()[:15], 0, 0, 0)
            os.write(ready_w, b"ok")
            os.close(ready_w)
            agnhost.serve(builtin["name"], bound)
            os._exit(0)
        argv, env = request["argv"], request.get("env", {})
        try:
            os.execvpe(argv[0], argv, env)  # ready_w is close-on-exec: EOF without a word is success
        except OSError as err:
            raise StartError("StartError", f'exec: "{argv[0]}": {err.strerror}') from None
    except StartError as err:
        os.write(ready_w, json.dumps({"reason": err.reason, "error": str(err)}).encode())
    except BaseException as err:  # noqa: BLE001
        os.write(ready_w, json.dumps({"reason": "StartError", "error": f"{type(err).__name__}: {err}"}).encode())
    os._exit(128)


def _stamp() -> bytes:
    """Now, as RFC 3339 with nanoseconds in UTC (the CRI log format's time)."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)).encode() + b".%09dZ" % (
        ns % 1_000_000_000)


def _records(stream: bytes, buffered: bytes, ended: bool) -> tuple[bytes, bytes]:
    """The CRI records of what a stream said so far, and what waits for the rest of its line."""
    out = []
    lines = buffered.split(b"\n")
    rest = lines.pop()
    for line in lines:
        while len(line) > LINE_MAX:
            out.append(b"%s %s P %s\n" % (_stamp(), stream, line[:LINE_MAX]))
            line = line[LINE_MAX:]
        out.append(b"%s %s F %s\n" % (_stamp(), stream, line))
    while len(rest) >= LINE_MAX or (ended and rest):
        out.append(b"%s %s P %s\n" % (_stamp(), stream, rest[:LINE_MAX]))
        rest = rest[LINE_MAX:]
    return b"".join(out), rest


def _rotate(path: str) -> None:
    """The file moves aside under its time (``0.log.20261207-060102``); the oldest go beyond LOG_MAX_FILES."""
    os.rename(path, f"{path}.{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.{time.time_ns() % 1000000:06d}")
    folder, name = os.path.split(path)
    rotated = sorted(f for f in os.listdir(folder) if f.startswith(name + "."))
    for old in rotated[:max(len(rotated) - (LOG_MAX_FILES - 1), 0)]:
        os.unlink(os.path.join(folder, old))


@dataclass
class Stdio:
    """A container's standard streams: the ends the copier keeps (the terminal's master, or the
    read ends of stdout and stderr and the write end of stdin) and the ends the container gets."""
    stdio: tuple[int | None, int, int]  # the container's stdin (None: /dev/null), stdout, stderr
    outputs: dict[int, bytes]  # the copier's output ends: fd -> stream name
    stdin: int | None  # the copier's end of the container's stdin
    tty: bool = False
    copier: tuple[int, ...] = ()
    container: tuple[int, ...] = ()


def _stdio(request: dict) -> Stdio:
    if request.get("tty"):
        master, slave = os.openpty()
        return Stdio((slave, slave, slave), {master: b"stdout"}, master, True, (master,), (slave,))
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe() if request.get("stdin") else (None, None)
    copier = (out_r, err_r) + ((in_w,) if in_w is not None else ())
    container = (out_w, err_w) + ((in_r,) if in_r is not None else ())
    return Stdio((in_r, out_w, err_w), {out_r: b"stdout", err_r: b"stderr"}, in_w, False, copier, container)


ATTACH_FRAME = struct.Struct(">BI")  # channel (0 stdin, 1 stdout, 2 stderr, 4 resize, 255 close stdin), length
CHANNELS = {b"stdout": 1, b"stderr": 2}


class Attached:
    """A client of the copier's attach socket (the kubelet, for ``kubectl attach``)."""

    def __init__(self, sock) -> None:
        self.sock, self.received, self.gone = sock, b"", False
        sock.setblocking(False)

    def send(self, channel: int, data: bytes) -> None:
        try:
            self.sock.sendall(ATTACH_FRAME.pack(channel, len(data)) + data)
        except OSError:  # gone, or too slow to keep up with the container: let go
            self.gone = True

    def frames(self) -> list[tuple[int, bytes]]:
        """The whole frames received so far ([] and gone once it hung up)."""
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return []
        except OSError:
            data = b""
        if not data:
            self.gone = True
            return []
        self.received += data
        found = []
        while len(self.received) >= ATTACH_FRAME.size:
            channel, size = ATTACH_FRAME.unpack(self.received[:ATTACH_FRAME.size])
            if len(self.received) < ATTACH_FRAME.size + size:
                break
            found.append((channel, self.received[ATTACH_FRAME.size:ATTACH_FRAME.size + size]))
            self.received = self.received[ATTACH_FRAME.size + size:]
        return found


def _copy_logs(request: dict, ends: Stdio) -> None:
    """A container's log copier: its output into the CRI log file and to attached clients, and
    what attached clients type into its stdin, until its output ends. The attach socket is an
    abstract Unix socket (``attach`` in the request) in the node's network namespace."""
    libc.prctl(PR_SET_NAME, b"log-copier", 0, 0, 0)
    path, stdin = request["log"], ends.stdin
    streams, waiting = dict(ends.outputs), {fd: b"" for fd in ends.outputs}
    sel = selectors.DefaultSelector()
    for fd in streams:
        sel.register(fd, selectors.EVENT_READ, "output")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(b"\0" + request["attach"].encode())
        listener.listen(8)
        sel.register(listener, selectors.EVENT_READ, "listener")
    except OSError:  # taken (a copier of an earlier run lingers): logs only, no attaching
        listener.close()
    clients: dict[int, Attached] = {}
    log = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def drop(client: Attached) -> None:
        nonlocal stdin
        sel.unregister(client.sock)
        clients.pop(client.sock.fileno(), None)
        client.sock.close()
        if request.get("stdinOnce") and stdin is not None and not ends.tty:  # its one session is over
            os.close(stdin)
            stdin = None

    while streams:
        for key, _ in sel.select():
            if key.data == "listener":
                conn, _ = listener.accept()
                client = Attached(conn)
                clients[conn.fileno()] = client
                sel.register(conn, selectors.EVENT_READ, "client")
                continue
            if key.data == "client":
                client = clients[key.fd]
                for channel, data in client.frames():
                    if channel == 0 and stdin is not None:
                        try:
                            os.write(stdin, data)
                        except OSError:
                            pass
                    elif channel == 4 and ends.tty:
                        resize(stdin, data)
                    elif channel == 255 and stdin is not None:
                        if ends.tty:
                            os.write(stdin, b"\x04")  # end of input, as a terminal says it
                        elif request.get("stdinOnce"):
                            os.close(stdin)
                            stdin = None
                if client.gone:
                    drop(client)
                continue
            try:
                data = os.read(key.fd, 65536)
            except OSError:  # EIO: the terminal's other side has closed
                data = b""
            name = streams[key.fd]
            records, waiting[key.fd] = _records(name, waiting[key.fd] + data, not data)
            if data:
                for client in list(clients.values()):
                    client.send(CHANNELS[name], data)
                    if client.gone:
                        drop(client)
            else:
                sel.unregister(key.fd)
                if key.fd != stdin:  # a terminal's master is both
                    os.close(key.fd)
                del streams[key.fd]
            while records:
                records = records[os.write(log, records):]
            if os.fstat(log).st_size >= LOG_MAX_BYTES:
                os.close(log)
                _rotate(path)
                log = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    os._exit(0)


def resize(terminal: int, data: bytes) -> None:
    """A terminal's new size, from a resize message (``{"Width": w, "Height": h}``); a bad one is ignored."""
    try:
        size = json.loads(data)
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", int(size["Height"]), int(size["Width"]), 0, 0))
    except (ValueError, KeyError, TypeError, OSError):
        pass


# --- the launcher ---------------------------------------------------------------------------------

def _reply(message: dict) -> None:
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(1, data):]


@dataclass
class Pending:
    """A request whose child has been forked and has not answered yet (its status pipe is open)."""

    request: dict
    pid: int
    deadline: float
    said: bytes = b""


class Launcher:
    """Serves requests without waiting on any one child: each answers on a pipe the loop watches,
    so the sandboxes and containers of several pods start side by side."""

    def __init__(self) -> None:
        self.keep: set[int] = set()  # what a child closes
        self.children: set[int] = set()  # containers' processes and pause processes: exits reported
        self.transient: set[int] = set()  # a sandbox's first child, which ends once its pause has started
        self.copiers: set[int] = set()  # the containers' log copiers, whose ends are no one's business
        self.unclaimed: dict[int, int] = {}  # exits of processes not yet announced: their status
        self.pending: dict[int, Pending] = {}  # by the read end of its status pipe
        self.sel = selectors.DefaultSelector()
        self.own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY)

    def _child(self, *keep: int) -> None:
        """In a child just forked: default signals, and none of the launcher's descriptors but ``keep``."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        for fd in (self.keep | set(self.pending)) - set(keep):
            os.close(fd)
        null = os.open(os.devnull, os.O_RDWR)  # the kubelet's pipes are the launcher's alone
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)

    def _fork(self, child, request: dict, pid_ns: str | None = None) -> None:
        """Fork child(request, status_w), into the PID namespace at pid_ns when given (setns there
        moves only the children to come, and the launcher's own is set back at once); its answer
        is read by the loop (_answer)."""
        status_r, status_w = os.pipe()
        if pid_ns is not None:
            _setns(pid_ns, CLONE_NEWPID)
        try:
            pid = os.fork()
        finally:
            if pid_ns is not None and pid != 0:
                _check(libc.setns(self.own_pid_ns, CLONE_NEWPID), "setns back to the launcher's PID namespace")
        if pid == 0:
            os.close(status_r)
            self._child(status_w, *request.get("stdio", ()))
            child(request, status_w)
        os.close(status_w)
        os.set_blocking(status_r, False)
        self.pending[status_r] = Pending(request, pid, time.monotonic() + START_SECONDS)
        self.sel.register(status_r, selectors.EVENT_READ, "status")
        if request.get("op") == "sandbox":
            self.transient.add(pid)

    def handle(self, request: dict) -> None:
        if request.get("op") == "sandbox":
            self._fork(_sandbox, request)
            return
        ends = _stdio(request)  # the copier's ends, the container's ends
        try:
            copier = os.fork()
            if copier == 0:
                self._child(*ends.copier)
                for fd in ends.container:
                    os.close(fd)
                _copy_logs(request, ends)
            self.copiers.add(copier)
            for fd in ends.copier:
                os.close(fd)
            ends.copier = ()
            self._fork(_process, {**request, "stdio": ends.stdio}, f"/proc/{request['sandbox']}/ns/pid")
        except OSError as err:  # the sandbox has gone
            _reply({"id": request["id"], "reason": "StartError", "error": str(err)})
        finally:
            for fd in {*ends.copier, *ends.container}:
                os.close(fd)

    def read_status(self, fd: int) -> None:
        """More of a child's answer; at its end (EOF), the reply."""
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        if data:
            self.pending[fd].said += data
            return
        self._answer(fd, self.pending[fd].said)

    def _answer(self, fd: int, said: bytes | None) -> None:
        """Reply to a request: its child said ``said`` and closed its pipe (None: nothing in time)."""
        entry = self.pending.pop(fd)
        self.sel.unregister(fd)
        os.close(fd)
        request = entry.request
        if request.get("op") == "sandbox":
            word, _, rest = (said or b"").decode(errors="replace").partition(" ")
            if word == "ok":
                self._announce(request["id"], int(rest))
            else:
                _reply({"id": request["id"], "error": rest or "the sandbox did not start", "reason": "SandboxError"})
            return
        if said in (b"", b"ok"):
            self._announce(request["id"], entry.pid)
            return
        try:
            message = json.loads(said or b'{"reason": "StartError", "error": "it did not start in time"}')
        except ValueError:
            message = {"reason": "StartError", "error": (said or b"").decode(errors="replace")}
        if said is None:
            os.kill(entry.pid, signal.SIGKILL)
        self.unclaimed.pop(entry.pid, None)
        _reply({"id": request["id"], **message})

    def _announce(self, request_id: int, pid: int) -> None:
        """Reply with a started process, and its exit at once if it has ended already."""
        _reply({"id": request_id, "pid": pid})
        if pid in self.unclaimed:
            _reply({"exit": pid, "code": self.unclaimed.pop(pid)})
        else:
            self.children.add(pid)

    def expire(self) -> None:
        now = time.monotonic()
        for fd in [fd for fd, entry in self.pending.items() if entry.deadline <= now]:
            self._answer(fd, None)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.children:
                self.children.discard(pid)
                _reply({"exit": pid, "code": _exit_code(status)})
            elif pid in self.transient:
                self.transient.discard(pid)
            elif pid in self.copiers:
                self.copiers.discard(pid)
            else:  # a process whose start is not answered yet (a pause, or one that ended at once)
                self.unclaimed[pid] = _exit_code(status)

    def run(self) -> None:
        """Serve requests until stdin closes; report every exit."""
        import gc

        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        self.sel.register(0, selectors.EVENT_READ, "requests")
        self.sel.register(wake_r, selectors.EVENT_READ, "children")
        self.keep = {wake_r, wake_w, self.sel.fileno(), self.own_pid_ns}
        gc.collect()
        gc.freeze()  # what is here now stays out of the collector's reach: shared with every child
        pending = b""
        while True:
            wait = min((e.deadline for e in self.pending.values()), default=None)
            for key, _ in self.sel.select(None if wait is None else max(wait - time.monotonic(), 0)):
                if key.data == "status":
                    self.read_status(key.fd)
                elif key.data == "children":
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                else:
                    data = os.read(0, 65536)
                    if not data:
                        return  # the kubelet is gone; its pods live on
                    pending += data
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        if line.strip():
                            self.handle(json.loads(line))
            self.expire()
            self.reap()


if __name__ == "__main__":
    Launcher().run()
