"""The `netplane` command."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import socket
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import click

from netplane import names
from netplane.api import manifests, objects, resources
from netplane.api.client import Client
from netplane.api.errors import ApiError
from netplane.api.main import setup_logging
from netplane.agent.policy.model import PROTOCOLS
from netplane.cli import policy as policies, printers
from netplane.cni import resident as cni_server
from netplane.kernel import netns, nsenter, programs
from netplane.lab import health, lifecycle, model
from netplane.lab.state import ROOT as STATE_ROOT, LabState


def friendly(fn: Callable) -> Callable:
    """Turn the errors a user can cause into one-line messages and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (model.LabError, lifecycle.LabFailure, manifests.ManifestError) as err:
            raise click.ClickException(str(err)) from None
        except ApiError as err:
            raise click.ClickException(f"{err.reason}: {err.message}") from None
        except KeyError as err:
            raise click.ClickException(str(err.args[0])) from None

    return wrapper


def lab_state(ctx: click.Context) -> LabState:
    state = LabState(ctx.obj["lab"])
    if not state.exists() or state.pid() is None:
        raise click.ClickException(f"lab {state.name!r} is not up (start it with `netplane up`)")
    return state


def run_api(ctx: click.Context, work: Callable) -> object:
    """Run `work(client)` against the lab's API server."""
    state = lab_state(ctx)

    async def go():
        async with Client(*state.connection()) as client:
            return await work(client)

    return asyncio.run(go())


def lab_name(ctx: click.Context, param: click.Parameter, value: object) -> object:
    """A lab name given on the command line, checked before it reaches a path or a namespace."""
    for name in (value if isinstance(value, tuple) else () if value is None else (value,)):
        if not names.is_lab_name(name):
            raise click.BadParameter(f"{name!r} is not a lab name: use {names.LAB_NAME_RULE}")
    return value


def netns_prefix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """The agent's prefix of pod namespace names, checked as lab names are."""
    if not names.NETNS_PREFIX_RE.fullmatch(value):
        raise click.BadParameter(f"{value!r}: use lower-case letters, digits, '-' and single dots, ending in '-' or "
                                 "'.' (as cni- or np.LAB.), so that no namespace name can leave /run/netns")
    return value


def cluster_domain_option(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not names.is_dns_domain(value):
        raise click.BadParameter(f"{value!r}: use {names.DOMAIN_RULE}")
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--lab", envvar="NETPLANE_LAB", default="netplane", show_default=True, callback=lab_name,
              help="The lab to act on (env NETPLANE_LAB).")
@click.pass_context
def cli(ctx: click.Context, lab: str) -> None:
    """Emulate the Kubernetes network data plane with the kernel's real parts."""
    ctx.obj = {"lab": lab}


class UpReport:
    """What `up` shows on stderr: its lines, and on a terminal a progress bar redrawn in place
    below them (plain count lines otherwise, which logs and tests read)."""

    def __init__(self, lab: str, tty: bool) -> None:
        self.lab, self.tty = lab, tty
        self.drawn = ""

    def say(self, line: str) -> None:
        self.clear()
        click.echo(f"[{self.lab}] {line}", err=True)
        if self.drawn:
            self._draw(self.drawn)

    def progress(self, now: lifecycle.Progress) -> None:
        import shutil
        text = f"[{self.lab}] " + lifecycle.bar(now, shutil.get_terminal_size().columns - len(self.lab) - 4)
        if text != self.drawn:
            self._draw(text)
            self.drawn = text

    def _draw(self, text: str) -> None:
        click.echo(f"\r{text}\x1b[K", err=True, nl=False)

    def clear(self) -> None:
        if self.tty and self.drawn:
            click.echo("\r\x1b[K", err=True, nl=False)


@cli.command()
@click.argument("labfile", required=False, type=click.Path(dir_okay=False))
@click.option("--name", callback=lab_name, help="Lab name (overrides the file's name and --lab).")
@click.option("--storage", help="sqlite (default) or etcd://HOST:PORT: where the API server keeps objects.")
@click.pass_context
@friendly
def up(ctx: click.Context, labfile: str | None, name: str | None, storage: str | None) -> None:
    """Bring up a lab (the default two-node lab with its demo app when no LABFILE)."""
    if os.geteuid() != 0:
        raise click.ClickException("netplane up needs root (it creates network namespaces)")
    chosen = ctx.parent.get_parameter_source("lab") != click.core.ParameterSource.DEFAULT  # --lab or NETPLANE_LAB
    explicit = name or (ctx.obj["lab"] if chosen else None)
    lab = model.load(labfile, explicit, storage)
    report = UpReport(lab.name, sys.stderr.isatty())
    try:
        summary = lifecycle.up(lab, report.say, progress=report.progress if report.tty else None)
    finally:
        report.clear()
    click.echo(summary.text(lab.name))
    click.echo(summary.phase_text())
    click.echo(f"kubeconfig: {summary.kubeconfig}")
    flag = "" if lab.name == "netplane" else f" --lab {lab.name}"
    click.echo(f"next: netplane{flag} get pods -o wide")


@cli.command()
@click.pass_context
@friendly
def down(ctx: click.Context) -> None:
    """Stop the lab and remove everything it made."""
    removed = lifecycle.down(ctx.obj["lab"])
    click.echo(f"lab {ctx.obj['lab']!r} is down ({len(removed)} namespaces removed)")


@cli.group()
def snapshot() -> None:
    """Back up a lab's store and put it back, as etcd snapshots do for a cluster."""


@snapshot.command(name="save")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
@friendly
def snapshot_save(ctx: click.Context, file: Path) -> None:
    """Write a consistent copy of the running lab's store to FILE."""
    from netplane.lab import snapshot as snapshots
    taken = snapshots.save(lab_state(ctx), file)
    click.echo(f"Snapshot saved at {taken.path}: {taken.objects} objects at revision {taken.revision}")


@snapshot.command(name="restore")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.pass_context
@friendly
def snapshot_restore(ctx: click.Context, file: Path) -> None:
    """Stop the lab's control plane, put FILE in its store's place and start it again on it."""
    from netplane.lab import snapshot as snapshots
    restored = snapshots.restore(lab_state(ctx), file, lambda line: click.echo(line, err=True))
    click.echo(f"lab {ctx.obj['lab']!r} runs on the snapshot: {restored.objects} objects at revision "
               f"{restored.revision}")


