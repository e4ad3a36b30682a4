"""What the kubelet gives a container, without a lab: the image catalog's ENTRYPOINT/CMD rule, the
kubelet's /etc/hosts and resolv.conf, environment sources and $(VAR) expansion, and the steps of a
container's root."""
from __future__ import annotations

import base64

import pytest

from netplane.agent import images, podenv, rootfs
from netplane.agent.launcher import inside
from support import objects


def pod(**spec) -> dict:
    return objects.pod("web-1", {"app": "web"}, "node-1", "shop", uid="u-1", meta={"annotations": {"team": "a"}},
                       status={"podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}], "hostIP": "172.30.0.2",
                               "hostIPs": [{"ip": "172.30.0.2"}]}, serviceAccountName="default", **spec)


@pytest.mark.parametrize("container, argv", [
    ({"image": "nginx"}, ["nginx", "-g", "daemon off;"]),  # ENTRYPOINT none, CMD
    ({"image": "nginx", "args": ["-T"]}, ["-T"]),  # args replace CMD
    ({"image": "curlimages/curl:8.5.0", "args": ["-s", "http://web"]}, ["/entrypoint.sh", "-s", "http://web"]),
    ({"image": "curlimages/curl"}, ["/entrypoint.sh", "curl"]),
    ({"image": "curlimages/curl", "command": ["sh"], "args": ["-c", "x"]}, ["sh", "-c", "x"]),  # both replaced
    ({"image": "docker.io/library/busybox:1.36", "command": ["sleep", "9"]}, ["sleep", "9"]),
    ({"image": "example.com/app:1", "command": ["sleep", "9"]}, ["sleep", "9"]),  # unknown, but told what to run
])
def test_the_entrypoint_and_cmd_rule(container, argv):
    assert images.Catalog().resolve(container)[1] == argv


def test_an_image_the_catalog_lacks_cannot_be_run_without_a_command():
    with pytest.raises(images.ImageError) as err:
        images.Catalog().resolve({"image": "example.com/app:1"})
    assert err.value.reason == "ErrImagePull"
    assert 'Failed to pull image "example.com/app:1"' in str(err.value) and "images:" in str(err.value)
    lab = images.Catalog({"example.com/app": {"entrypoint": ["/usr/bin/env"], "cmd": ["true"]},
                          "registry.local/*": {"cmd": ["sleep", "1"]}})
    assert lab.resolve({"image": "example.com/app:1"})[1] == ["/usr/bin/env", "true"]
    assert lab.resolve({"image": "registry.local/team/tool:2"})[1] == ["sleep", "1"]


def test_image_names_lose_registry_defaults_tags_and_digests():
    assert images.base_name("docker.io/library/nginx:1.27") == "nginx"
    assert images.base_name("nginx@sha256:abc") == "nginx"
    assert images.base_name("registry.k8s.io/pause:3.10") == "registry.k8s.io/pause"
    assert images.base_name("localhost:5000/app") == "localhost:5000/app"


def test_the_kubelet_managed_hosts_file():
    plain = podenv.hosts_file(pod(), ["10.244.1.5"])
    assert plain.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    assert plain.endswith("fe00::2\tip6-allrouters\n10.244.1.5\tweb-1\n")
    named = podenv.hosts_file(pod(hostname="db-0", subdomain="db", hostAliases=[
        {"ip": "1.2.3.4", "hostnames": ["foo.local", "bar.local"]}]), ["10.244.1.5"])
    assert "10.244.1.5\tdb-0.db.shop.svc.cluster.local\tdb-0\n" in named
    assert named.endswith("\n# Entries added by HostAliases.\n1.2.3.4\tfoo.local\tbar.local\n")
    other_domain = podenv.hosts_file(pod(hostname="db-0", subdomain="db"), ["10.244.1.5"], "corp.internal")
    assert "10.244.1.5\tdb-0.db.shop.svc.corp.internal\tdb-0\n" in other_domain


def test_resolv_conf_for_each_dns_policy():
    node = podenv.Resolv(("192.0.2.53",), ("corp.example",), ("edns0",))
    assert podenv.resolv_conf(pod(), ["10.96.0.10"], node) == (
        "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
        "options ndots:5\n")
    assert podenv.resolv_conf(pod(dnsPolicy="Default"), ["10.96.0.10"], node) == (
        "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n")
    assert podenv.resolv_conf(pod(hostNetwork=True), ["10.96.0.10"], node).startswith("nameserver 192.0.2.53")
    assert podenv.resolv_conf(pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet"), ["10.96.0.10"],
                              node).startswith("nameserver 10.96.0.10")
    custom = pod(dnsPolicy="None", dnsConfig={"nameservers": ["1.1.1.1"], "searches": ["a.example"],
                                              "options": [{"name": "ndots", "value": "2"}, {"name": "rotate"}]})
    assert podenv.resolv_conf(custom, ["10.96.0.10"], node) == (
        "nameserver 1.1.1.1\nsearch a.example\noptions ndots:2 rotate\n")
    assert podenv.resolv_conf(pod(), ["10.96.0.10"], node, "corp.internal").startswith(
        "nameserver 10.96.0.10\nsearch shop.svc.corp.internal svc.corp.internal corp.internal corp.example\n")
    merged = pod(dnsConfig={"options": [{"name": "ndots", "value": "1"}]})
    assert podenv.resolv_conf(merged, ["10.96.0.10"], node).endswith("options ndots:1\n")


