"""Runs last (file name): after every lab of the suite, the root namespace is as it was before."""
from conftest import close_shared_labs, root_snapshot


def test_root_namespace_is_as_before_the_suite(root_before):
    close_shared_labs()
    after = root_snapshot()
    assert set(after) == set(root_before)
    for key in root_before:
        assert after[key] == root_before[key], f"the root namespace's {key} changed during the suite"
