"""The Vagrantfile: `vagrant validate` passes (no box, no provider needed), and the machines it
defines are the ones the README describes: `cp` running `netplane server`, worker1..N running
`netplane agent` (N from NETPLANE_WORKERS), and `lab` (only on `vagrant up lab`), all provisioned
by scripts/install first.

Conventions: Debian's `vagrant` package is installed by the fixture when missing (an install that
fails fails the tests); Vagrant runs on a temporary copy of the Vagrantfile and scripts/, with
VAGRANT_HOME in a temporary directory, so neither the repository nor ~/.vagrant.d gets any state
(the bootstrap token lands in the copy's .vagrant/). What `vagrant validate` cannot show (the
provisioners, networks, resources) is read through Vagrant's own config loader in Ruby.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOKEN = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")

# Loads the Vagrantfile as `vagrant up` would and prints, per machine, what the tests check.
INSPECT_RB = r"""
require "json"
require "vagrant"
env = Vagrant::Environment.new(cwd: Dir.pwd)
root = env.vagrantfile.config.vm
out = env.machine_names.map do |name|
  vm = env.vagrantfile.machine_config(name, nil, env.boxes)[:config].vm
  vb = vm.get_provider_config(:virtualbox).customizations.map { |_, c| [c[2], c[3].to_s] }.to_h
  lv = vm.get_provider_config(:libvirt)
  [name, {
    "box" => vm.box,
    "hostname" => vm.hostname,
    "options" => root.defined_vms[name].options.transform_keys(&:to_s),
    "private_ips" => vm.networks.select { |type, _| type == :private_network }.map { |_, o| o[:ip] },
    "provisioners" => vm.provisioners.map { |p|
      {"name" => p.name.to_s, "type" => p.type.to_s, "inline" => p.config.inline,
       "path" => p.config.path, "args" => p.config.args, "env" => p.config.env}
    },
    "synced_folders" => vm.synced_folders.transform_values { |o|
      {"hostpath" => o[:hostpath], "type" => o[:type].to_s, "exclude" => o[:rsync__exclude]}
    },
    "virtualbox" => {"cpus" => vb["--cpus"], "memory" => vb["--memory"]},
    "libvirt" => {"cpus" => lv.instance_variable_get(:@cpus), "memory" => lv.instance_variable_get(:@memory)},
  }]