def test_service_links_as_docker_links():
    svc = {"metadata": {"name": "redis-primary"}, "spec": {"clusterIP": "10.96.0.11", "ports": [
        {"name": "redis", "port": 6379, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}}
    headless = {"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}}
    assert podenv.service_links([svc, headless]) == {
        "REDIS_PRIMARY_SERVICE_HOST": "10.96.0.11", "REDIS_PRIMARY_SERVICE_PORT": "6379",
        "REDIS_PRIMARY_SERVICE_PORT_REDIS": "6379", "REDIS_PRIMARY_PORT": "tcp://10.96.0.11:6379",
        "REDIS_PRIMARY_PORT_6379_TCP": "tcp://10.96.0.11:6379", "REDIS_PRIMARY_PORT_6379_TCP_PROTO": "tcp",
        "REDIS_PRIMARY_PORT_6379_TCP_PORT": "6379", "REDIS_PRIMARY_PORT_6379_TCP_ADDR": "10.96.0.11",
        "REDIS_PRIMARY_PORT_53_UDP": "udp://10.96.0.11:53", "REDIS_PRIMARY_PORT_53_UDP_PROTO": "udp",
        "REDIS_PRIMARY_PORT_53_UDP_PORT": "53", "REDIS_PRIMARY_PORT_53_UDP_ADDR": "10.96.0.11"}


def test_expansion_of_variable_references():
    env = {"NAME": "web", "PORT": "80"}
    assert podenv.expand("$(NAME):$(PORT)", env) == "web:80"
    assert podenv.expand("$$(NAME) $(MISSING) $(", env) == "$(NAME) $(MISSING) $("


def test_container_env_from_every_source():
    objects = {("configmaps", "settings"): {"data": {"MODE": "dev", "LEVEL": "3", "bad key": "x"}},
               ("secrets", "db"): {"data": {"password": base64.b64encode(b"hunter2").decode()}}}
    container = {
        "name": "app", "resources": {"limits": {"memory": "64Mi"}},
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"},
                    {"secretRef": {"name": "missing", "optional": True}}],
        "env": [{"name": "GREETING", "value": "hello $(CFG_MODE)"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "nope",
                                                                  "optional": True}}}]}
    env = podenv.container_env(pod(), container, [], lambda plural, name: objects.get((plural, name)), {"cpu": "2"})
    assert env == {"CFG_MODE": "dev", "CFG_LEVEL": "3", "GREETING": "hello dev", "POD": "web-1",
                   "IP": "10.244.1.5", "APP": "web", "MEM": "64", "CPU": "2", "PASS": "hunter2"}
    with pytest.raises(podenv.ConfigError, match='configmap "gone" not found'):
        podenv.container_env(pod(), {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {
            "name": "gone", "key": "k"}}}]}, [], lambda plural, name: None)
    with pytest.raises(podenv.ConfigError, match="couldn't find key nope in ConfigMap shop/settings"):
        podenv.container_env(pod(), {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {
            "name": "settings", "key": "nope"}}}]}, [], lambda plural, name: objects.get((plural, name)))


def test_a_container_root_overlays_the_machine_and_keeps_what_it_writes():
    tops = [rootfs.Top("bin", "link", "usr/bin"), rootfs.Top("etc", "dir"), rootfs.Top("proc", "dir"),
            rootfs.Top("tmp", "dir"), rootfs.Top("usr", "dir"), rootfs.Top("dev", "dir")]
    layer = rootfs.Layer(files={"/etc/nginx/nginx.conf": "x", "/entrypoint.sh": "#!/bin/sh\n"},
                         links={"/usr/local/bin/wget": "/usr/bin/busybox"}, modes={"/entrypoint.sh": 0o755})
    steps = rootfs.plan("/s", tops, ["/usr/share/big", "/usr/share/big/inner", "/home"], layer,
                        {"/etc/hosts": "/pod/etc-hosts"}, [rootfs.VolumeMount("/pod/vol", "/data", readonly=True)])
    ops = [(s["op"], s.get("target")) for s in steps]
    assert ops[:2] == [("tmpfs", "/s"), ("mkdir", "/s/root")]
    assert ("symlink", "/s/root/bin") in ops and ("proc", "/s/root/proc") in ops and ("tmpfs", "/s/root/tmp") in ops
    etc = next(s for s in steps if s["op"] == "overlay" and s["target"] == "/s/root/etc")
    assert etc["lower"] == ["/etc"] and etc["upper"] == "/s/layers/etc/upper"  # its writes stay in the tmpfs
    image_file = ops.index(("file", "/s/layers/etc/upper/nginx/nginx.conf"))
    assert image_file < ops.index(("overlay", "/s/root/etc"))  # the image's files are in its upper layer first
    assert ("symlink", "/s/layers/usr/upper/local/bin/wget") in ops
    assert ("file", "/s/root/entrypoint.sh") in ops  # a top-level path of the image's own
    binds = [s for s in steps if s["op"] == "bind"]
    assert [b["source"] for b in binds] == ["/dev", "/usr/share/big", "/pod/etc-hosts", "/pod/vol"]
    assert binds[-1]["readonly"] and steps[-1] == {"op": "chroot", "target": "/s/root"}


def test_a_path_in_a_container_resolves_its_links_inside_the_containers_root(tmp_path):
    root = tmp_path / "root"
    (root / "var").mkdir(parents=True)
    (root / "run").mkdir()
    (root / "var" / "run").symlink_to("/run")  # Debian's: absolute, so the container's own /run
    (root / "up").symlink_to("../../../../etc")  # climbs no higher than the root
    (root / "loop").symlink_to("loop")
    assert inside(str(root), "/var/run/secrets/kubernetes.io") == f"{root}/run/secrets/kubernetes.io"
    assert inside(str(root), "/up/passwd") == f"{root}/etc/passwd"
    assert inside(str(root), "/../../x/./y") == f"{root}/x/y"
    with pytest.raises(OSError):
        inside(str(root), "/loop/x")
