"""A YAML graph → a validated spec, before any process starts.

Every mistake a config can hold is found here and reported as one :class:`GraphError`
naming the file, the node and the field, so a typo never surfaces as a node crashing
thirty seconds into a run. The graph format::

    name: demo
    settings: {heartbeat_s: 1.0, max_restarts: 5}
    nodes:
      camera:
        type: camera                  # a key of the node registry
        params: {source: demo/demo.mp4}
        outputs: {frames: {endpoint: "tcp://127.0.0.1:5550"}}   # optional; ipc by default
      renderer:
        type: renderer
        inputs:
          video: camera/frames        # node/output, with the input's default policy
          audio: {from: microphone/audio, policy: queue, size: 200, max_bytes: 4MiB}

``max_bytes`` bounds an input's queue in bytes as ``size`` does in messages, and an output's send
pipe to each reader (``outputs: {frames: {max_bytes: 64MiB}}``); without it the message type's
default applies (``pipeline.transport.DEFAULT_MAX_BYTES``). A number of bytes, or with KiB, MiB, GiB.

A graph may span machines. ``hosts:`` names them; a node's ``host:`` says where it runs (nodes
without one run on the default host: the one marked ``default: true``, else the first listed)::

    hosts:
      camera_box: {address: 10.0.0.1}            # what the other hosts connect to
      gpu_box: {address: 10.0.0.2, bind: 0.0.0.0}   # bind: where to listen, if not the address
    settings: {base_port: 27100, keys_dir: ~/.earshot/keys}
    nodes:
      camera: {type: camera, host: camera_box, outputs: {frames: {port: 27200}}}   # port: optional
      renderer: {type: renderer, host: gpu_box, inputs: {video: camera/frames}}

``launch.py run --host camera_box`` starts that host's nodes only (:meth:`GraphSpec.on_host`). An
output read on another host is a tcp endpoint on its host's address, at ``base_port`` + its rank
among such outputs in node/port order (skipping ports given with ``port:``), so every host derives
the same ports from the same file without talking. Without ``--host`` every node runs here and
every edge stays ipc. CURVE keys (`pipeline.keys`) guard every endpoint that leaves the machine.

The registry (type name → "module:Class") is passed in by the caller: `pipeline` knows
nothing about which nodes exist.
"""

from __future__ import annotations

import dataclasses
import importlib
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from pipeline.node import Node

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
#: a DNS name a host may be reached at (letters, digits, hyphens, dots)
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$")
#: settings.base_port's default: below Linux's ephemeral range (32768-60999), so an outgoing
#: connection of some other program never holds it when the graph starts
DEFAULT_BASE_PORT = 27100


class GraphError(ValueError):
    """A graph that cannot run; the message says where and why."""


#: a port's byte budget (``max_bytes``): at least one small message's worth, at most what a box may hold
MIN_BUDGET_BYTES, MAX_BUDGET_BYTES = 4096, 64 << 30
_BYTE_UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_BYTES_RE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*$")


def byte_budget(value: Any) -> int:
    """``max_bytes`` as written in a graph (an integer, or ``"32MiB"``) → bytes; ValueError saying why not."""
    match = _BYTES_RE.match(value) if isinstance(value, str) else None
    if match:
        value = int(match.group(1)) * _BYTE_UNITS[match.group(2) or ""]
    if not isinstance(value, int) or isinstance(value, bool) or not MIN_BUDGET_BYTES <= value <= MAX_BUDGET_BYTES:
        raise ValueError(f"max_bytes must be bytes in {MIN_BUDGET_BYTES}..{MAX_BUDGET_BYTES >> 30} GiB (a number, or "
                         f"with KiB, MiB, GiB: 32MiB), got {value!r}")
    return value