@cli.command()
@click.argument("labs", nargs=-1, callback=lab_name)
@friendly
def clean(labs: tuple[str, ...]) -> None:
    """Remove the named labs, or every netplane lab on this machine (and netplane's CNI server),
    even after a crash: processes, namespaces, state."""
    removed = lifecycle.clean(list(labs) or None)
    for lab, spaces in removed.items():
        click.echo(f"removed lab {lab!r}: {len(spaces)} namespaces")
    stopped = None if labs else cni_server.stop()
    if stopped:
        click.echo(f"stopped netplane's CNI server (pid {stopped})")
    if not removed and not stopped:
        click.echo("nothing to clean")


@cli.command()
@click.pass_context
@friendly
def status(ctx: click.Context) -> None:
    """Say whether the lab is up, with its nodes and pods."""
    state = lab_state(ctx)
    lab = state.load_lab()

    async def work(client: Client):
        try:
            leader = (await client.get("leases", names.LEADER_LEASE, "kube-system"))["spec"].get("holderIdentity")
        except ApiError:
            leader = None  # an embedded control plane runs its controllers without election
        lists = [(await client.list(plural, namespace))["items"] for plural, namespace in (
            ("nodes", None), ("pods", None), ("leases", names.LEASE_NAMESPACE))]
        return *lists, leader

    nodes, pods, leases, leader = run_api(ctx, work)
    running = sum(p.get("status", {}).get("phase") == "Running" for p in pods)
    click.echo(f"lab {lab.name!r}: up, control plane pid {state.pid()} ({lab.controlPlane.mode}), "
               f"proxy mode {lab.network.proxyMode}")
    if leader:
        click.echo(f"controllers led by {leader} (Lease kube-system/{names.LEADER_LEASE})")
    members = health.members(lab, state)
    if members:
        click.echo("\ncontrol plane:")
        click.echo(printers.columns(["HOST", "ADDRESS", "API SERVER", "ETCD"], [
            [m.host, m.address, m.api, m.etcd or "-"] for m in members]))
    click.echo(f"\npods Running {running}/{len(pods)}")
    click.echo(printers.table(resources.lookup("nodes"), nodes, wide=True, all_namespaces=False))
    click.echo("\nnode agents:")
    click.echo(printers.columns(["NODE", "AGENT", "LEASE RENEWED", "PODS RUNNING", "HEALTH"], [
        [a.node, a.holder or "-", "-" if a.renewed is None else f"{a.renewed:.0f}s ago", f"{a.pods[0]}/{a.pods[1]}",
         a.health] for a in health.agents(nodes, leases, pods)]))


@cli.command()
@click.pass_context
@friendly
def kubeconfig(ctx: click.Context) -> None:
    """Print the path of the lab's kubeconfig."""
    click.echo(lab_state(ctx).kubeconfig)


@cli.command()
@click.option("-f", "--filename", "files", multiple=True, required=True, type=click.Path(dir_okay=False))
@click.pass_context
@friendly
def apply(ctx: click.Context, files: tuple[str, ...]) -> None:
    """Create or update the objects of manifest files."""
    loaded = [obj for path in files for obj in manifests.load(path)]

    async def work(client: Client):
        for obj in loaded:
            click.echo(f"{manifests.describe(obj)} {await manifests.apply(client, obj)}")

    run_api(ctx, work)


@cli.command()
@click.argument("kind")
@click.argument("name", required=False)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-A", "--all-namespaces", is_flag=True)
@click.option("-o", "--output", help="wide, json, yaml, or jsonpath=TEMPLATE (e.g. jsonpath={.status.podIP}).")
@click.pass_context
@friendly
def get(ctx: click.Context, kind: str, name: str | None, namespace: str, all_namespaces: bool, output: str | None) -> None:
    """List objects (pods, services, nodes, endpointslices, namespaces) like kubectl get."""
    res = resources.lookup(kind)
    ns = None if all_namespaces or not res.namespaced else namespace
    if output not in (None, "wide", "json", "yaml") and not output.startswith("jsonpath="):
        raise click.BadParameter("use wide, json, yaml or jsonpath=TEMPLATE", param_hint="'-o'")

    async def work(client: Client):
        if name:
            return [await client.get(res.plural, name, ns)]
        return (await client.list(res.plural, ns))["items"]

    items = run_api(ctx, work)
    data = items[0] if name else printers.as_list(res, items)
    if output in ("json", "yaml"):
        click.echo(printers.dump(data, output))
        return
    if output and output.startswith("jsonpath="):
        click.echo(printers.jsonpath(data, output.split("=", 1)[1]))
        return
    text = printers.table(res, items, wide=output == "wide", all_namespaces=all_namespaces)
    click.echo(text or f"No resources found in {ns or 'any'} namespace.", err=not text)


@cli.command()
@click.argument("kind", required=False)
@click.argument("name", required=False)
@click.option("-f", "--filename", "files", multiple=True, type=click.Path(dir_okay=False))
@click.option("-n", "--namespace", default="default", show_default=True)
@click.pass_context
@friendly
def delete(ctx: click.Context, kind: str | None, name: str | None, files: tuple[str, ...], namespace: str) -> None:
    """Delete an object (KIND NAME) or the objects of manifest files (-f)."""
    if files:
        targets = [(resources.by_kind(o["kind"]), o["metadata"]["name"], o["metadata"].get("namespace", namespace))
                   for path in files for o in manifests.load(path)]
    elif kind and name:
        targets = [(resources.lookup(kind), name, namespace)]
    else:
        raise click.UsageError("give KIND NAME, or -f FILE")

    async def work(client: Client):
        for res, obj_name, ns in targets:
            await client.delete(res.plural, obj_name, ns if res.namespaced else None)
            click.echo(f'{res.singular} "{obj_name}" deleted')

    run_api(ctx, work)


@cli.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("target")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-c", "--container", help="The pod's container [default: its default container, else its first].")
@click.pass_context
@friendly
def exec_(ctx: click.Context, target: str, command: tuple[str, ...], namespace: str, container: str | None) -> None:
    """Run COMMAND in a pod's container (in all its namespaces, at its root, with its environment:
    its image's tools), or in a node's (node/NAME) or the underlay client's (underlay/client)
    network namespace; its exit code is passed on."""
    if target == "underlay/client" or target.startswith("node/"):
        argv = netns.command(resolve_netns(ctx, target), list(command))
    else:
        argv = nsenter.command(container_pid(ctx, target, namespace, container), list(command))
    programs.become(argv)


