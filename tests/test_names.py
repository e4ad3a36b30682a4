from netplane import names


def test_namespaces_carry_the_lab_prefix_and_map_back():
    assert names.node_netns("lab1", "node-1") == "np.lab1.node-1"
    assert names.underlay_netns("lab1") == "np.lab1.underlay"
    assert names.pod_netns(names.lab_prefix("lab1"), "default", "web-1") == "np.lab1.pod.default.web-1"
    for ns in ("np.lab1.node-1", "np.lab1.underlay", "np.lab1.pod.default.web-1"):
        assert names.lab_of_netns(ns) == "lab1"
    assert names.lab_of_netns("cni-1234") is None
    assert names.lab_of_netns("np.Bad_Lab.x") is None


def test_interface_names_fit_the_kernel_limit():
    assert names.switch_port("node-1") == "to-node-1"
    long = names.switch_port("a-very-long-node-name-indeed")
    assert len(long) <= names.IFNAME_MAX and long.startswith("to-")
    veth = names.host_veth("0123456789abcdef")
    assert veth.startswith("veth") and len(veth) == 12
    assert names.host_veth("0123456789abcdef") == veth != names.host_veth("other")


def test_short_hash_is_stable_base32():
    assert names.short_hash("default/web/tcp/http") == names.short_hash("default/web/tcp/http")
    assert len(names.short_hash("x")) == 8 and names.short_hash("x").isupper()
