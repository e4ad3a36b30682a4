"""The layers of the tree, read from its imports: each package imports only from the layers below
it, pyroute2 only in netplane/kernel, and programs are started only through netplane/kernel, but by
the benchmarks (which run their peers as a user would) and by the program pods run."""
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
# the modules that start programs themselves: the benchmarks run their peers (kubectl, dnsmasq,
# Mininet, netplane's own CLI) as a user would; two are programs of their own, standard library only,
# that the node runs by path: agnhost, the server inside pods (its /shell endpoint runs a shell, as
# upstream's does), and the launcher, the runtime's shim that forks and execs containers (as runc does)
STARTS_PROGRAMS_ITSELF = {
    "agent/agnhost.py", "agent/launcher.py", "bench/api.py", "bench/dns.py", "bench/scale.py", "bench/streams.py", "bench/trace.py",
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


def test_programs_are_started_only_by_the_kernel_layer_the_benchmarks_and_agnhost():
    starting = {str(p.relative_to(ROOT)) for p in sources() if package(p) != "kernel"
                and ("subprocess" in imported(p) or "create_subprocess_exec" in p.read_text()
                     or "os.system" in p.read_text() or "os.exec" in p.read_text())}
    assert starting <= STARTS_PROGRAMS_ITSELF, sorted(starting - STARTS_PROGRAMS_ITSELF)
    assert STARTS_PROGRAMS_ITSELF <= starting, f"no longer starts programs: {sorted(STARTS_PROGRAMS_ITSELF - starting)}"


RAW_NETLINK = ("links.netlink(", "links.get(", "links.index(", "links.tolerate(", "links.IPRoute", "links.ifinfmsg")


def test_code_outside_the_kernel_layer_uses_typed_netlink_operations_not_pyroute2_messages():
    raw = [f"{p.relative_to(ROOT)}: {call}" for p in sources() if package(p) != "kernel"
           for call in RAW_NETLINK if call in p.read_text()]
    assert not raw, raw
