"""The layers of the tree, read from its imports: each package imports only from the layers below
it, pyroute2 only in netplane/kernel, and programs are started through netplane/kernel except in
the modules listed here while they are moved there (issue 22), the benchmarks' peers among them."""
from __future__ import annotations

import ast
from pathlib import Path

import netplane

ROOT = Path(netplane.__file__).parent
LAYERS = {  # a package may import from packages of a lower number only
    "names": 0, "kernel": 1, "api": 2, "cni": 2, "controllers": 3, "agent": 3, "addons": 3,
    "trace": 4, "lab": 4, "bench": 5, "cli": 6,
}
ADDONS_MAY_USE = {"names", "api"}  # in-cluster programs: the API client side, nothing of the lab or nodes
# modules that still start programs themselves; a module leaves the list once kernel/ does it for
# it (the benchmarks run their peers - dnsmasq, iptables-legacy, curl - as a user would)
STARTS_PROGRAMS_YET = {
    "agent/agnhost.py", "agent/containers.py", "agent/images.py", "agent/probes.py", "agent/streams.py",
    "api/etcd.py", "bench/api.py", "bench/dns.py", "bench/scale.py",
    "bench/streams.py", "bench/trace.py", "cni/conformance.py", "cni/ipam.py", "cni/runtime.py",
    "lab/hosts.py", "lab/lifecycle.py",
}


def package(path: Path) -> str:
    parts = path.relative_to(ROOT).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def imported(path: Path) -> set[str]:
    """Every module the file imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "netplane":
                found |= {f"netplane.{alias.name}" for alias in node.names}
    return found


def sources() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_package_imports_from_a_layer_above_its_own():
    upward = []
    for path in sources():
        mine = package(path)
        for module in imported(path):
            parts = module.split(".")
            if parts[0] != "netplane" or len(parts) < 2 or parts[1] == mine:
                continue
            if LAYERS[parts[1]] >= LAYERS[mine] or (mine == "addons" and parts[1] not in ADDONS_MAY_USE):
                upward.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not upward, upward


def test_only_the_kernel_layer_speaks_netlink_through_pyroute2():
    outside = [str(p.relative_to(ROOT)) for p in sources() if package(p) != "kernel"
               and any(m.split(".")[0] == "pyroute2" for m in imported(p))]
    assert not outside, outside


def test_programs_are_started_only_by_the_kernel_layer_and_the_modules_not_moved_yet():
    starting = {str(p.relative_to(ROOT)) for p in sources() if package(p) != "kernel"
                and ("subprocess" in imported(p) or "create_subprocess_exec" in p.read_text())}
    assert starting <= STARTS_PROGRAMS_YET, sorted(starting - STARTS_PROGRAMS_YET)
    assert STARTS_PROGRAMS_YET <= starting, f"moved to kernel/, take off the list: {sorted(STARTS_PROGRAMS_YET - starting)}"
