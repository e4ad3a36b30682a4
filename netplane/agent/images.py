"""The image catalog: what a well-known image runs here, since nothing is pulled.

An image is its ENTRYPOINT and CMD, its environment and working directory, and the few files of its
own that make it behave as it does (nginx's configuration, busybox's applets on the PATH), laid over
the machine's files (netplane.agent.rootfs). The programs are Debian's (nginx, busybox, curl,
python3, dig, tcpdump, iperf3) or netplane's own built-in servers (the echo server, pause), which the
launcher runs without an exec. Kubernetes' rule applies: ``command`` replaces the ENTRYPOINT and
drops the CMD, ``args`` replaces the CMD.

A lab file can add images (``images:``), each an image name, or a prefix ending in ``*``, with
its ``entrypoint``, ``cmd``, ``env``, ``workingDir`` and ``stopSignal``. An image neither knows, without a
``command``, cannot be run: the kubelet reports ErrImagePull, then ImagePullBackOff, naming this
catalog, as a node that cannot pull it would.
"""
from __future__ import annotations

import shutil
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from netplane.agent import agnhost
from netplane.agent.rootfs import Layer
from netplane.kernel import programs

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ECHO, PAUSE = "/netplane-echo", "/pause"  # the built-in servers' entrypoints
BUILTINS = (ECHO, PAUSE)


@dataclass(frozen=True)
class Image:
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=lambda: {"PATH": DEFAULT_PATH})
    working_dir: str = "/"
    layer: Layer = Layer()
    needs: str = ""  # the program this image runs, which must be installed
    stop_signal: str = "SIGTERM"  # its STOPSIGNAL: what a container of it is stopped with


class ImageError(Exception):
    """An image this node cannot run; ``reason`` as the kubelet reports it (ErrImagePull)."""

    def __init__(self, message: str, reason: str = "ErrImagePull") -> None:
        super().__init__(message)
        self.reason = reason


# -- nginx as its official image sets it up: the welcome page on port 80, logs to the container's
#    stdout and stderr, configuration in /etc/nginx/conf.d (which users replace with a ConfigMap)

NGINX_CONF = """\
# the nginx image's main configuration (netplane's catalog): the sites are in conf.d
user www-data;
worker_processes auto;
error_log /var/log/nginx/error.log notice;
pid /var/run/nginx.pid;

events {
    worker_connections 1024;
}

http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                    '$status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for"';
    access_log /var/log/nginx/access.log main;
    sendfile on;
    keepalive_timeout 65;
    include /etc/nginx/conf.d/*.conf;
}
"""
NGINX_DEFAULT_SITE = """\
server {
    listen 80;
    server_name localhost;

    location / {
        root /usr/share/nginx/html;
        index index.html index.htm;
    }
}
"""
NGINX = Image(
    cmd=("nginx", "-g", "daemon off;"),
    layer=Layer(files={"/etc/nginx/nginx.conf": NGINX_CONF, "/etc/nginx/conf.d/default.conf": NGINX_DEFAULT_SITE},
                links={"/var/log/nginx/access.log": "/dev/stdout", "/var/log/nginx/error.log": "/dev/stderr",
                       "/etc/nginx/sites-enabled/default": "/dev/null"}),
    needs="nginx",
    stop_signal="SIGQUIT",  # the nginx image's STOPSIGNAL: a graceful shutdown that lets requests finish
)

CURL_ENTRYPOINT = """\
#!/bin/sh
# curlimages/curl's entrypoint: arguments that start with '-' or name no program are curl's
if [ "${1#-}" != "$1" ] || [ -z "$(command -v "$1")" ]; then
    set -- curl "$@"
fi
exec "$@"
"""


@cache
def busybox_applets() -> tuple[str, ...]:
    """The applets of Debian's busybox (empty when it is not installed)."""
    if shutil.which("busybox") is None:
        return ()
    listed = programs.run_now(None, ["busybox", "--list"]).out
    return tuple(a for a in listed.split() if a and "/" not in a and a not in ("[", "[["))


def _busybox_links() -> dict[str, str]:
    """Busybox's applets first on the PATH (in /usr/local/bin), as in an image built on busybox."""
    return {f"/usr/local/bin/{applet}": "/usr/bin/busybox" for applet in busybox_applets()}


def _test_server(program: str, source: str, cmd: tuple[str, ...] = ()) -> Image:
    """An image of one of agnhost.py's programs (``source``), the file at /<program> as the image
    has its binary."""
    return Image(entrypoint=(f"/{program}",), cmd=cmd, needs="python3", layer=Layer(
        files={f"/{program}": source}, modes={f"/{program}": 0o755}))


def _netplane_itself() -> tuple[str, ...]:
    """What a pod needs to run netplane's own Python programs: the interpreter's installation, the
    virtual environment and the source tree (each may be in a directory containers get fresh)."""
    source = str(Path(__file__).resolve().parents[2])
    found = dict.fromkeys(str(Path(p).resolve()) for p in (sys.base_prefix, sys.prefix, source))
    return tuple(p for p in found if not any(p.startswith(o + "/") for o in found if o != p))


