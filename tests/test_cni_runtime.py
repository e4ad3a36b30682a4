"""The CNI runtime's libcni duties, with fake plugins. Conventions for tests:

- fake plugins are small scripts in ``tmp_path/plugins`` (the only CNI_PATH), run in the lab-named
  namespace ``np.<lab>.node`` as the runtime runs real ones; they touch no network, they only log
  what they were handed to ``tmp_path/plugins/log`` (one JSON line per call) and answer VERSION
  with the versions they were written with;
- configuration directories and the runtime's cache live under ``tmp_path``.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from netplane.cni.runtime import Attachment, CNIError, Runtime, load_conf_dir

FAKE = """#!{python}
# A plugin that supports {versions}; it logs every call and passes prevResult on (or a bare result).
import json, os, sys
command = os.environ["CNI_COMMAND"]
conf = json.loads(sys.stdin.read() or "{{}}")
with open(os.path.join(os.path.dirname(__file__), "log"), "a") as log:
    log.write(json.dumps({{"plugin": "{name}", "command": command, "conf": conf}}) + "\\n")
if command == "VERSION":
    json.dump({{"cniVersion": "1.1.0", "supportedVersions": {versions}}}, sys.stdout)
elif command == "ADD":
    json.dump(conf.get("prevResult", {{"cniVersion": conf["cniVersion"], "ips": []}}), sys.stdout)
"""
ALL = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]


@pytest.fixture
def plugins(tmp_path: Path):
    """plugins(name, versions) writes a fake plugin; the fixture's value is its directory."""
    directory = tmp_path / "plugins"
    directory.mkdir()

    def make(name: str, versions: list[str] = ALL) -> Path:
        path = directory / name
        path.write_text(FAKE.format(python=sys.executable, name=name, versions=json.dumps(versions)))
        path.chmod(0o755)
        return path

    make.dir = directory
    return make


@pytest.fixture
def runtime(plugins, make_netns, tmp_path: Path) -> Runtime:
    return Runtime([str(plugins.dir)], str(tmp_path / "cache"), exec_netns=make_netns("node"), negotiate=True)


def calls(plugins) -> list[tuple[str, str]]:
    """(plugin, command) of every call the fake plugins logged, in order."""
    log = plugins.dir / "log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [(c["plugin"], c["command"]) for c in map(json.loads, lines)]


def logged(plugins, command: str) -> list[dict]:
    lines = (plugins.dir / "log").read_text().splitlines()
    return [c["conf"] for c in map(json.loads, lines) if c["command"] == command]


def conflist(*types: str, version: str = "1.0.0", **extra) -> dict:
    return {"cniVersion": version, "name": "net", "plugins": [{"type": t} for t in types], **extra}


ATT = Attachment("c1", "/run/netns/unused-by-fakes")


# --- loading from a directory ------------------------------------------------------------------

def write(directory: Path, name: str, data: object) -> None:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(data if isinstance(data, str) else json.dumps(data))


def test_the_first_valid_file_in_name_order_wins(tmp_path):
    net_d = tmp_path / "net.d"
    write(net_d, "30-later.conflist", conflist("bridge") | {"name": "later"})
    write(net_d, "20-second.conflist", conflist("bridge") | {"name": "second"})
    write(net_d, "10-broken.conflist", "{not json")
    write(net_d, "05-no-plugins.conflist", {"cniVersion": "1.0.0", "name": "empty"})
    write(net_d, "00-ignored.yaml", conflist("bridge") | {"name": "yaml"})  # not an extension libcni reads
    assert load_conf_dir(net_d)["name"] == "second"


