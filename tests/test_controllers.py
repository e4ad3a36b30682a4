"""Controllers' pure decisions: node IPAM, ClusterIP allocation, scheduling, EndpointSlices."""
from __future__ import annotations

import pytest

from netplane import names
from netplane.api import defaults
from netplane.api.errors import ApiError
from netplane.api.resources import by_plural
from netplane.controllers.scheduling import fit
from netplane.controllers import endpointslice, nodeipam, scheduler, serviceip
from support import objects


def pod(name, ip=None, labels=None, node="node-1", ready=True, ports=None, namespace="default"):
    """A Pod as the API holds it once scheduled: Running with its IP, or Pending without one."""
    status = {"phase": "Running" if ip else "Pending", **({"podIP": ip} if ip else {}),
              **({"conditions": [{"type": "Ready", "status": "True"}]} if ready else {})}
    return objects.pod(name, labels, node, namespace, ports or [{"name": "http", "containerPort": 8080}],
                       status=status, uid=f"uid-{name}")


def service(name="web", ports=None, selector=None):
    return {"metadata": {"name": name, "namespace": "default", "uid": "svc-uid"},
            "spec": {"selector": selector if selector is not None else {"app": "web"}, "clusterIP": "10.96.0.10",
                     "ports": ports or [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}


def test_node_ipam_hands_out_the_lowest_free_24():
    assert nodeipam.next_pod_cidr("10.244.0.0/16", set()) == "10.244.0.0/24"
    assert nodeipam.next_pod_cidr("10.244.0.0/16", {"10.244.0.0/24", "10.244.2.0/24"}) == "10.244.1.0/24"
    with pytest.raises(RuntimeError):
        nodeipam.next_pod_cidr("10.244.0.0/24", {"10.244.0.0/24"})


def test_clusterip_allocation_skips_network_and_dot_one():
    assert serviceip.allocate("10.96.0.0/16", set()) == "10.96.0.2"
    assert serviceip.allocate("10.96.0.0/16", {"10.96.0.2"}) == "10.96.0.3"
    assert serviceip.allocate("10.96.0.0/16", set(), "10.96.5.5") == "10.96.5.5"
    with pytest.raises(ValueError, match="not in the service range"):
        serviceip.allocate("10.96.0.0/16", set(), "10.97.0.1")
    with pytest.raises(ValueError, match="already allocated"):
        serviceip.allocate("10.96.0.0/16", {"10.96.0.9"}, "10.96.0.9")


class FakeStore:
    """Only what the admission hook reads: the Services already stored."""

    def __init__(self, services):
        self.services = services

    def list(self, plural, namespace=None):
        return self.services, "1"


def defaulted(service: dict) -> dict:
    """The Service as admission sees it: defaulted first, as the API server does."""
    defaults.apply(by_plural("services"), service)
    return service


def defaulted_admitter():
    """The Service admission hook, given Services defaulted first, as the API server gives them."""
    admit = serviceip.admitter("10.96.0.0/16")
    return lambda verb, plural, obj, old, store: admit(verb, plural, defaulted(obj), old, store)


def test_service_defaults_then_admission_allocates_and_keeps_the_ip():
    admit = serviceip.admitter("10.96.0.0/16")
    svc = {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}
    out = admit("create", "services", defaulted(svc), None, FakeStore([{"metadata": {"name": "other"}, "spec": {"clusterIP": "10.96.0.2"}}]))
    assert out["spec"]["clusterIP"] == "10.96.0.3" and out["spec"]["clusterIPs"] == ["10.96.0.3"]
    assert out["spec"]["type"] == "ClusterIP" and out["spec"]["ports"][0] == {"port": 80, "protocol": "TCP", "targetPort": 80}
    zero = {"metadata": {"name": "zero"}, "spec": {"ports": [{"port": 8080, "targetPort": 0}]}}
    assert admit("create", "services", defaulted(zero), None, FakeStore([]))["spec"]["ports"][0]["targetPort"] == 8080  # as upstream
    changed = {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 81}]}}
    assert admit("update", "services", defaulted(changed), out, FakeStore([]))["spec"]["clusterIP"] == "10.96.0.3"
    with pytest.raises(ApiError) as err:
        admit("update", "services", defaulted({"metadata": {"name": "web"}, "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80}]}}),
              out, FakeStore([]))
    assert err.value.code == 422 and err.value.details["causes"][0]["field"] == "spec.clusterIP"


def ready_node(name, ready=True):
    return {"metadata": {"name": name}, "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_scheduler_spreads_over_ready_nodes():
    nodes = [ready_node("node-1"), ready_node("node-2"), ready_node("node-3", ready=False)]
    new = pod("new", None, node=None)

    def chosen(bound: list[dict]) -> str | None:
        return scheduler.place(new, fit.Cluster(nodes, bound))[0]
    assert chosen([]) == "node-1"
    assert chosen([pod("a", node="node-1")]) == "node-2"
    assert chosen([pod("a", node="node-1"), pod("b", node="node-2")]) == "node-1"
    nodes = nodes[2:]
    assert chosen([]) is None


def test_slices_resolve_named_ports_and_keep_only_pods_with_ips():
    pods = [pod("web-1", "10.244.1.2", {"app": "web"}), pod("web-2", "10.244.2.2", {"app": "web"}, node="node-2"),
            pod("web-3", None, {"app": "web"}), pod("other", "10.244.1.9", {"app": "db"}),
            pod("elsewhere", "10.244.1.8", {"app": "web"}, namespace="kube-system")]
    slices = endpointslice.desired_slices(service(), pods)
    assert len(slices) == 1
    s = slices[0]
    assert s["metadata"]["labels"][names.SERVICE_NAME_LABEL] == "web"
    assert s["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    assert [(e["addresses"], e["nodeName"], e["conditions"]["ready"]) for e in s["endpoints"]] == [
        (["10.244.1.2"], "node-1", True), (["10.244.2.2"], "node-2", True)]


def test_slices_group_pods_whose_named_port_differs():
    pods = [pod("a", "10.244.1.2", {"app": "web"}), pod("b", "10.244.1.3", {"app": "web"},
                                                     ports=[{"name": "http", "containerPort": 9090}])]
    slices = endpointslice.desired_slices(service(), pods)
    assert sorted(s["ports"][0]["port"] for s in slices) == [8080, 9090]
    assert len({s["metadata"]["name"] for s in slices}) == 2


def test_service_without_pods_keeps_one_empty_slice_and_no_selector_none():
    assert [s["endpoints"] for s in endpointslice.desired_slices(service(), [])] == [[]]
    assert endpointslice.desired_slices(service(selector={}), [pod("a", "10.244.1.2")]) == []


def test_not_ready_pods_are_listed_not_ready():
    s = endpointslice.desired_slices(service(), [pod("a", "10.244.1.2", {"app": "web"}, ready=False)])[0]
    assert s["endpoints"][0]["conditions"] == {"ready": False, "serving": False, "terminating": False}


def test_nodeports_are_allocated_in_range_kept_and_validated():
    admit = defaulted_admitter()
    taken = {"metadata": {"name": "taken", "namespace": "default"},
             "spec": {"clusterIP": "10.96.0.2", "ports": [{"port": 80, "nodePort": 30080}]}}
    svc = {"metadata": {"name": "np", "namespace": "default"},
           "spec": {"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81, "nodePort": 30081}]}}
    out = admit("create", "services", svc, None, FakeStore([taken]))
    first, second = (p["nodePort"] for p in out["spec"]["ports"])
    assert 30000 <= first <= 32767 and first not in (30080, 30081) and second == 30081
    again = {"metadata": {"name": "np", "namespace": "default"},
             "spec": {"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}}
    kept = admit("update", "services", again, out, FakeStore([taken, out]))
    assert [p["nodePort"] for p in kept["spec"]["ports"]] == [first, second]
    clash = {"metadata": {"name": "c", "namespace": "default"},
             "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}}
    with pytest.raises(ApiError, match="already allocated"):
        admit("create", "services", clash, None, FakeStore([taken]))
    outside = {"metadata": {"name": "o"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}}
    with pytest.raises(ApiError, match="valid range"):
        admit("create", "services", outside, None, FakeStore([]))
    plain = {"metadata": {"name": "p"}, "spec": {"ports": [{"port": 80, "nodePort": 30555}]}}
    with pytest.raises(ApiError, match="may not be used when `type` is 'ClusterIP'"):
        admit("create", "services", plain, None, FakeStore([]))


def test_external_name_and_headless_services_get_no_clusterip():
    admit = defaulted_admitter()
    ext = admit("create", "services", {"metadata": {"name": "e"}, "spec": {"type": "ExternalName",
                                                                        "externalName": "example.test"}}, None, FakeStore([]))
    assert "clusterIP" not in ext["spec"]
    with pytest.raises(ApiError, match="spec.externalName"):
        admit("create", "services", {"metadata": {"name": "e"}, "spec": {"type": "ExternalName"}}, None, FakeStore([]))
    headless = admit("create", "services", {"metadata": {"name": "h"}, "spec": {"clusterIP": "None",
                                                                             "ports": [{"port": 80}]}}, None, FakeStore([]))
    assert headless["spec"]["clusterIP"] == "None"


def test_endpoints_carry_their_nodes_zone_and_v1_endpoints_follow_the_slices():
    nodes = [{"metadata": {"name": "node-1", "labels": {endpointslice.ZONE_LABEL: "zone-a"}}},
             {"metadata": {"name": "node-2", "labels": {}}}]
    pods = [pod("a", "10.244.1.2", {"app": "web"}), pod("b", "10.244.2.2", {"app": "web"}, node="node-2", ready=False)]
    slices = endpointslice.desired_slices(service(), pods, endpointslice.node_zones(nodes))
    assert [e.get("zone") for e in slices[0]["endpoints"]] == ["zone-a", None]
    ep = endpointslice.endpoints_object(service(), slices)
    assert ep["metadata"]["name"] == "web"
    assert ep["subsets"] == [{"ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
                              "addresses": [{"ip": "10.244.1.2", "nodeName": "node-1",
                                             "targetRef": slices[0]["endpoints"][0]["targetRef"]}],
                              "notReadyAddresses": [{"ip": "10.244.2.2", "nodeName": "node-2",
                                                     "targetRef": slices[0]["endpoints"][1]["targetRef"]}]}]


class LaggingCache:
    """An informer whose cache has not seen the controller's own writes yet (as with etcd, where they
    come back through a watch)."""

    def __init__(self, objects):
        self.cache = {("", o["metadata"]["name"]): o for o in objects}

    def add_handler(self, fn):
        pass


class RecordingClient:
    def __init__(self):
        self.updates = []

    async def update(self, plural, obj):
        self.updates.append(obj)
        return obj


def test_node_ipam_never_gives_two_nodes_one_podcidr_when_its_cache_lags():
    import asyncio
    nodes = LaggingCache([{"metadata": {"name": "node-1"}, "spec": {}}])
    client = RecordingClient()
    ipam = nodeipam.NodeIPAM(client, nodes, "10.244.0.0/16")
    asyncio.run(ipam.reconcile())
    nodes.cache[("", "node-2")] = {"metadata": {"name": "node-2"}, "spec": {}}  # node-1's update not seen yet
    asyncio.run(ipam.reconcile())
    assert [(u["metadata"]["name"], u["spec"]["podCIDR"]) for u in client.updates] == [
        ("node-1", "10.244.0.0/24"), ("node-2", "10.244.1.0/24")]
