"""A pod's volumes, as the kubelet's volume plugins set them up on the node, below the pod's
directory: emptyDir (a directory its containers share), configMap, secret, downwardAPI and projected
(files written as upstream's atomic writer lays them out: ``..data`` points at a timestamped
directory, each file is a link through it), and hostPath (the machine's path, checked against its
``type``). Each container's volumeMounts (subPath, readOnly) become the bind mounts of its root. Set up again
while the pod runs, a volume whose ConfigMap, Secret or pod fields changed gets its new files in one
switch of ``..data`` (a subPath mount keeps the file it was given, as upstream's does).

A volume netplane cannot provide (persistentVolumeClaim, nfs, csi, ...) or one whose ConfigMap or
Secret is missing raises VolumeError, worded as the kubelet's FailedMount event: the pod stays
Pending in ContainerCreating, never Running without it.
"""
from __future__ import annotations

import base64
import os
import shutil
import stat
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from netplane.agent import podenv
from netplane.agent.rootfs import VolumeMount

SUPPORTED = ("emptyDir", "configMap", "secret", "downwardAPI", "projected", "hostPath")
FOLLOWING = {"configMap", "secret", "downwardAPI", "projected"}  # the kinds whose files follow their objects
HOST_PATH_TYPES = {
    "Directory": (stat.S_ISDIR, "is not a directory"), "File": (stat.S_ISREG, "is not a file"),
    "Socket": (stat.S_ISSOCK, "is not a socket file"), "CharDevice": (stat.S_ISCHR, "is not a character device"),
    "BlockDevice": (stat.S_ISBLK, "is not a block device"),
}


class VolumeError(Exception):
    """A volume that cannot be set up; the message is the FailedMount event's."""


def _kind(volume: dict) -> str:
    return next((k for k in volume if k != "name"), "")


def _write_atomic(target: Path, files: Mapping[str, tuple[bytes, int]]) -> None:
    """The files in target as upstream's atomic writer leaves them: ``..<time>/<path>`` written first,
    ``..data`` switched to it with one rename, each visible top-level name a link through ``..data``;
    nothing is written when the files there are these already."""
    if _holds(target, files):
        return
    target.mkdir(parents=True, exist_ok=True)
    stamp = target / datetime.now(timezone.utc).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    for path, (data, mode) in files.items():
        file = stamp / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(data)
        os.chmod(file, mode)
    stamp.mkdir(parents=True, exist_ok=True)
    old = os.readlink(target / "..data") if (target / "..data").is_symlink() else None
    tmp = target / "..data_tmp"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(stamp.name)
    os.rename(tmp, target / "..data")
    visible = {p.split("/", 1)[0] for p in files}
    for entry in os.listdir(target):
        if not entry.startswith("..") and entry not in visible:
            os.unlink(target / entry)
    for name in visible:
        if not (target / name).is_symlink():
            (target / name).symlink_to(f"..data/{name}")
    if old and old != stamp.name:
        shutil.rmtree(target / old, ignore_errors=True)


def _holds(target: Path, files: Mapping[str, tuple[bytes, int]]) -> bool:
    """Whether the atomic writer's directory holds exactly these files, contents and modes."""
    data = target / "..data"
    if not data.is_dir():
        return False
    present = {str(p.relative_to(data)) for p in data.rglob("*") if p.is_file()}
    if present != set(files):
        return False
    return all((data / path).read_bytes() == content and stat.S_IMODE((data / path).stat().st_mode) == mode
               for path, (content, mode) in files.items())


def _keyed(kind: str, source: dict, lookup: podenv.Lookup, volume: str) -> dict[str, tuple[bytes, int]]:
    """The files of a configMap or secret source: every key, or its items, with their modes."""
    plural, name = ("configmaps", source.get("name", "")) if kind == "configMap" else \
        ("secrets", source.get("secretName", source.get("name", "")))
    found = lookup(plural, name)
    mode = int(source.get("defaultMode", 0o644))
    if found is None:
        if source.get("optional"):
            return {}
        raise VolumeError(f'MountVolume.SetUp failed for volume "{volume}" : {plural[:-1]} "{name}" not found')
    data = {k: (base64.b64decode(v) if kind == "secret" else v.encode()) for k, v in (found.get("data") or {}).items()}
    if kind == "configMap":
        data |= {k: base64.b64decode(v) for k, v in (found.get("binaryData") or {}).items()}
    items = source.get("items")
    if not items:
        return {k: (v, mode) for k, v in data.items()}
    out = {}
    for item in items:
        if item["key"] not in data:
            if source.get("optional"):
                continue
            raise VolumeError(f'MountVolume.SetUp failed for volume "{volume}" : configmap references non-existent '
                              f'config key: {item["key"]}' if kind == "configMap" else
                              f'MountVolume.SetUp failed for volume "{volume}" : references non-existent secret key: '
                              f'{item["key"]}')
        out[item["path"]] = (data[item["key"]], int(item.get("mode", mode)))
    return out