end.to_h
puts JSON.generate(out)
"""


@pytest.fixture(scope="module")
def vagrant() -> str:
    """Debian's vagrant, installed when missing; `apt-get update` only if the first try fails."""
    found = shutil.which("vagrant")
    if found:
        return found
    install = ["apt-get", "install", "-y", "--no-install-recommends", "vagrant"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(install, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True, env=env)
        done = subprocess.run(install, capture_output=True, text=True, env=env)
    assert done.returncode == 0, f"apt-get install vagrant failed:\n{done.stdout}\n{done.stderr}"
    found = shutil.which("vagrant")
    assert found, "vagrant is installed but not on PATH"
    return found


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of what the Vagrantfile reads: itself and scripts/ (the provisioners' paths)."""
    copy = tmp_path / "netplane"
    copy.mkdir()
    shutil.copy2(REPO / "Vagrantfile", copy / "Vagrantfile")
    shutil.copytree(REPO / "scripts", copy / "scripts")
    (tmp_path / "vagrant.d").mkdir()
    return copy


def vagrant_env(project: Path, workers: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAGRANT_", "NETPLANE_"))}
    env.update(VAGRANT_HOME=str(project.parent / "vagrant.d"), VAGRANT_CHECKPOINT_DISABLE="1")
    if workers is not None:
        env["NETPLANE_WORKERS"] = workers
    return env


def validate(vagrant: str, project: Path, workers: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [vagrant, "validate", "--ignore-provider", "--machine-readable"],
        cwd=project, env=vagrant_env(project, workers), capture_output=True, text=True, timeout=120,
    )


def inspect(vagrant: str, project: Path, workers: str | None = None) -> dict:
    done = subprocess.run(
        ["ruby", "-e", INSPECT_RB], cwd=project, env=vagrant_env(project, workers),
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def validated_machines(done: subprocess.CompletedProcess) -> list[str]:
    assert done.returncode == 0, f"vagrant validate failed:\n{done.stdout}\n{done.stderr}"
    assert "Vagrantfile validated successfully." in done.stdout
    rows = [line.split(",") for line in done.stdout.splitlines()]
    return [row[1] for row in rows if len(row) > 3 and row[2:4] == ["metadata", "provider"]]


def test_validate_default_cluster_and_lab(vagrant, project):
    # one `vagrant validate` covers every machine: the default cluster and the single-VM lab
    assert validated_machines(validate(vagrant, project)) == ["cp", "worker1", "worker2", "lab"]


def test_validate_with_three_workers(vagrant, project):
    machines = validated_machines(validate(vagrant, project, workers="3"))
    assert machines == ["cp", "worker1", "worker2", "worker3", "lab"]


@pytest.mark.parametrize("workers", ["0", "x", "51"])
def test_bad_worker_count_is_refused(vagrant, project, workers):
    done = validate(vagrant, project, workers=workers)
    assert done.returncode != 0
    assert "NETPLANE_WORKERS must be a number from 1 to 50" in done.stderr


def test_every_machine_is_provisioned_by_scripts_install_first(vagrant, project):
    machines = inspect(vagrant, project)
    for name, machine in machines.items():
        first = machine["provisioners"][0]
        assert (first["type"], first["inline"]) == ("shell", "/vagrant/scripts/install"), name
        assert machine["box"] == "debian/bookworm64", name
        assert machine["synced_folders"]["/vagrant"] == {
            "hostpath": ".", "type": "rsync", "exclude": [".venv/", ".git/"]}, name
    # the single-VM lab is today's VM: install only, `netplane up` by hand
    assert [p["name"] for p in machines["lab"]["provisioners"]] == ["install"]
    # and the install step is the README's
    assert "scripts/install" in (REPO / "README.md").read_text()


def test_cluster_runs_server_on_cp_and_agents_on_workers(vagrant, project):
    machines = inspect(vagrant, project, workers="3")
    cp = machines["cp"]
    assert cp["options"].get("primary") is True
    assert cp["private_ips"] == ["192.168.56.10"]
    assert [(p["path"], p["args"]) for p in cp["provisioners"][1:]] == [
        ("scripts/vagrant-provision", ["server", "192.168.56.10", "6443"])]
    for i in (1, 2, 3):
        worker = machines[f"worker{i}"]
        ip = f"192.168.56.{10 + i}"
        assert worker["hostname"] == f"worker{i}"
        assert worker["private_ips"] == [ip]
        assert [(p["path"], p["args"]) for p in worker["provisioners"][1:]] == [
            ("scripts/vagrant-provision", ["agent", ip, "https://192.168.56.10:6443", f"worker{i}"])]
    assert machines["lab"]["options"].get("autostart") is False
    assert machines["lab"]["private_ips"] == []


def test_resources_for_both_providers(vagrant, project):
    machines = inspect(vagrant, project)
    for name in ("cp", "worker1", "worker2"):
        assert machines[name]["virtualbox"] == {"cpus": "2", "memory": "2048"}, name
        assert machines[name]["libvirt"] == {"cpus": 2, "memory": 2048}, name
    assert machines["lab"]["virtualbox"] == {"cpus": "2", "memory": "4096"}
    assert machines["lab"]["libvirt"] == {"cpus": 2, "memory": 4096}


def test_bootstrap_token_is_made_once_and_shared(vagrant, project):
    assert not (project / ".vagrant").exists()
    first = inspect(vagrant, project)
    token_file = project / ".vagrant" / "netplane-token"
    token = token_file.read_text().strip()
    assert TOKEN.fullmatch(token)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    tokens = {p["env"].get("NETPLANE_TOKEN") for name, m in first.items() if name != "lab"
              for p in m["provisioners"][1:]}
    assert tokens == {token}
    # a second run (`vagrant provision`, another `vagrant up`) keeps it
    assert validate(vagrant, project).returncode == 0
    again = inspect(vagrant, project, workers="3")
    assert token_file.read_text().strip() == token
    assert {p["env"]["NETPLANE_TOKEN"] for p in again["worker3"]["provisioners"][1:]} == {token}
    # a damaged file is replaced by a fresh token
    token_file.write_text("not-a-token\n")
    inspect(vagrant, project)
    assert TOKEN.fullmatch(token_file.read_text().strip())
    assert token_file.read_text().strip() != token


def test_provision_script_refuses_bad_input_before_changing_anything(project):
    script = project / "scripts" / "vagrant-provision"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    cases = [
        ({"NETPLANE_TOKEN": "short"}, ["server", "192.168.56.10", "6443"], "NETPLANE_TOKEN"),
        ({"NETPLANE_TOKEN": "abcdef.0123456789abcdef"}, ["join"], "usage"),
        ({"NETPLANE_TOKEN": "abcdef.0123456789abcdef"}, ["agent", "192.0.2.77", "https://x:6443", "w"],
         "no link holds 192.0.2.77"),
    ]
    for extra, args, message in cases:
        env = {k: v for k, v in os.environ.items() if k != "NETPLANE_TOKEN"} | extra
        done = subprocess.run([str(script), *args], env=env, capture_output=True, text=True)
        assert done.returncode == 1, (args, done.stderr)
        if os.geteuid() == 0:
            assert message in done.stderr, (args, done.stderr)
