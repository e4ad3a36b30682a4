"""`netplane snapshot save|restore`: a lab's store backed up and put back, as an operator backs up
etcd and restores it under a stopped API server.

Save takes a consistent copy of the lab's SQLite store while the lab runs (SQLite's online backup:
every object at one revision). Restore checks the file, stops the lab's control plane, puts the
copy in the store's place and starts the control plane again on it, as after a crash: the node
agents keep the pods the snapshot has (the same pod, by uid, is adopted, not restarted), start the
ones it has that do not run, and remove the ones it does not have; Services get their ClusterIPs
and NodePorts back, and every controller converges on the restored objects.

A lab whose store is etcd (``storage: etcd://...`` or ``controlPlane.storage: etcd``) is refused
with what to use instead: this command handles the SQLite store only.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from netplane.lab import lifecycle
from netplane.lab.lifecycle import LabFailure, Say
from netplane.lab.state import LabState

TABLES = {"objects", "events", "meta"}  # the SQLite backend's schema (netplane/api/backends.py)


@dataclass(frozen=True)
class Snapshot:
    path: Path
    objects: int
    revision: int


def _store(state: LabState) -> Path:
    """The lab's SQLite store, or a LabFailure saying why it has none."""
    if not state.exists():
        raise LabFailure(f"lab {state.name!r} is not up")
    lab = state.load_lab()
    if lab.storage != "sqlite" or lab.controlPlane.storage != "sqlite":
        raise LabFailure("this lab keeps its objects in etcd: back it up with etcd's own tools "
                         "(etcdctl snapshot save) against its members; `netplane snapshot` handles the SQLite store")
    if lab.controlPlane.mode != "embedded":
        raise LabFailure("this lab's API server runs in its own host (controlPlane.mode: hosts); "
                         "`netplane snapshot` handles the embedded control plane's store")
    return state.store


def read(path: Path) -> Snapshot:
    """What a snapshot file holds (LabFailure when it is not one)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not TABLES <= tables or db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise LabFailure(f"{path} is not a netplane store snapshot (no objects, events and meta tables)")
            count = db.execute("SELECT count(*) FROM objects").fetchone()[0]
            revision = db.execute("SELECT coalesce(max(rv), 0) FROM objects").fetchone()[0]
        finally:
            db.close()
    except sqlite3.DatabaseError as err:
        raise LabFailure(f"{path} is not a netplane store snapshot: {err}") from None
    return Snapshot(path, count, revision)


def save(state: LabState, path: Path) -> Snapshot:
    """A consistent copy of the running lab's store at ``path`` (written whole, then renamed in)."""
    source = _store(state)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    os.replace(partial, path)
    return read(path)


def restore(state: LabState, path: Path, say: Say) -> Snapshot:
    """Put a snapshot in the lab's store's place and start the control plane again on it."""
    snapshot = read(path)
    store = _store(state)
    say(f"stopping the control plane of lab {state.name!r}")
    lifecycle.stop_control_plane(state)
    for suffix in ("-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    partial = store.with_name(store.name + ".restoring")
    shutil.copyfile(path, partial)
    os.replace(partial, store)
    say(f"restored {snapshot.objects} objects (revision {snapshot.revision}); starting the control plane on them")
    lifecycle.resume(state, say)
    return snapshot