@dataclass
class Settings:
    """Supervisor knobs. Defaults suit a laptop; edge boxes may want longer timeouts."""

    heartbeat_s: float = 1.0
    heartbeat_timeout_s: float = 15.0  # no heartbeat for this long → the node is hung
    start_timeout_s: float = 60.0  # nodes load models in open(): be patient
    drain_timeout_s: float = 5.0  # a finished node waits this long for readers to take the rest
    max_restarts: int = 5  # per node within restart_window_s; one more crash fails the graph
    restart_window_s: float = 60.0  # restarts older than this no longer count (nor double the backoff)
    restart_backoff_s: float = 0.5  # a node's first fall is restarted at once; from its second, this, doubling
    restart_backoff_max_s: float = 10.0
    #: tcp endpoints on non-loopback addresses need this, and so does a node param that names an
    #: address to listen on (``host``, ``*_host``: the renderer's browser view), which then also
    #: asks for the run's token. (Outputs read on another host need not: naming the hosts is that
    #: choice.) Every tcp endpoint that leaves the machine also needs CURVE keys (``keys_dir``).
    allow_remote: bool = False
    #: realtime: file sources play at their own speed and a slow reader drops what it cannot
    #: take (a live camera's behaviour). lossless: sources wait for the slowest reader, so every
    #: frame and sample is processed and written (`pipeline.media_clock` keeps them together).
    pace: str = "realtime"
    #: graphs across hosts: the tcp port of the first output read on another host; the others follow
    base_port: int = DEFAULT_BASE_PORT
    #: the CURVE keypairs of the graph's hosts (`launch.py keys DIR CONFIG`; ``--keys DIR`` overrides).
    #: Every tcp endpoint that leaves the machine needs them. A relative path is the repository's.
    keys_dir: str = ""

    def validate(self) -> None:
        if self.pace not in ("realtime", "lossless"):
            raise ValueError(f"pace must be realtime or lossless, got {self.pace!r}")
        if not 1024 <= self.base_port <= 65535:
            raise ValueError(f"base_port must be in 1024..65535, got {self.base_port}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"{f.name} must be ≥ 0, got {value}")
        if self.restart_window_s <= 0:
            raise ValueError(f"restart_window_s must be > 0, got {self.restart_window_s}")


@dataclass
class Connection:
    """Where one input port of a node is fed from, and how its queue behaves."""

    port: str
    from_node: str
    from_port: str
    policy: str
    size: int
    max_bytes: int = 0  # the queue's byte budget; 0: the node's declaration, else the message type's default


@dataclass
class NodeSpec:
    name: str
    type: str
    impl: str  # "module:Class"
    params: dict[str, Any]
    inputs: dict[str, Connection] = field(default_factory=dict)
    #: output port → endpoint ("" until resolved against a run directory)
    endpoints: dict[str, str] = field(default_factory=dict)
    #: output port → how many inputs connect to it (the start handshake waits for them)
    subscribers: dict[str, int] = field(default_factory=dict)
    #: the host (a key of the graph's ``hosts:``) that runs it; "" in a graph without hosts
    host: str = ""
    #: output port → its tcp port, for the outputs that a node on another host reads
    ports: dict[str, int] = field(default_factory=dict)
    #: output port → the byte budget of its send pipe to each reader, where the graph sets one
    output_bytes: dict[str, int] = field(default_factory=dict)


@dataclass
class GraphSpec:
    name: str
    source: str  # file it came from, for messages
    settings: Settings
    nodes: dict[str, NodeSpec]
    #: host name → {"address": what others connect to, "bind": where it listens}; {} on one machine
    hosts: dict[str, dict[str, str]] = field(default_factory=dict)
    #: the host this run starts (``launch.py run --host``); "" starts every node here
    host: str = ""

    @property
    def sources(self) -> list[str]:
        """Nodes with no inputs that run here, in a fixed order (their slots in the media clock)."""
        return sorted(name for name, node in self.nodes.items() if not node.inputs and self.runs_here(name))

    def runs_here(self, name: str) -> bool:
        """Whether this run starts node ``name`` (all of them, unless the run is one host's share)."""
        return not self.host or self.nodes[name].host == self.host

    def readers(self, name: str, port: str) -> list[str]:
        """The nodes that read output ``name/port``."""
        return [reader for reader, node in self.nodes.items()
                if any((c.from_node, c.from_port) == (name, port) for c in node.inputs.values())]

    def crosses_hosts(self, name: str, port: str) -> bool:
        """Whether output ``name/port`` goes over tcp to another host in this run."""
        return bool(self.host) and port in self.nodes[name].ports

    def on_host(self, host: str) -> GraphSpec:
        """This graph as host ``host`` runs it: only its own nodes start here; the outputs that cross
        to or from other hosts are tcp endpoints on the publishing host's address."""
        if not self.hosts:
            raise GraphError(f"{self.source}: --host {host}: the graph names no hosts (it has no hosts: table)")
        if host not in self.hosts:
            raise GraphError(f"{self.source}: --host {host}: unknown host; the graph's hosts are {sorted(self.hosts)}")
        if not any(node.host == host for node in self.nodes.values()):
            raise GraphError(f"{self.source}: --host {host}: no node of the graph runs on this host")
        return GraphSpec.from_dict({**self.to_dict(), "host": host})

    def resolve_endpoints(self, run_dir: str | Path | None) -> None:
        """Give every output without an explicit endpoint one: tcp on its host's address when this run
        is one host's share and a node on another host reads it (no run dir needed for those), else an
        ipc path in the run dir. The publishing host binds its ``bind`` address; the others connect to
        its ``address``."""
        for node in self.nodes.values():
            for port, endpoint in node.endpoints.items():
                if endpoint:
                    continue
                if self.crosses_hosts(node.name, port):
                    host = self.hosts[node.host]
                    address = host["bind"] if node.host == self.host else host["address"]
                    node.endpoints[port] = f"tcp://{address}:{node.ports[port]}"
                elif run_dir is not None:
                    node.endpoints[port] = f"ipc://{Path(run_dir) / f'{node.name}.{port}'}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphSpec:
        nodes = {}
        for name, n in data["nodes"].items():
            inputs = {p: Connection(**i) for p, i in n["inputs"].items()}
            nodes[name] = NodeSpec(**{**n, "inputs": inputs})
        return cls(name=data["name"], source=data["source"], settings=Settings(**data["settings"]), nodes=nodes,
                   hosts={h: dict(a) for h, a in data.get("hosts", {}).items()}, host=data.get("host", ""))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: YAML would silently keep the last one,
    and two nodes with the same name would quietly become one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def import_node_class(impl: str) -> type[Node]:
    module_name, _, class_name = impl.partition(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name)
    if not (isinstance(cls, type) and issubclass(cls, Node)):
        raise TypeError(f"{impl} is not a Node subclass")
    return cls


def load_graph(path: str | Path, registry: Mapping[str, str], overrides: list[str] | None = None) -> GraphSpec:
    """Read and validate a graph file. Raises GraphError naming file, node and field.

    ``overrides`` are ``node.param=value`` strings (value in YAML syntax), applied before
    validation, so a one-off change (another input file, another output path) needs no
    copy of the config and is validated like the rest.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise GraphError(f"{path}: cannot read graph file: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a safe loader: data, never objects
    except yaml.YAMLError as exc:
        raise GraphError(f"{path}: not valid YAML: {exc}") from None
    for override in overrides or []:
        _apply_override(data, override, str(path))
    return validate_graph(data, registry, source=str(path))


def _apply_override(data: Any, override: str, source: str) -> None:
    target, sep, raw = override.partition("=")
    node, dot, param = target.partition(".")
    if not (sep and dot and node and param):
        raise GraphError(f"{source}: override {override!r}: expected node.param=value")
    if node == "settings" and isinstance(data, dict):  # settings.pace=lossless: the graph's own knobs
        try:
            data["settings"] = {**(data.get("settings") or {}), param: yaml.safe_load(raw)}
        except yaml.YAMLError as exc:
            raise GraphError(f"{source}: override {override!r}: bad value: {exc}") from None
        return
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(nodes, dict) or not isinstance(nodes.get(node), dict):
        raise GraphError(f"{source}: override {override!r}: no node {node!r} in the graph")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise GraphError(f"{source}: override {override!r}: bad value: {exc}") from None
    nodes[node]["params"] = {**(nodes[node].get("params") or {}), param: value}


def validate_graph(data: Any, registry: Mapping[str, str], source: str = "<graph>") -> GraphSpec:
    def fail(where: str, why: str) -> GraphError:
        return GraphError(f"{source}: {where}: {why}")

    if not isinstance(data, dict):
        raise fail("top level", "expected a mapping with 'nodes:'")
    unknown = sorted(set(data) - {"name", "settings", "nodes", "hosts"})
    if unknown:
        raise fail("top level", f"unknown key(s) {unknown} (allowed: name, settings, hosts, nodes)")
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str) or not name:
        raise fail("name", "must be a non-empty string")
    try:
        from pipeline.node import build_params

        settings = build_params(Settings, data.get("settings") or {})
    except ValueError as exc:
        raise fail("settings", str(exc)) from None

    hosts, default_host = _hosts(data.get("hosts"), fail)

    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        raise fail("nodes", "expected a non-empty mapping of node name → node")

    classes: dict[str, type[Node]] = {}
    nodes: dict[str, NodeSpec] = {}
    asked_ports: dict[tuple[str, str], int] = {}  # outputs: {port: {port: N}}
    for node_name, raw in raw_nodes.items():
        where = f"node {node_name!r}"
        if not isinstance(node_name, str) or not NAME_RE.match(node_name):
            raise fail(where, "names are lower_snake_case, ≤ 32 characters, starting with a letter")
        if node_name == "settings":
            raise fail(where, "'settings' is reserved (--set settings.X=… sets the graph's settings)")
        if not isinstance(raw, dict):
            raise fail(where, "expected a mapping with 'type:'")
        extra = sorted(set(raw) - {"type", "params", "inputs", "outputs", "host"})
        if extra:
            raise fail(where, f"unknown key(s) {extra} (allowed: type, host, params, inputs, outputs)")
        host = raw.get("host", default_host)
        if "host" in raw:
            if not hosts:
                raise fail(f"{where} host", f"{host!r}: the graph has no hosts: table to name it in")
            if host not in hosts:
                raise fail(f"{where} host", f"unknown host {host!r}; the graph's hosts are {sorted(hosts)}")
        node_type = raw.get("type")
        if node_type not in registry:
            raise fail(f"{where} type", f"unknown node type {node_type!r}; known: {sorted(registry)}")
        try:
            cls = import_node_class(registry[node_type])
        except Exception as exc:  # a broken node module must not look like a config typo
            raise fail(f"{where} type", f"cannot load {registry[node_type]}: {type(exc).__name__}: {exc}") from None
        try:
            params = dataclasses.asdict(cls.make_params(raw.get("params") or {}))
        except (ValueError, TypeError) as exc:
            raise fail(f"{where} params", str(exc)) from None
        # keep what was written, in the types the node takes (a YAML 0 for a text param is "0")
        given = {k: params[k] for k in (raw.get("params") or {})}
        for key, value in params.items():  # an address to listen on: loopback unless allowed
            if (key == "host" or key.endswith("_host")) and isinstance(value, str) and value \
                    and not is_loopback(value) and not settings.allow_remote:
                raise fail(f"{where} params.{key}", f"{value!r} is not loopback; set settings.allow_remote: true to "
                                                    "listen there (remote viewers then need the run's token)")
        outputs = raw.get("outputs") or {}
        if not isinstance(outputs, dict):
            raise fail(f"{where} outputs", "expected a mapping of port → {endpoint: ...}")
        endpoints = {port: "" for port in cls.outputs}
        output_bytes: dict[str, int] = {}
        for port, conf in outputs.items():
            if port not in cls.outputs:
                raise fail(f"{where} outputs.{port}", f"{node_type} has no output {port!r}; it has {sorted(cls.outputs)}")
            usage = ("expected {endpoint: 'ipc://…' or 'tcp://host:port'} or, read on another host, {port: N}; "
                     "either may come with max_bytes: the send pipe's byte budget per reader")
            if isinstance(conf, dict) and "max_bytes" in conf:
                try:
                    output_bytes[port] = byte_budget(conf["max_bytes"])
                except ValueError as exc:
                    raise fail(f"{where} outputs.{port}", str(exc)) from None
                conf = {k: v for k, v in conf.items() if k != "max_bytes"}
                if not conf:
                    continue
            if not isinstance(conf, dict) or len(conf) != 1 or not set(conf) <= {"endpoint", "port"}:
                raise fail(f"{where} outputs.{port}", usage)
            if "port" in conf:
                number = conf["port"]
                if not isinstance(number, int) or isinstance(number, bool) or not 1024 <= number <= 65535:
                    raise fail(f"{where} outputs.{port}", f"port must be an integer in 1024..65535, got {number!r}")
                asked_ports[(node_name, port)] = number
                continue
            endpoint = conf["endpoint"]
            if not isinstance(endpoint, str):
                raise fail(f"{where} outputs.{port}", usage)
            _check_endpoint(endpoint, settings.allow_remote, lambda why: fail(f"{where} outputs.{port}", why))
            endpoints[port] = endpoint
        classes[node_name] = cls
        nodes[node_name] = NodeSpec(node_name, node_type, registry[node_type], given,
                                    endpoints=endpoints, subscribers={p: 0 for p in cls.outputs}, host=host,
                                    output_bytes=output_bytes)

    for node_name, raw in raw_nodes.items():
        cls = classes[node_name]
        raw_inputs = raw.get("inputs") or {}
        if not isinstance(raw_inputs, dict):
            raise fail(f"node {node_name!r} inputs", "expected a mapping of port → 'node/output'")
        for port, conf in raw_inputs.items():
            where = f"node {node_name!r} inputs.{port}"
            if port not in cls.inputs:
                raise fail(where, f"{nodes[node_name].type} has no input {port!r}; it has {sorted(cls.inputs)}")
            declared = cls.inputs[port]
            if isinstance(conf, str):
                conf = {"from": conf}
            if not isinstance(conf, dict) or not isinstance(conf.get("from"), str):
                raise fail(where, "expected 'node/output' or {from: node/output, policy: latest|queue, size: N, "
                                  "max_bytes: 8MiB}")
            extra = sorted(set(conf) - {"from", "policy", "size", "max_bytes"})
            if extra:
                raise fail(where, f"unknown key(s) {extra} (allowed: from, policy, size, max_bytes)")
            src_node, _, src_port = conf["from"].partition("/")
            if src_node not in nodes:
                raise fail(where, f"unknown source node {src_node!r} (nodes: {sorted(nodes)})")
            if src_node == node_name:
                raise fail(where, "a node cannot read its own output")
            src_cls = classes[src_node]
            if src_port not in src_cls.outputs:
                raise fail(where, f"node {src_node!r} has no output {src_port!r}; it has {sorted(src_cls.outputs)}")
            out_type, in_type = src_cls.outputs[src_port].type, declared.type
            if not issubclass(out_type, in_type):
                raise fail(where, f"type mismatch: {src_node}/{src_port} sends {out_type.__name__}, "
                                  f"{port} accepts {in_type.__name__}")
            policy = conf.get("policy", declared.policy)
            if policy not in ("latest", "queue"):
                raise fail(where, f"policy {policy!r} is not one of latest, queue")
            size = conf.get("size", declared.size)
            if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 100_000:
                raise fail(where, f"size must be an integer in 1..100000, got {size!r}")
            max_bytes = 0
            if "max_bytes" in conf:
                try:
                    max_bytes = byte_budget(conf["max_bytes"])
                except ValueError as exc:
                    raise fail(where, str(exc)) from None
            nodes[node_name].inputs[port] = Connection(port, src_node, src_port, policy, size, max_bytes)
            nodes[src_node].subscribers[src_port] += 1
        if cls.inputs and not nodes[node_name].inputs:
            raise fail(f"node {node_name!r} inputs", f"none wired; {nodes[node_name].type} reads {sorted(cls.inputs)}")

    _assign_ports(nodes, asked_ports, settings.base_port, fail)
    return GraphSpec(name=name, source=source, settings=settings, nodes=nodes, hosts=hosts)


def _hosts(raw: Any, fail: Any) -> tuple[dict[str, dict[str, str]], str]:
    """``hosts:`` → ({name: {address, bind}}, the default host's name); ({}, "") without one."""
    if raw is None:
        return {}, ""
    if not isinstance(raw, dict) or not raw:
        raise fail("hosts", "expected a mapping of host name → {address: IP or DNS name}")
    hosts, defaults = {}, []
    for host, conf in raw.items():
        where = f"hosts.{host}"
        if not isinstance(host, str) or not NAME_RE.match(host):
            raise fail(where, "host names are lower_snake_case, ≤ 32 characters, starting with a letter")
        if not isinstance(conf, dict):
            raise fail(where, "expected {address: IP or DNS name}")
        extra = sorted(set(conf) - {"address", "bind", "default"})
        if extra:
            raise fail(where, f"unknown key(s) {extra} (allowed: address, bind, default)")
        address, bind = conf.get("address"), conf.get("bind")
        if not isinstance(address, str) or not (_ipv4(address) or HOSTNAME_RE.match(address)):
            raise fail(f"{where}.address", f"expected an IPv4 address or a DNS name, got {address!r}"
                                           + (" (IPv6 is not supported yet)" if isinstance(address, str) and ":" in address else ""))
        if bind is None and not _ipv4(address):
            raise fail(where, f"address {address!r} is a name, and ZeroMQ listens only on an address: add "
                              "bind: this host's IPv4 address (or 0.0.0.0 for all of its interfaces)")
        if bind is not None and not (isinstance(bind, str) and _ipv4(bind)):
            raise fail(f"{where}.bind", f"expected an IPv4 address (0.0.0.0: every interface), got {bind!r}")
        if not isinstance(conf.get("default", False), bool):
            raise fail(f"{where}.default", "expected true or false")
        if conf.get("default"):
            defaults.append(host)
        hosts[host] = {"address": address, "bind": bind or address}
    if len(defaults) > 1:
        raise fail("hosts", f"only one host can be the default, and {defaults} say they are")
    return hosts, defaults[0] if defaults else next(iter(hosts))


def _ipv4(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False


def _assign_ports(nodes: dict[str, NodeSpec], asked: dict[tuple[str, str], int], base_port: int, fail: Any) -> None:
    """A tcp port for every output that a node on another host reads: the one its ``port:`` asks
    for, else the next free one from ``base_port`` up, in node/port order. Derived from the config
    alone, so every host computes the same ports without talking to the others."""
    crossing = sorted({(c.from_node, c.from_port) for node in nodes.values() for c in node.inputs.values()
                       if nodes[c.from_node].host != node.host})
    for (name, port) in crossing:
        if nodes[name].endpoints[port]:
            reader = next(r for r, n in nodes.items() if n.host != nodes[name].host and
                          any((c.from_node, c.from_port) == (name, port) for c in n.inputs.values()))
            raise fail(f"node {name!r} outputs.{port}",
                       f"node {reader!r} on host {nodes[reader].host!r} reads it, so it goes over tcp on host "
                       f"{nodes[name].host!r}'s address: give a port ({{port: N}}) or none, not an endpoint")
    taken: dict[int, tuple[str, str]] = {}
    for key in crossing:
        if key in asked:
            number = asked[key]
            if number in taken:
                raise fail(f"node {key[0]!r} outputs.{key[1]}",
                           f"port {number} is also asked for by {'/'.join(taken[number])}")
            taken[number] = key
    number = base_port
    for key in crossing:
        if key not in asked:
            while number in taken:
                number += 1
            if number > 65535:
                raise fail("settings.base_port", f"{base_port} leaves no port ≤ 65535 for {'/'.join(key)}")
            taken[number] = key
    for number, (name, port) in taken.items():
        nodes[name].ports[port] = number


def _check_endpoint(endpoint: str, allow_remote: bool, fail: Any) -> None:
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("ipc", "tcp"):
        raise fail(f"endpoint {endpoint!r}: use ipc://path or tcp://host:port")
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise fail(f"endpoint {endpoint!r}: tcp needs an explicit port 1..65535")
        if not is_loopback(host) and not allow_remote:
            raise fail(f"endpoint {endpoint!r} is not loopback; set settings.allow_remote: true to expose it")


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1); anything else reaches a network."""
    host = host.strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
