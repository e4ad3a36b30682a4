"""Field sets as structured-merge-diff writes them (FieldsV1), without a server."""
from __future__ import annotations

from netplane.api import managed, schema

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "uid": "u", "labels": {"app": "web"}},
       "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}],
                "tolerations": [{"key": "a"}]},
       "status": {"phase": "Pending"}}


def test_fields_v1_keys_items_marks_members_with_children_and_leaves_identity_and_status_out():
    fields = managed.field_set(POD, schema.for_kind("Pod"))
    encoded = managed.encode(fields)
    assert encoded == {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {
        "f:containers": {'k:{"name":"web"}': {".": {}, "f:image": {}, "f:name": {}, "f:ports": {
            'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}}}},
        "f:tolerations": {}}}  # an atomic list is one leaf
    assert managed.decode(encoded) == fields
    assert managed.field_set(POD, schema.for_kind("Pod"), "status") == {("f:status", "f:phase")}


def test_conflicts_name_paths_as_upstream_prints_them():
    who = managed.Manager("kubectl-edit", "Update", "v1")
    path = ("f:spec", "f:containers", 'k:{"name":"web"}', "f:ports", 'k:{"containerPort":80,"protocol":"TCP"}',
            "f:containerPort")
    error = managed.conflict_error({who: [path]})
    assert error.code == 409 and error.message == (
        'Apply failed with 1 conflict: conflict with "kubectl-edit" using v1: '
        '.spec.containers[name="web"].ports[containerPort=80,protocol="TCP"].containerPort')


def test_an_update_takes_what_it_changed_from_the_others():
    node = schema.for_kind("Pod")
    first = dict(POD, metadata=dict(POD["metadata"], managedFields=managed.track(
        None, POD, node, managed.Manager("a", "Update", "v1"), "t1")))
    changed = dict(first, metadata=dict(first["metadata"], labels={"app": "api"}))
    entries = managed.track(first, changed, node, managed.Manager("b", "Update", "v1"), "t2")
    owners = {e["manager"]: e["fieldsV1"] for e in entries}
    assert owners["b"] == {"f:metadata": {"f:labels": {"f:app": {}}}}
    assert "f:metadata" not in owners["a"]
