"""A container's root, as the steps the launcher carries out in the container's own mount namespace.

No image layers are downloaded: a container sees the machine's files, through an overlay per
top-level directory whose upper layer lives in a tmpfs of the container's own, so what it writes
there (a package's pid file, /var/log, /etc) stays in the container and is gone when it ends. Its
image's own files (netplane.agent.images) are written into those upper layers first, as an image's
top layer would hold them. The container has fresh /tmp, /run, /root, /home and /dev/shm (nothing of the machine's users), its own /proc (of the
pod's PID namespace) and /sys (of the pod's network namespace), the machine's /dev, the kubelet's
/etc/hosts, /etc/hostname and /etc/resolv.conf, and its volumes; then it is chrooted there.

What it shares with the machine: the files below the overlays (read through them), the mounts
below the top-level directories (bound as they are, writable), the kernel.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PRIVATE = {"tmp": "mode=1777", "run": "mode=755", "root": "mode=700", "home": "mode=755"}  # empty, the container's
OWN = {"proc", "sys", "dev", *PRIVATE}  # made fresh for each container, never the machine's


@dataclass(frozen=True)
class Layer:
    """An image's own files: path -> content, and path -> symlink target; and the machine's
    directories it runs from (netplane's own programs: the interpreter, the virtual environment and
    the source), bound read-only where they are, even inside the directories a container gets fresh."""

    files: Mapping[str, str] = field(default_factory=dict)
    links: Mapping[str, str] = field(default_factory=dict)
    modes: Mapping[str, int] = field(default_factory=dict)
    binds: tuple[str, ...] = ()


@dataclass(frozen=True)
class VolumeMount:
    source: str  # a path on the machine
    target: str  # where the container sees it
    readonly: bool = False


@dataclass(frozen=True)
class Top:
    """A top-level entry of the machine's root: a directory, a file, or a symlink (``link``)."""

    name: str
    kind: str  # dir, file, link
    link: str = ""


def machine_root(root: str = "/") -> list[Top]:
    out = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_symlink():
            out.append(Top(entry.name, "link", os.readlink(entry.path)))
        elif entry.is_dir():
            out.append(Top(entry.name, "dir"))
        else:
            out.append(Top(entry.name, "file"))
    return out


def machine_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """The mount points of the machine, outside the directories a container gets fresh."""
    points = []
    with open(mountinfo) as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point != "/" and point.split("/")[1] not in OWN:
                points.append(point)
    return points


def _under(path: str, top: str) -> bool:
    """Whether path is /top or lies below it."""
    return path == f"/{top}" or path.startswith(f"/{top}/")


def _outermost(points: Iterable[str]) -> list[str]:
    """Mount points not inside another of them (a recursive bind takes those along)."""
    ordered = sorted(set(points))
    out: list[str] = []
    for p in ordered:
        if not any(p.startswith(o + "/") for o in out):
            out.append(p)
    return out


def plan(stage: str, tops: list[Top], mounts: list[str], layer: Layer, kubelet_files: Mapping[str, str],
         volumes: list[VolumeMount]) -> list[dict]:
    """The launcher's steps for one container; ``stage`` is an empty directory of the kubelet's that
    the container's tmpfs covers (its root is ``stage/root``, its upper layers ``stage/layers``)."""
    root, layers = f"{stage}/root", f"{stage}/layers"
    steps: list[dict] = [{"op": "tmpfs", "target": stage}, {"op": "mkdir", "target": root}]
    present = {t.name for t in tops}
    for top in tops:
        at = f"{root}/{top.name}"
        if top.kind == "link":
            steps.append({"op": "symlink", "to": top.link, "target": at})
        elif top.name == "proc":
            steps.append({"op": "proc", "target": at})
        elif top.name == "sys":
            steps.append({"op": "sysfs", "target": at})
        elif top.name == "dev":
            steps += [{"op": "bind", "source": "/dev", "target": at, "recursive": True},
                      {"op": "tmpfs", "target": f"{at}/shm", "options": "mode=1777"}]
        elif top.name in PRIVATE:  # as an image has them: nothing of the machine's (its users' homes, keys)
            steps.append({"op": "tmpfs", "target": at, "options": PRIVATE[top.name]})
            steps += _layer_steps(layer, top.name, at)
        elif top.kind == "dir":
            upper = f"{layers}/{top.name}/upper"
            steps += [{"op": "mkdir", "target": upper}]
            steps += _layer_steps(layer, top.name, upper)
            steps.append({"op": "overlay", "lower": [f"/{top.name}"], "upper": upper,
                          "work": f"{layers}/{top.name}/work", "target": at})
        else:
            steps.append({"op": "bind", "source": f"/{top.name}", "target": at})
    for point in _outermost(p for p in mounts if p.count("/") > 1):  # a top-level one is under its overlay
        steps.append({"op": "bind", "source": point, "target": f"{root}{point}", "recursive": True})
    for name in sorted({p.split("/")[1] for p in (*layer.files, *layer.links)} - present):
        steps += _layer_steps(layer, name, f"{root}/{name}")  # an image's own top-level paths
    # a path in the container (a volume's mountPath) is resolved inside its root, its links too
    for path in layer.binds:
        steps.append({"op": "bind", "source": path, "root": root, "target": path, "recursive": True,
                      "readonly": True})
    for target, source in sorted(kubelet_files.items()):
        steps.append({"op": "bind", "source": source, "root": root, "target": target})
    for volume in volumes:
        steps.append({"op": "bind", "source": volume.source, "root": root, "target": volume.target,
                      "recursive": True, "readonly": volume.readonly})
    steps.append({"op": "chroot", "target": root})
    return steps


def _layer_steps(layer: Layer, top: str, into: str) -> list[dict]:
    """The image's files under /top, written below ``into``."""
    steps: list[dict] = []
    for path, data in sorted(layer.files.items()):
        if _under(path, top):
            steps.append({"op": "file", "target": into + path[len(top) + 1:], "data": data,
                          "mode": layer.modes.get(path, 0o644)})
    for path, to in sorted(layer.links.items()):
        if _under(path, top):
            steps.append({"op": "symlink", "to": to, "target": into + path[len(top) + 1:]})
    return steps