def resolve_netns(ctx: click.Context, target: str) -> str:
    """The network namespace of `node/NAME` or `underlay/client` in the lab."""
    lab = lab_state(ctx).load_lab()
    if target == "underlay/client":
        return names.client_netns(lab.name)
    node = target.split("/", 1)[1]
    if node not in lab.nodes:
        raise click.ClickException(f"node {node!r} is not in lab {lab.name!r} (nodes: {', '.join(lab.nodes)})")
    return names.node_netns(lab.name, node)


def container_pid(ctx: click.Context, target: str, namespace: str, container: str | None) -> int:
    """The process of a running container of `POD` or `pod/POD`, as the pod's status names it."""
    name = target.split("/", 1)[1] if target.startswith(("pod/", "po/", "pods/")) else target
    pod = run_api(ctx, lambda client: client.get("pods", name, namespace))
    statuses = {s["name"]: s for s in pod.get("status", {}).get("containerStatuses") or []}
    specs = [c["name"] for c in pod["spec"].get("containers", [])]
    wanted = container or objects.default_container(pod)
    if wanted not in specs:
        raise click.ClickException(f"container {wanted} is not valid for pod {name}: use one of {', '.join(specs)}")
    status = statuses.get(wanted, {})
    if "running" not in status.get("state", {}):
        state = next(iter(status.get("state", {}).values()), {}).get("reason", "ContainerCreating")
        raise click.ClickException(f"container {wanted} of pod {namespace}/{name} is not running ({state})")
    pid = objects.container_pid(status)
    if not os.path.exists(f"/proc/{pid}"):
        raise click.ClickException(f"container {wanted} of pod {namespace}/{name} does not run on this machine")
    return pid


@cli.command()
@click.argument("src", metavar="SRC")
@click.argument("dest", metavar="DEST")
@click.option("--proto", type=click.Choice(["tcp", "udp", "icmp"]), help="The probe's protocol [default: tcp, "
              "or the protocol of the Service port DEST names].")
@click.option("--port", type=int, help="The destination port for a pod or an IP DEST [default: 8080].")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="With --count above 1, json prints a list of reports.")
@click.option("--count", metavar="N", type=click.IntRange(min=1), default=1, show_default=True,
              help="Send N probes one after the other, each with its own report.")
@click.option("--pcap", "pcap_dir", metavar="DIR", type=click.Path(file_okay=False),
              help="Write the probe's copies as pcapng: NN-NODE-NETNS-IFACE.pcapng per interface it was seen on, "
                   "all.pcapng with all of them (one subdirectory per probe with --count).")
@click.option("--svg", "svg_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Draw the path over the lab as SVG (FILE-1.svg, FILE-2.svg... with --count).")
@click.option("--no-rules", is_flag=True,
              help="Do not trace the netfilter rules: the nodes' rulesets stay untouched, and no rule hits are shown.")
@click.option("--dns", "dns_name", metavar="NAME",
              help="Make the probe a DNS query for NAME (as dig asks it: no search path), over UDP to port 53 unless "
                   "DEST names another; the hops show the question and the answer.")
@click.option("--dns-type", type=click.Choice(names.DNS_QUESTION_TYPES), default="A", show_default=True,
              help="The type the --dns query asks for.")
@click.pass_context
@friendly
def trace(ctx: click.Context, src: str, dest: str, proto: str | None, port: int | None, namespace: str,
          output: str, count: int, pcap_dir: str | None, svg_file: str | None, no_rules: bool, dns_name: str | None,
          dns_type: str) -> None:
    """Send one probe from SRC (a pod, node/NAME, or underlay/client: the host outside the cluster) to
    DEST (a pod, svc/NAME[:PORT], a Service of another namespace as svc/NAMESPACE/NAME[:PORT] or
    svc/NAME.NAMESPACE[:PORT], or an IP[:PORT]) and show every hop it makes.

    Exits 0 when the probe (every probe, with --count) reached its destination, 1 when one did not."""

    from netplane.trace import pcap, render, resolve, svg, tracer  # here: scapy takes half a second to load

    if os.geteuid() != 0:
        raise click.ClickException("netplane trace needs root (it captures in the lab's namespaces)")
    query = None
    if dns_name is not None:
        if proto not in (None, "udp"):
            raise click.BadParameter(f"a --dns query goes over udp, not {proto}", param_hint="--proto")
        proto, port, query = "udp", names.DNS_PORT if port is None else port, (dns_name, dns_type)
    lab = lab_state(ctx).load_lab()
    try:
        target = run_api(ctx, lambda client: resolve.Resolver(client, lab).target(src, dest, namespace, proto, port))
    except resolve.TraceError as err:
        raise click.ClickException(str(err)) from None
    topology = None
    if svg_file:
        topology = svg.topology(lab, run_api(ctx, lambda client: client.list("pods"))["items"])
    reports = []
    for i in range(1, count + 1):
        report = tracer.run(target, rule_hits=not no_rules, query=query)
        reports.append(report)
        if pcap_dir:
            where = Path(pcap_dir) if count == 1 else Path(pcap_dir) / str(i)
            files = pcap.write_trace(report, where)
            click.echo(f"pcap: {len(files) - 1} interface files and {pcap.MERGED} "
                       f"({len(pcap.hop_frames(report))} frames) in {where}", err=True)
        if svg_file:
            path = Path(svg_file)
            if count > 1:
                path = path.with_name(f"{path.stem}-{i}{path.suffix or '.svg'}")
            svg.write(path, report, topology)
            click.echo(f"svg: {path}", err=True)
        if output == "table":
            click.echo(("\n" if i > 1 else "") + render.table(report))
    if output == "json":
        data = [render.to_json(r) for r in reports]
        click.echo(printers.dump(data[0] if count == 1 else data, "json"))
    elif count > 1:
        click.echo(f"\n{count} probes: {sum(r.delivered for r in reports)} delivered, "
                   f"{sum(r.replied for r in reports)} replied")
    ctx.exit(0 if all(r.delivered for r in reports) else 1)