def _catalog() -> dict[str, Image]:
    applets, servers = _busybox_links(), Path(agnhost.__file__).read_text()
    agnhost_image = _test_server("agnhost", servers, ("pause",))
    shell = Image(cmd=("sh",), layer=Layer(links=applets), needs="busybox")
    python = Image(cmd=("python3",), layer=Layer(links={"/usr/local/bin/python": "/usr/bin/python3"}),
                   needs="python3")
    dns = Image(entrypoint=(sys.executable, "-I", "-m", "netplane.addons.dns"), cmd=("-conf", "/etc/coredns/Corefile"),
                layer=Layer(binds=_netplane_itself()))
    return {
        "netplane/echo": Image(entrypoint=(ECHO,)),
        "registry.k8s.io/pause": Image(entrypoint=(PAUSE,)),
        "netplane/dns": dns,  # netplane's cluster DNS (netplane.addons.dns), also under CoreDNS's names
        "registry.k8s.io/coredns/coredns": dns,
        "coredns/coredns": dns,
        "nginx": NGINX,
        "busybox": shell,
        "alpine": Image(cmd=("/bin/sh",), layer=shell.layer, needs="busybox"),
        "debian": Image(cmd=("bash",)),
        "ubuntu": Image(cmd=("bash",)),
        "curlimages/curl": Image(
            entrypoint=("/entrypoint.sh",), cmd=("curl",), needs="curl",
            layer=Layer(files={"/entrypoint.sh": CURL_ENTRYPOINT}, links=applets,
                        modes={"/entrypoint.sh": 0o755})),
        "python": python,
        "nicolaka/netshoot": Image(cmd=("bash",), needs="tcpdump"),
        "registry.k8s.io/e2e-test-images/agnhost": agnhost_image,
        "k8s.gcr.io/e2e-test-images/agnhost": agnhost_image,
        "hashicorp/http-echo": _test_server("http-echo", servers),
        "traefik/whoami": _test_server("whoami", servers),
        "bitnami/kubectl": Image(entrypoint=("kubectl",), cmd=("--help",), needs="kubectl"),
        "registry.k8s.io/kubectl": Image(entrypoint=("kubectl",), needs="kubectl"),
    }


CATALOG_HELP = ("netplane runs images from its catalog (netplane/agent/images.py: {known}); add one in the lab "
                "file's `images:` (name or prefix*: entrypoint, cmd), or give the container a `command`")


def base_name(image: str) -> str:
    """An image reference without registry defaults, tag or digest: ``docker.io/library/nginx:1.27`` -> ``nginx``."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    if ":" in name[slash + 1:]:
        name = name[:name.rfind(":")]
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return name


class Catalog:
    """The built-in catalog and a lab's own entries (which win)."""

    def __init__(self, extra: Mapping[str, Mapping] | None = None) -> None:
        self.images = _catalog()
        self.prefixes: list[tuple[str, Image]] = []
        for name, entry in (extra or {}).items():
            image = Image(entrypoint=tuple(entry.get("entrypoint") or ()), cmd=tuple(entry.get("cmd") or ()),
                          env={"PATH": DEFAULT_PATH, **(entry.get("env") or {})},
                          working_dir=entry.get("workingDir") or "/", stop_signal=entry.get("stopSignal") or "SIGTERM")
            if name.endswith("*"):
                self.prefixes.append((name[:-1], image))
            else:
                self.images[base_name(name)] = image
        self.prefixes.sort(key=lambda p: -len(p[0]))

    def find(self, image: str) -> Image | None:
        name = base_name(image)
        for prefix, found in self.prefixes:
            if image.startswith(prefix) or name.startswith(prefix):
                return found
        return self.images.get(name)

    def stop_signal(self, container: dict) -> int:
        """The signal a container is stopped with: its image's STOPSIGNAL, else SIGTERM."""
        image = self.find(container.get("image", ""))
        return signal.Signals[image.stop_signal] if image is not None else signal.SIGTERM

    def resolve(self, container: dict) -> tuple[Image, list[str]]:
        """The image a container runs and its command line (Kubernetes' ENTRYPOINT/CMD rule)."""
        reference = container.get("image", "")
        image = self.find(reference)
        command, args = container.get("command"), container.get("args")
        if image is None:
            if not command:
                known = ", ".join(sorted(self.images))
                raise ImageError(f'Failed to pull image "{reference}": the image is not in this node\'s catalog; '
                                 + CATALOG_HELP.format(known=known))
            image = Image()
        elif image.needs and shutil.which(image.needs, path=image.env.get("PATH", DEFAULT_PATH)) is None:
            raise ImageError(f'Failed to pull image "{reference}": it runs {image.needs}, which this machine lacks '
                             "(run scripts/install)")
        if command:
            argv = [*command, *(args or [])]
        else:
            argv = [*image.entrypoint, *(args if args is not None else image.cmd)]
        if not argv:
            raise ImageError(f'the image "{reference}" has no entrypoint or command: give the container a `command`',
                             reason="CreateContainerError")
        return image, [str(a) for a in argv]