def _downward(pod: dict, source: dict, container_of: Mapping[str, dict],
              allocatable: Mapping[str, str]) -> dict[str, tuple[bytes, int]]:
    mode = int(source.get("defaultMode", 0o644))
    out = {}
    for item in source.get("items") or []:
        if "fieldRef" in item:
            value = podenv.field_value(pod, item["fieldRef"]["fieldPath"])
        else:
            ref = item.get("resourceFieldRef") or {}
            value = podenv.resource_value(container_of.get(ref.get("containerName", ""), {}), ref, allocatable)
        out[item["path"]] = (value.encode(), int(item.get("mode", mode)))
    return out


def _host_path(source: dict, volume: str) -> str:
    path, kind = source.get("path", ""), source.get("type", "")
    if kind == "DirectoryOrCreate":
        os.makedirs(path, mode=0o755, exist_ok=True)
    elif kind == "FileOrCreate" and not os.path.exists(path):
        os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
    elif kind in HOST_PATH_TYPES:
        test, wrong = HOST_PATH_TYPES[kind]
        if not os.path.exists(path) or not test(os.stat(path).st_mode):
            raise VolumeError(f'MountVolume.SetUp failed for volume "{volume}" : hostPath type check failed: '
                              f"{path} {wrong}")
    return path


def follows_objects(pod: dict) -> bool:
    """Whether a volume of the pod has files that change with objects (set up again while it runs)."""
    return any(FOLLOWING & set(volume) for volume in pod["spec"].get("volumes") or [])


def token_sources(pod: dict) -> list[tuple[str, dict]]:
    """The serviceAccountToken sources of the pod's projected volumes, with their volume's name."""
    return [(volume["name"], part["serviceAccountToken"]) for volume in pod["spec"].get("volumes") or []
            for part in (volume.get("projected") or {}).get("sources") or [] if "serviceAccountToken" in part]


def prepare(pod: dict, pod_dir: Path, lookup: podenv.Lookup, allocatable: Mapping[str, str] | None = None,
            tokens: Mapping[tuple[str, str], str] | None = None) -> dict[str, str]:
    """Set up every volume of the pod: its name -> the path on the machine its mounts bind.
    ``tokens``: the ServiceAccount token of each serviceAccountToken source, by (volume, path)."""
    containers = {c["name"]: c for c in pod["spec"].get("containers", [])}
    out = {}
    for volume in pod["spec"].get("volumes") or []:
        name, kind = volume["name"], _kind(volume)
        source = volume.get(kind) or {}
        here = pod_dir / "volumes" / name
        if kind not in SUPPORTED:
            raise VolumeError(f'volume "{name}" is of type {kind}, which netplane cannot provide (it provides '
                              f"{', '.join(SUPPORTED)}): the pod waits, as a node without that plugin would")
        if kind == "emptyDir":
            here.mkdir(parents=True, exist_ok=True)
            os.chmod(here, 0o777)
        elif kind == "hostPath":
            out[name] = _host_path(source, name)
            continue
        elif kind in ("configMap", "secret"):
            _write_atomic(here, _keyed(kind, source, lookup, name))
        elif kind == "downwardAPI":
            _write_atomic(here, _downward(pod, source, containers, allocatable or {}))
        else:
            files: dict[str, tuple[bytes, int]] = {}
            for part in source.get("sources") or []:
                part_kind = _kind(part)
                if part_kind in ("configMap", "secret"):
                    files |= _keyed(part_kind, {"defaultMode": source.get("defaultMode", 0o644), **part[part_kind]},
                                    lookup, name)
                elif part_kind == "downwardAPI":
                    files |= _downward(pod, {"defaultMode": source.get("defaultMode", 0o644), **part[part_kind]},
                                       containers, allocatable or {})
                elif part_kind == "serviceAccountToken":
                    path = part[part_kind]["path"]
                    files[path] = ((tokens or {})[(name, path)].encode(), int(source.get("defaultMode", 0o644)))
                else:
                    raise VolumeError(f'volume "{name}": projected sources of type {part_kind} are not provided by '
                                      "netplane yet")
            _write_atomic(here, files)
        out[name] = str(here)
    return out


def referenced(pod: dict) -> set[tuple[str, str]]:
    """The (plural, name) of the ConfigMaps and Secrets the pod's volumes read."""
    found = set()
    for volume in pod["spec"].get("volumes") or []:
        parts = [volume] + [p for p in (volume.get("projected") or {}).get("sources") or []]
        for part in parts:
            if "configMap" in part:
                found.add(("configmaps", part["configMap"].get("name", "")))
            if "secret" in part:
                found.add(("secrets", part["secret"].get("secretName", part["secret"].get("name", ""))))
    return found


def mounts(container: dict, prepared: Mapping[str, str]) -> list[VolumeMount]:
    """A container's volumeMounts as bind mounts of its root."""
    out = []
    for mount in container.get("volumeMounts") or []:
        source = prepared[mount["name"]]
        if mount.get("subPath"):
            source = os.path.join(source, mount["subPath"])
            if not os.path.lexists(source):
                os.makedirs(source, exist_ok=True)  # the kubelet makes a missing subPath a directory
            source = os.path.realpath(source)  # a configMap's key is a link through ..data
        out.append(VolumeMount(source, mount["mountPath"], bool(mount.get("readOnly"))))
    return out