@cli.group()
def policy() -> None:
    """What the NetworkPolicies make of connections, from the objects alone (nothing is sent)."""


def _policy_objects(ctx: click.Context) -> policies.Objects:
    async def work(client: Client):
        return [(await client.list(plural))["items"] for plural in ("pods", "namespaces", "networkpolicies", "nodes")]

    return policies.Objects.listed(*run_api(ctx, work))


PROTOCOL_OPTION = click.option("--protocol", type=click.Choice(PROTOCOLS), default="TCP", show_default=True)


@policy.command(name="explain")
@click.argument("src", metavar="SRC")
@click.argument("dest", metavar="DEST")
@click.option("--port", type=click.IntRange(1, 65535), default=80, show_default=True)
@PROTOCOL_OPTION
@click.option("-n", "--namespace", default="default", show_default=True, help="The namespace of a pod given by NAME.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
@friendly
def policy_explain(ctx: click.Context, src: str, dest: str, port: int, protocol: str, namespace: str,
                   output: str) -> None:
    """Whether a new connection from SRC to DEST (each a pod as NAME or NAMESPACE/NAME, node/NAME or an
    IP address) is allowed, and by which policies, or which policies isolate the pod that drops it.

    Exits 0 when allowed, 1 when dropped."""
    objects = _policy_objects(ctx)
    try:
        answer = policies.explain(objects, objects.address(src, namespace), objects.address(dest, namespace),
                                  protocol, port)
    except policies.PolicyQueryError as err:
        raise click.ClickException(str(err)) from None
    click.echo(printers.dump(answer, "json") if output == "json" else policies.explain_text(answer))
    ctx.exit(0 if answer["allowed"] else 1)


@policy.command(name="table")
@click.argument("namespaces", metavar="[NAMESPACE...]", nargs=-1)
@click.option("--port", type=click.IntRange(1, 65535), default=80, show_default=True)
@PROTOCOL_OPTION
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
@friendly
def policy_table(ctx: click.Context, namespaces: tuple[str, ...], port: int, protocol: str, output: str) -> None:
    """The truth table of every pod of these namespaces (all when none given) to every other, as
    upstream's NetworkPolicy e2e tests print theirs."""
    table = policies.truth_table(_policy_objects(ctx), list(namespaces), protocol, port)
    click.echo(printers.dump(table, "json") if output == "json" else policies.table_text(table))


@cli.command()
@click.argument("services", metavar="SERVICE...", nargs=-1, required=True)
@click.option("--from", "sources", metavar="SRC", multiple=True,
              help="A source: a pod, node/NAME or underlay/client (repeatable) [default: every node, the underlay "
                   "client and the first Running pod on each node].")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds a probe waits for its answer.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
@friendly
def reach(ctx: click.Context, services: tuple[str, ...], sources: tuple[str, ...], namespace: str, timeout: float,
          output: str) -> None:
    """Ask every address of each SERVICE ([svc/]NAME[:PORT]: its ClusterIP, its NodePort on each node,
    its load-balancer and external IPs) from every source at once, and show who the endpoint saw as
    the client (a pod, or the node address it was masqueraded to), or `refused`, or `no answer`:
    what the traffic policies do from where. The endpoints must answer `GET /clientip`, as
    netplane/echo does."""
    from netplane.trace import reach as reachlib, resolve

    if os.geteuid() != 0:
        raise click.ClickException("netplane reach needs root (it opens sockets in the lab's namespaces)")
    lab = lab_state(ctx).load_lab()
    try:
        plan = run_api(ctx, lambda client: reachlib.plan(client, lab, list(services), list(sources), namespace))
    except resolve.TraceError as err:
        raise click.ClickException(str(err)) from None
    results = asyncio.run(reachlib.probe(plan.sources, plan.destinations, timeout))
    if output == "json":
        click.echo(printers.dump(reachlib.to_json(plan, results), "json"))
        return
    click.echo("\n\n".join(f"{service}\n" + printers.columns(header, rows)
                            for service, header, rows in reachlib.tables(plan, results)))


@cli.command()
@click.argument("where", metavar="WHERE")
@click.argument("interface", metavar="[IFACE]", required=False)
@click.option("-w", "--write", "out", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write the frames to a pcapng file (- for standard output) instead of printing them.")
@click.option("-c", "--count", type=click.IntRange(min=1), help="Stop after COUNT frames.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), help="Stop after S seconds.")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.pass_context
@friendly
def capture(ctx: click.Context, where: str, interface: str | None, out: str | None, count: int | None,
            seconds: float | None, namespace: str) -> None:
    """Capture live in a lab namespace: WHERE is a pod, node/NAME, underlay/client or underlay (the switch);
    IFACE one of its interfaces (all of them when left out).

    One line per frame (time, interface, in/out, a summary with what a VXLAN packet carries), or a
    pcapng file with -w. Stops on Ctrl-C, after COUNT frames or after S seconds."""
    import signal

    from netplane.trace import live, pcap, resolve
    from netplane.trace.hops import UNDERLAY

    if os.geteuid() != 0:
        raise click.ClickException("netplane capture needs root (it captures in the lab's namespaces)")
    lab = lab_state(ctx).load_lab()
    if where == UNDERLAY:
        place = resolve.Place(names.underlay_netns(lab.name), UNDERLAY)
    else:
        try:
            _, _, place = run_api(ctx, lambda client: resolve.Resolver(client, lab).source(where, namespace))
        except resolve.TraceError as err:
            raise click.ClickException(str(err)) from None
    if not netns.exists(place.netns):
        raise click.ClickException(f"network namespace {place.netns} does not exist")
    if interface is not None:
        present = live.interfaces(place)
        if interface not in present:
            raise click.ClickException(f"no interface {interface!r} in {place.netns} "
                                       f"(interfaces: {', '.join(present)})")

    def stop(signum, frame):  # SIGTERM ends the capture as Ctrl-C does: the file is complete
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`&`)
    sink = None if out is None else (sys.stdout.buffer if out == "-" else open(out, "wb"))
    writer = None if sink is None else pcap.Writer(sink)
    seen = 0
    where_text = f"{place.netns}" + (f" on {interface}" if interface else " on every interface")
    frames = live.frames(place, interface, count, seconds,
                         ready=lambda: click.echo(f"capturing in {where_text} (Ctrl-C to stop)", err=True))
    try:
        with contextlib.closing(frames):  # the socket is closed however the loop ends
            for frame in frames:
                seen += 1
                if writer is not None:
                    writer.frame(frame)
                    writer.flush()
                else:
                    click.echo(live.line(frame))
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # the reader of stdout went away (`| head`, a closed wireshark)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        if sink is not None and sink is not sys.stdout.buffer:
            sink.close()
    written = f", written to {out}" if out and out != "-" else ""
    click.echo(f"{seen} frame{'' if seen == 1 else 's'} captured{written}", err=True)


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT (e.g. 192.168.56.10:6443), got {text!r}")
    return host.strip("[]"), int(port)


@cli.command()
@click.option("--listen", "listen", required=True, metavar="HOST:PORT",
              help="Address to serve on, e.g. 192.168.56.10:6443 (TLS; the certificate names HOST).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("/var/lib/netplane/server"),
              show_default=True, help="Store, CA, tokens and admin.kubeconfig.")
@click.option("--storage", help="etcd://HOST:PORT[,HOST:PORT] (default: SQLite in the state directory).")
@click.option("--bootstrap-token", help="A token agents may join with ([a-z0-9]{6}.[a-z0-9]{16}); "
                                        "`netplane token create` makes more.")
@click.option("--cluster-cidr", default="10.244.0.0/16", show_default=True, help="The pod network (node IPAM).")
@click.option("--service-cidr", default="10.96.0.0/16", show_default=True, help="ClusterIPs come from here.")
@click.option("--cluster-domain", default=names.CLUSTER_DOMAIN, show_default=True, callback=cluster_domain_option,
              help="The cluster's DNS domain: names the API server's certificate and the ServiceAccount tokens' issuer.")
@click.option("--name", default="server", show_default=True, help="Names the CA and the kubeconfig's context.")
@click.option("--leader-elect-lease-duration", default=15.0, show_default=True,
              help="Seconds another server waits after the leader's last renewal before taking over.")
@click.option("--leader-elect-renew-deadline", default=10.0, show_default=True,
              help="Seconds the leader keeps leading without a successful renewal.")
@click.option("--leader-elect-retry-period", default=2.0, show_default=True,
              help="Seconds between attempts to take or renew the Lease.")
@click.option("--audit-level", type=click.Choice(["None", "Metadata", "Request", "RequestResponse"]), default="None",
              show_default=True, help="What the audit log records of each request.")
@click.option("--audit-log-path", default="audit.log", show_default=True,
              help="The audit log's file (relative to --state-dir), or - for stdout only.")
@click.option("--audit-stdout", is_flag=True, help="Write the audit log to stdout too.")
@friendly
def server(listen: str, state_dir: Path, storage: str | None, bootstrap_token: str | None, cluster_cidr: str,
           service_cidr: str, cluster_domain: str, name: str, leader_elect_lease_duration: float, leader_elect_renew_deadline: float,
           leader_elect_retry_period: float, audit_level: str, audit_log_path: str, audit_stdout: bool) -> None:
    """Run the API server and the controllers, with no emulated nodes, for `netplane agent`s to join."""
    from netplane.api.auth import TokenError, split_bootstrap
    from netplane.controllers import main as control_plane
    host, port = _listen_address(listen)
    if bootstrap_token:
        try:
            split_bootstrap(bootstrap_token)
        except TokenError as err:
            raise click.BadParameter(str(err), param_hint="--bootstrap-token") from None
    election = (leader_elect_lease_duration, leader_elect_renew_deadline, leader_elect_retry_period)
    if not election[2] < election[1] < election[0]:
        raise click.UsageError("leader election needs retry period < renew deadline < lease duration")
    setup_logging()
    asyncio.run(control_plane.run(control_plane.ServerConfig(
        host, port, state_dir.resolve(), cluster_cidr, service_cidr, cluster_domain, storage, bootstrap_token,
        name=name, election=election, audit=(audit_level, audit_log_path, audit_stdout))))


@cli.command()
@click.option("--server", "server_url", metavar="URL[,URL...]",
              help="https://HOST:PORT of `netplane server` (with --token); several replicas comma-separated, "
                   "failed over in turn.")
@click.option("--token", help="A bootstrap token of the server (`netplane token create` prints a join command).")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Reach the server with this kubeconfig instead of a token.")
@click.option("--node", default=socket.gethostname, show_default="the host name", help="The Node this agent runs.")
@click.option("--iface", default=names.UNDERLAY_IF, show_default=True, help="The underlay interface (VXLAN's).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="CNI config, IPAM and agent id (default /var/lib/netplane/agent/NODE).")
@click.option("--cluster-cidr", default="10.244.0.0/16", show_default=True, help="kube-proxy's --cluster-cidr.")
@click.option("--proxy-mode", type=click.Choice(["nftables", "iptables"]), default="nftables", show_default=True)
@click.option("--cni", default="netplane", show_default=True, help="netplane, reference, or a conflist file.")
@click.option("--netns-prefix", default="cni-", show_default=True, callback=netns_prefix,
              help="Pods' namespaces are PREFIXpod.NS.NAME.")
@click.option("--resync-seconds", type=click.IntRange(1, 3600), default=30, show_default=True,
              help="How often the proxy and the overlay check the kernel against what they wrote, and repair it.")
@click.option("--cluster-dns", default="10.96.0.10", show_default=True,
              help="The cluster DNS Service's address, pods' name server (kubelet's --cluster-dns).")
@click.option("--cluster-domain", default=names.CLUSTER_DOMAIN, show_default=True, callback=cluster_domain_option,
              help="The cluster's DNS domain, in pods' search path (kubelet's --cluster-domain).")
@click.option("--resolv-conf", default="/etc/resolv.conf", show_default=True,
              help="The node's resolv.conf, for pods with dnsPolicy Default (kubelet's --resolv-conf).")
@click.option("--image-catalog", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A JSON file of images beyond the built-in catalog, as a lab file's `images:`.")
@click.option("--node-labels", default="", metavar="KEY=VALUE[,...]", help="Labels the Node registers with.")
@click.option("--capacity", default="", metavar="cpu=N,memory=Q,pods=N",
              help="What the Node reports as its capacity instead of the machine's.")
@friendly
def agent(server_url: str | None, token: str | None, kubeconfig: Path | None, node: str, iface: str,
          state_dir: Path | None, cluster_cidr: str, proxy_mode: str, cni: str, netns_prefix: str,
          resync_seconds: int, cluster_dns: str, cluster_domain: str, resolv_conf: str,
          image_catalog: Path | None, node_labels: str, capacity: str) -> None:
    """Run this host's node agent (kubelet via CNI, overlay, proxy) against a `netplane server`."""
    from netplane.agent import main as node_agent
    if not kubeconfig and not (server_url and token):
        raise click.UsageError("give --server and --token (as `netplane token create` prints), or --kubeconfig")
    setup_logging()
    config = node_agent.JoinConfig(
        node, (state_dir or Path("/var/lib/netplane/agent") / node).resolve(), server_url, token, kubeconfig,
        iface, cluster_cidr, netns_prefix, proxy_mode, cni, resync_seconds=resync_seconds,
        cluster_dns=(cluster_dns,), cluster_domain=cluster_domain, resolv_conf=resolv_conf,
        images=model.parse({"images": json.loads(image_catalog.read_text())}).images if image_catalog else {},
        labels=_pairs(node_labels, "--node-labels"), capacity=_pairs(capacity, "--capacity"))
    try:
        asyncio.run(node_agent.run(config))
    except node_agent.NodeTaken as err:
        raise click.ClickException(str(err)) from None


@cli.group()
def token() -> None:
    """Bootstrap tokens for agents joining a `netplane server`."""


@token.command(name="create")
@click.option("--state-dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="The server's state directory (default: the lab's servers, for a lab with "
                   "controlPlane.mode hosts; else /var/lib/netplane/server).")
@click.option("--ttl", default="24h", show_default=True, help="How long it is valid: 30m, 24h, 7d, or 0 for ever.")
@click.pass_context
@friendly
def token_create(ctx: click.Context, state_dir: Path | None, ttl: str) -> None:
    """Make a bootstrap token and print the command that joins a machine with it."""
    from netplane.controllers import main as control_plane
    replicas = sorted((LabState(ctx.obj["lab"]).dir / "servers").glob("cp-*"))
    dirs = [state_dir] if state_dir else replicas or [Path("/var/lib/netplane/server")]
    created = control_plane.create_token(dirs, _duration(ttl) or None, "netplane token create")
    click.echo(control_plane.join_command(dirs, created))


def _pairs(text: str, option: str) -> dict[str, str]:
    """``a=1,b=2`` as a mapping."""
    found = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: give KEY=VALUE pairs separated by commas", param_hint=option)
        found[key] = value
    return found


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text == "0":
        return 0
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise click.BadParameter(f"{text!r}: a number and a unit, e.g. 30m, 24h, 7d (0: never expires)",
                                 param_hint="--ttl")
    return int(text[:-1]) * units[text[-1]]


@cli.group()
def bench() -> None:
    """Benchmarks, each side by side with a peer run on the same machine in the same run."""


@bench.command(name="up")
@click.option("--rounds", default=3, show_default=True, help="Default labs brought up and down.")
@click.option("--pods", default=10, show_default=True, help="Extra pods started at once per round.")
@click.option("--adds", default=20, show_default=True, help="CNI ADDs per plugin in the peer comparison.")
@friendly
def bench_up(rounds: int, pods: int, adds: int) -> None:
    """Time `up` of the default lab, pod starts, `down`, and CNI ADD against the reference plugins."""
    import statistics
    import tempfile

    from netplane.bench import cni as cni_bench, up as bench

    results = []
    for i in range(rounds):
        r = bench.lab_round(pods)
        results.append(r)
        click.echo(f"round {i + 1}: up {r.up:.2f} s, {pods} pod starts {bench.summary(r.pod_starts)}, down {r.down:.2f} s")
    ups = [r.up for r in results]
    starts = [s for r in results for s in r.pod_starts]
    click.echo(f"up (default lab, 2 nodes, 4 pods, to all Running): median {statistics.median(ups):.2f} s over {rounds} rounds")
    click.echo(f"pod start, create to Running ({len(starts)} pods, {pods} at once): {bench.summary(starts)}")
    click.echo(f"down: median {statistics.median([r.down for r in results]):.2f} s")
    with tempfile.TemporaryDirectory() as work:
        peer = cni_bench.compare(adds, 0, Path(work))
    for r in peer:
        click.echo(f"CNI ADD, {r.label}: {bench.summary(r.adds)} ({adds} runs)")
    ref, own = (statistics.median(r.adds) for r in peer)
    click.echo(f"ratio netplane / reference CNI ADD (median): {own / ref:.2f}")


@bench.command(name="scale")
@click.option("--nodes", "sizes", default="10,20,50", show_default=True, help="Lab sizes (nodes), comma-separated.")
@click.option("--pods-per-node", default=10, show_default=True, help="Echo pods pinned to each node.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@friendly
def bench_scale(sizes: str, pods_per_node: int, output: str) -> None:
    """Up, down and memory of labs of N nodes x P echo pods, next to Mininet with N bridges x P hosts."""
    from netplane.bench import scale as bench

    if os.geteuid() != 0:
        raise click.ClickException("netplane bench scale needs root (it brings up labs and Mininet)")
    try:
        nodes = tuple(int(n) for n in sizes.split(",") if n.strip())
    except ValueError:
        raise click.BadParameter("give node counts like 10,20,50", param_hint="'--nodes'") from None
    if not nodes or min(nodes) < 1 or pods_per_node < 1:
        raise click.BadParameter("node and pod counts must be at least 1", param_hint="'--nodes'")
    try:
        rows = bench.run(nodes, pods_per_node, lambda line: click.echo(line, err=True))
    except RuntimeError as err:
        raise click.ClickException(str(err)) from None
    if output == "json":
        click.echo(json.dumps([r.to_json() for r in rows], indent=2))
        return
    for line in bench.table(rows):
        click.echo(line)


@bench.command(name="cni")
@click.option("--runs", default=100, show_default=True, help="ADDs, then DELs, one at a time, per plugin set.")
@click.option("--parallel", default=50, show_default=True, help="ADDs at once on one node, per plugin set.")
@friendly
def bench_cni(runs: int, parallel: int) -> None:
    """ADD and DEL times of netplane's plugins next to the reference bridge + host-local, same config."""
    import tempfile

    from netplane.bench import cni as bench

    if os.geteuid() != 0:
        raise click.ClickException("netplane bench cni needs root (it makes namespaces)")
    click.echo(f"{runs} ADDs and DELs one at a time, then {parallel} ADDs at once, per plugin set ...")
    with tempfile.TemporaryDirectory() as work:
        results = bench.compare(runs, parallel, Path(work))
    for line in bench.lines(results):
        click.echo(line)


@bench.command(name="api")
@click.option("--pods", default=10_000, show_default=True, help="Pods created, then listed.")
@click.option("--concurrency", default=20, show_default=True, help="Creates in flight at once.")
@click.option("--watchers", default=100, show_default=True, help="Watches that each get every write.")
@click.option("--writes", default=200, show_default=True, help="Writes timed to every watcher.")
@click.option("--backend", "backends", multiple=True, type=click.Choice(["sqlite", "etcd"]),
              help="Only these storage backends (default: both).")
@friendly
def bench_api(pods: int, concurrency: int, watchers: int, writes: int, backends: tuple[str, ...]) -> None:
    """Creates/s, LIST time and watch latency of the API server, on SQLite and etcd side by side."""
    from netplane.bench import api as bench

    opts = bench.Options(pods=pods, concurrency=concurrency, watchers=watchers, writes=writes)
    results = []
    for backend in backends or bench.BACKENDS:
        click.echo(f"{backend}: {pods} creates, {opts.lists} LISTs, {watchers} watchers x {writes} writes ...")
        results.append(bench.run(backend, opts))
    for line in bench.table(results, opts):
        click.echo(line)


@bench.command(name="trace")
@click.option("--rounds", default=5, show_default=True, help="Traces (and peer requests) per path.")
@friendly
def bench_trace(rounds: int) -> None:
    """How long `netplane trace` takes on each path of the default lab, next to curl on the same path."""
    from netplane.bench import trace as bench

    if os.geteuid() != 0:
        raise click.ClickException("netplane bench trace needs root (it brings up a lab and traces in it)")
    click.echo(f"a default lab; {rounds} traces and {rounds} curl requests per path, interleaved ...")
    for r in bench.run(rounds):
        click.echo(f"{r.path:24} trace median {statistics.median(r.trace):5.2f} s (max {max(r.trace):5.2f} s, "
                   f"{r.delivered}/{len(r.trace)} delivered); curl through netplane exec "
                   f"{statistics.median(r.peer):5.2f} s; ratio {r.ratio:4.1f}")


@bench.command(name="streams")
@click.option("--rounds", default=10, show_default=True, help="Runs of each way, interleaved.")
@click.option("--mebibytes", default=64, show_default=True, help="MiB sent per port-forward run.")
@friendly
def bench_streams(rounds: int, mebibytes: int) -> None:
    """kubectl exec and port-forward through the API server and the kubelet port, next to netplane exec
    and to a direct way into the same pod."""
    from netplane.bench import streams as bench

    if os.geteuid() != 0:
        raise click.ClickException("netplane bench streams needs root (it brings up a lab)")
    click.echo(f"a default lab; {rounds} rounds of each way, interleaved ...")
    for line in bench.lines(bench.run(rounds, mebibytes)):
        click.echo(line)


@bench.command(name="dns")
@click.option("--rate", default=2000, show_default=True, help="Queries per second offered, all four clients together.")
@click.option("--seconds", default=5.0, show_default=True, help="Length of each run.")
@click.option("--rounds", default=3, show_default=True, help="Runs of each server, interleaved.")
@friendly
def bench_dns(rate: int, seconds: float, rounds: int) -> None:
    """Cluster DNS under a fixed load from four pods through the kube-dns Service, next to dnsmasq
    serving the same names from a pod behind a Service of its own."""
    from netplane.bench import dns as bench

    if os.geteuid() != 0:
        raise click.ClickException("netplane bench dns needs root (it brings up a lab)")
    click.echo(f"a lab with 4 client pods; {rounds} runs of {seconds:g} s at {rate}/s per server, interleaved ...")
    for line in bench.lines(bench.run(rate, seconds, rounds)):
        click.echo(line)


@bench.command(name="proxy")
@click.option("--services", default="1000,10000", show_default=True,
              help="Service counts, comma-separated (3 endpoints each); the latency baseline is added.")
@click.option("--baseline", default=100, show_default=True, help="Services the first-packet latency is compared with.")
@click.option("--connects", default=300, show_default=True, help="Timed new TCP connections per mode and size.")
@click.option("--changes", default=10, show_default=True, help="Incremental syncs of one changed Service per size.")
@click.option("--mode", "modes", multiple=True, type=click.Choice(["nftables", "nftables-command", "iptables-legacy", "iptables-nft"]),
              help="Only these proxy modes (default: all the proxier offers).")
@click.option("--slow", is_flag=True, help="Also run iptables-nft above 1,000 Services (minutes at 10,000).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@friendly
def bench_proxy(services: str, baseline: int, connects: int, changes: int, modes: tuple[str, ...], slow: bool,
                output: str) -> None:
    """Full sync, one-Service sync and first-packet latency of the proxy modes as Services grow."""
    from netplane.bench import proxy as bench

    if os.geteuid() != 0:
        raise click.ClickException("netplane bench proxy needs root (it creates network namespaces)")
    try:
        sizes = tuple(int(s.replace("_", "")) for s in services.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter("give Service counts like 1000,10000", param_hint="'--services'") from None
    if not sizes or min(sizes) < 2 or baseline < 2:
        raise click.BadParameter("every Service count must be at least 2", param_hint="'--services'")
    opts = bench.Options(services=sizes, baseline=baseline, connects=connects, changes=changes,
                         modes=modes or bench.MODES, slow=slow)
    result = bench.run(opts, lambda line: click.echo(line, err=True))
    if output == "json":
        click.echo(printers.dump(result.to_json(), "json"))
        return
    for line in bench.table(result):
        click.echo(line)


@bench.command(name="policy")
@click.option("--pods", default=1000, show_default=True, type=click.IntRange(min=10), help="Pods of the made-up cluster.")
@click.option("--policies", default=1000, show_default=True, type=click.IntRange(min=50),
              help="NetworkPolicies of the made-up cluster.")
@click.option("--connects", default=300, show_default=True, help="Timed new TCP connections with and without policies.")
@click.option("--changes", default=10, show_default=True, help="Changed policies and new pods synced one at a time.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@friendly
def bench_policy(pods: int, policies: int, connects: int, changes: int, output: str) -> None:
    """Programming NetworkPolicies, one change, and first-packet latency with and without them."""
    from netplane.bench import policy as bench

    if os.geteuid() != 0:
        raise click.ClickException("netplane bench policy needs root (it creates network namespaces)")
    result = bench.run(bench.Options(pods, policies, connects, changes), lambda line: click.echo(line, err=True))
    if output == "json":
        click.echo(printers.dump(result.to_json(), "json"))
        return
    for line in bench.table(result):
        click.echo(line)


@cli.group()
def cni() -> None:
    """CNI tools: attach a namespace as cnitool does, check a plugin against the CNI SPEC."""


CNI_CACHE = str(STATE_ROOT / ".cni-cache")  # netplane's /var/lib/cni/results; no lab can be named so
CNI_COMMAND_HELP = {
    "add": "Attach NETNS (a name in /run/netns or a path) to the network, as cnitool does; print the result.",
    "check": "Ask the network's plugins whether NETNS is still attached as ADD left it.",
    "del": "Detach NETNS from the network (fine when it is not attached, or when NETNS is gone).",
}


def cnitool_container_id(netns_path: str) -> str:
    """The container id cnitool makes up for a namespace: stable, so DEL finds what ADD did."""
    import hashlib
    return "cnitool-" + hashlib.sha512(netns_path.encode()).hexdigest()[:20]


def cni_attachment_command(command: str):
    """`netplane cni add|check|del NETNS --conf FILE`: one network operation on one namespace."""

    @cni.command(name=command, help=CNI_COMMAND_HELP[command])
    @click.argument("netns_name", metavar="NETNS")
    @click.option("--conf", "conf_file", required=True, type=click.File("r"),
                  help="The network: a conflist, or one plugin's config.")
    @click.option("--plugin-dir", "plugin_dirs", multiple=True, metavar="DIR",
                  help="Where the plugins are (CNI_PATH); repeatable. Default: netplane's cni/, then /usr/lib/cni.")
    @click.option("--ifname", default="eth0", show_default=True)
    @click.option("--host-netns", help="Run the plugins in this namespace [default: the current one, as cnitool].")
    @friendly
    def run(netns_name: str, conf_file, plugin_dirs: tuple[str, ...], ifname: str, host_netns: str | None) -> None:
        from netplane.cni.runtime import Attachment, CNIError, Runtime, plugin_dir
        from netplane.kernel import netns

        path = netns_name if "/" in netns_name else netns.path(netns_name)
        if command != "del" and not os.path.exists(path):
            raise click.ClickException(f"no network namespace {netns_name!r} ({path})")
        try:
            conf = json.loads(conf_file.read())
        except ValueError as err:
            raise click.ClickException(f"{conf_file.name} is not JSON: {err}") from None
        dirs = [os.path.abspath(d) for d in plugin_dirs] or [plugin_dir(), "/usr/lib/cni"]
        runtime = Runtime(dirs, CNI_CACHE, exec_netns=host_netns)
        att = Attachment(cnitool_container_id(path), path, ifname)
        operation = {"add": runtime.add, "check": runtime.check, "del": runtime.delete}[command]
        try:
            result = asyncio.run(operation(conf, att))
        except CNIError as err:
            raise click.ClickException(str(err)) from None
        if result is not None:
            click.echo(json.dumps(result, indent=2))

    return run


for _command in ("add", "check", "del"):
    cni_attachment_command(_command)


@cni.command(name="plugin-dir")
def cni_plugin_dir() -> None:
    """Print the directory of netplane's CNI plugins (put it in a runtime's CNI_PATH)."""
    from netplane.cni.runtime import plugin_dir

    click.echo(plugin_dir())


@cni.command(name="test")
@click.option("--conf", "conf_file", required=True, type=click.File("r"),
              help="The network config to test: one plugin's config, or a conflist holding one plugin.")
@click.option("--plugin-dir", "plugin_dirs", multiple=True, metavar="DIR",
              help="Where the plugin and its IPAM are (CNI_PATH); repeatable. "
                   "Default: netplane's cni/ directory, then /usr/lib/cni.")
@click.option("--check", "only", multiple=True, metavar="ID", help="Only these checks (repeatable).")
@click.option("--master", metavar="IFNAME",
              help="The host link a macvlan/ipvlan-style plugin attaches to; the suite makes it in its "
                   "throw-away host namespace [default: the config's \"master\"].")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--junit", "junit_file", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Also write a JUnit XML report (one testcase per check) to FILE.")
def cni_test(conf_file, plugin_dirs: tuple[str, ...], only: tuple[str, ...], master: str | None, output: str,
             junit_file: str | None) -> None:
    """Run the CNI conformance checks on a plugin, in throw-away namespaces; exit 1 on any failure."""
    import signal

    from netplane.cni import conformance
    from netplane.cni.runtime import plugin_dir

    if os.geteuid() != 0:
        raise click.ClickException("netplane cni test needs root (it creates network namespaces)")

    def stop(signum, frame):  # SIGTERM stops the suite as Ctrl-C does: its namespaces are removed
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    dirs = [os.path.abspath(d) for d in plugin_dirs] or [plugin_dir(), "/usr/lib/cni"]
    try:
        conf, exe = conformance.load(conf_file.read(), dirs)
        outcomes = conformance.run(conf, dirs, exe, list(only) or None, master=master)
    except conformance.ConfError as err:
        raise click.ClickException(str(err)) from None
    click.echo(conformance.as_json(outcomes) if output == "json" else conformance.as_table(outcomes))
    if junit_file:
        with open(junit_file, "w") as f:
            f.write(conformance.as_junit(outcomes, conf["type"]))
    if any(o.result == conformance.FAIL for o in outcomes):
        sys.exit(1)


def main() -> None:
    cli(prog_name="netplane")


if __name__ == "__main__":
    sys.exit(main())
