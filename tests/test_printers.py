"""kubectl-shaped output."""
from netplane.api.resources import lookup
from netplane.cli import printers

POD = {"metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": "2020-01-01T00:00:00Z"},
       "spec": {"nodeName": "node-1", "containers": [{"name": "a"}, {"name": "b"}]},
       "status": {"phase": "Running", "podIP": "10.244.0.2",
                  "containerStatuses": [{"name": "a", "ready": True, "restartCount": 1, "state": {"running": {}}}, {"name": "b", "ready": False, "restartCount": 0}]}}


def test_jsonpath_handles_kubectls_common_templates():
    listed = printers.as_list(lookup("pods"), [POD, {**POD, "status": {"podIP": "10.244.1.2"}}])
    assert printers.jsonpath(POD, "{.status.podIP}") == "10.244.0.2"
    assert printers.jsonpath(listed, "{.items[*].status.podIP}") == "10.244.0.2 10.244.1.2"
    assert printers.jsonpath(listed, "ip={.items[1].status.podIP}!") == "ip=10.244.1.2!"
    assert printers.jsonpath(POD, "{.spec.containers[0]}") == '{"name": "a"}'
    assert printers.jsonpath(POD, "{.status.missing}") == ""


def test_pod_table_has_kubectls_columns():
    text = printers.table(lookup("pods"), [POD], wide=True, all_namespaces=True)
    header, row = text.splitlines()
    assert header.split()[:8] == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    narrow = printers.table(lookup("pods"), [POD], wide=False, all_namespaces=False).splitlines()[0]
    assert narrow.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    cells = row.split()
    assert cells[:5] == ["default", "web-1", "1/2", "Running", "1"]
    assert cells[6:8] == ["10.244.0.2", "node-1"] and cells[5].endswith("d")