def test_a_single_plugin_conf_is_wrapped_in_a_list(tmp_path):
    net_d = tmp_path / "net.d"
    single = {"cniVersion": "0.4.0", "name": "mynet", "type": "bridge", "bridge": "cni0",
              "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}}
    write(net_d, "10-mynet.conf", single)
    write(net_d, "20-other.json", single | {"name": "other"})
    assert load_conf_dir(net_d) == {"cniVersion": "0.4.0", "name": "mynet", "plugins": [single]}
    (net_d / "10-mynet.conf").unlink()
    assert load_conf_dir(net_d)["plugins"] == [single | {"name": "other"}]  # .json is a single conf too


def test_no_valid_file_is_a_clear_error_naming_each_file(tmp_path):
    net_d = tmp_path / "net.d"
    write(net_d, "10-a.conf", {"cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "bridge"}]})
    write(net_d, "20-b.conflist", conflist("bridge", version="one"))
    write(net_d, "30-c.conflist", conflist("bridge", disableCheck="yes"))
    with pytest.raises(CNIError) as refused:
        load_conf_dir(net_d)
    text = str(refused.value)
    assert refused.value.code == 7 and f"no valid network configuration in {net_d}" in text
    assert "10-a.conf has no plugin type (a list of plugins is a .conflist)" in text
    assert "20-b.conflist: a network config needs a name, a cniVersion x.y.z" in text
    assert "30-c.conflist: disableCheck must be true or false" in text
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CNIError, match="no file ending in .conf, .conflist, .json"):
        load_conf_dir(empty)
    with pytest.raises(CNIError, match="no network configuration directory"):
        load_conf_dir(tmp_path / "missing")


# --- version negotiation ---------------------------------------------------------------------

def test_a_plugin_without_the_configs_version_is_refused_with_code_1(plugins, runtime):
    plugins("good")
    plugins("old", ["0.3.0", "0.3.1", "0.4.0"])
    with pytest.raises(CNIError) as refused:
        asyncio.run(runtime.add(conflist("good", "old"), ATT))
    err = refused.value
    assert (err.code, err.plugin) == (1, "old")
    assert "'net' is cniVersion 1.0.0, which plugin old does not support" in str(err)
    assert "it supports 0.3.0, 0.3.1, 0.4.0" in str(err)
    assert ("good", "ADD") not in calls(plugins)  # refused before any plugin attached anything
    asyncio.run(runtime.add(conflist("good", "old", version="0.4.0"), ATT))


def test_an_ipam_plugin_is_negotiated_too(plugins, runtime):
    plugins("main")
    plugins("addresses", ["0.3.1"])
    conf = {"cniVersion": "1.0.0", "name": "net", "plugins": [{"type": "main", "ipam": {"type": "addresses"}}]}
    with pytest.raises(CNIError) as refused:
        asyncio.run(runtime.validate(conf))
    assert (refused.value.code, refused.value.plugin) == (1, "addresses")


def test_version_answers_are_cached_per_executable_until_it_changes(plugins, runtime):
    exe = plugins("cached")
    conf = conflist("cached")
    for n in range(3):
        asyncio.run(runtime.add(conf, Attachment(f"c{n}", ATT.netns_path)))
    assert calls(plugins).count(("cached", "VERSION")) == 1

    async def together() -> None:  # a fresh executable, ten ADDs at once: still one VERSION
        await asyncio.gather(*(runtime.add(conflist("fresh"), Attachment(f"f{n}", ATT.netns_path))
                               for n in range(10)))
    plugins("fresh")
    asyncio.run(together())
    assert calls(plugins).count(("fresh", "VERSION")) == 1

    os.utime(exe, ns=(0, os.stat(exe).st_mtime_ns + 1_000_000))  # an upgraded plugin is asked again
    asyncio.run(runtime.add(conf, Attachment("c9", ATT.netns_path)))
    assert calls(plugins).count(("cached", "VERSION")) == 2


def test_a_missing_plugin_names_itself_and_the_plugin_dirs(plugins, runtime):
    plugins("here")
    with pytest.raises(CNIError) as missing:
        asyncio.run(runtime.add(conflist("here", "nowhere"), ATT))
    assert missing.value.plugin == "nowhere"
    assert f"network 'net' lists plugin 'nowhere', which is not found in CNI_PATH {plugins.dir}" in str(missing.value)
    assert calls(plugins) == []  # found missing before any plugin ran


# --- conflist flags and capability args -------------------------------------------------------

def test_disable_check_and_disable_gc_are_honoured(plugins, runtime):
    plugins("p")
    conf = conflist("p", version="1.1.0")
    asyncio.run(runtime.add(conf, ATT))
    asyncio.run(runtime.check(conf, ATT))
    asyncio.run(runtime.gc(conf, [ATT]))
    assert [c for c in calls(plugins) if c[1] in ("CHECK", "GC")] == [("p", "CHECK"), ("p", "GC")]
    quiet = conf | {"disableCheck": True, "disableGC": True}
    asyncio.run(runtime.check(quiet, ATT))
    asyncio.run(runtime.gc(quiet, []))  # would DEL the attachment and GC the plugin: neither happens
    assert [c for c in calls(plugins) if c[1] in ("CHECK", "GC", "DEL")] == [("p", "CHECK"), ("p", "GC")]
    assert (Path(runtime.cache_dir) / f"net-{ATT.container_id}-eth0").exists()


def test_capability_args_reach_only_the_plugins_that_declare_them_also_on_del(plugins, runtime):
    plugins("main")
    plugins("ports")
    conf = {"cniVersion": "1.0.0", "name": "net", "plugins": [
        {"type": "main"}, {"type": "ports", "capabilities": {"portMappings": True, "bandwidth": True}}]}
    mappings = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]
    asyncio.run(runtime.add(conf, ATT, {"portMappings": mappings, "mac": "c2:00:00:00:00:01"}))
    asyncio.run(runtime.delete(conf, ATT))  # no args given: the ones cached at ADD
    adds, dels = logged(plugins, "ADD"), logged(plugins, "DEL")
    assert "runtimeConfig" not in adds[0] and "runtimeConfig" not in dels[1]
    assert adds[1]["runtimeConfig"] == dels[0]["runtimeConfig"] == {"portMappings": mappings}
