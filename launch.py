#!/usr/bin/env python3
"""Earshot's one entry point.

    python launch.py                      run the demo graph (configs/demo.yaml)
    python launch.py [run] CONFIG         run a graph, each node in its own process
    python launch.py check CONFIG         validate a graph without starting anything
    python launch.py run CONFIG --host H  run host H's share of a graph across machines (hosts:)
    python launch.py keys DIR [CONFIG] [--host H]   a CURVE keypair per host of the graph (or H's), in DIR
    python launch.py top                  live per-node table of a running graph
    python launch.py --list-nodes         the node types a graph may use, with their ports
    python launch.py --list-messages      the message types on the wire, with their fields
    python launch.py make-data | gallery | make-demo | export | ...   (tools, see --help)

Running a graph takes these options, with or without CONFIG, before or after it:

    --input talk.mp4          camera and microphone both read this file (video and its sound);
                              a file without video or audio, or missing, stops here (exit 2)
    --input 0                 the webcam (an index, or /dev/video0) and the default microphone
    --out DIR                 every file the graph writes goes into DIR, under its own name
                              (e.g. DIR/demo.mp4 and DIR/voices/ for the renderer)
    --set NODE.PARAM=VALUE    any node parameter, VALUE in YAML (repeatable)
    --duration S              stop after S seconds
    --progress                a lossless run over files: a progress bar on stderr (frames of N, speed ×
                              real time) even when stderr is not a terminal (there it is shown anyway;
                              without one, a line every 10 s says the same)
    --record FILE.mcap        also write every message of every output to an MCAP file (Foxglove
                              opens it; configs/replay.yaml feeds it back into the renderer)
    --pace realtime|lossless  lossless (the default for --input FILE, and in configs/demo.yaml):
                              every frame and sample is processed, at the slowest node's speed;
                              realtime: files play at their own speed, as a live camera would
    --host NAME               a graph with hosts: start only the nodes of host NAME; edges to
                              other hosts are tcp (without --host every node runs here, over ipc)
    --keys DIR                the CURVE keys (`launch.py keys DIR CONFIG`) for tcp edges that
                              leave the machine (same as --set settings.keys_dir=DIR)

    python launch.py --input talk.mp4 --out results
    python launch.py configs/voices.yaml --input talk.mp4 --out results --duration 30
    python launch.py --set camera.width=320 --duration 5

--input and --out are not magic: they become the same NODE.PARAM=VALUE overrides as --set
(applied after it, so `--set renderer.mp4_path=talk.mp4 --out results` writes
results/talk.mp4), and the graph validates them all before any process starts. --input
needs the graph's sources to be the nodes named `camera` and `microphone`.

This is the only file that knows both the runtime (`pipeline`) and what exists
(`nodes`, `engines`): it hands the node registry to the runtime.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.graph import GraphSpec

ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = ROOT / "configs" / "demo.yaml"

#: what `pip install -e ".[lab]"` brings: a tool that misses one of these says so in one line
LAB_PACKAGES = ("torch", "torchmetrics")

#: subcommands served by other modules' main(argv): loaded only when asked for
TOOLS = {
    "make-data": ("lab.corpus.corpus_cli", ["make-data"]),
    "gallery": ("lab.corpus.corpus_cli", ["gallery"]),
    "make-demo": ("lab.corpus.corpus_cli", ["make-demo"]),
    "export": ("lab.onnx_export", []),
    "train-localizer": ("lab.localization.train_localizer", []),
    "eval-localizer": ("lab.localization.eval_localizer", []),
    "train-separator": ("lab.separation.train_separator", []),
    "eval-separator": ("lab.separation.eval_separator", []),
}


def registry() -> dict[str, str]:
    """Earshot's node types, plus any from EARSHOT_NODE_PLUGINS ("module:MAPPING,...").

    The plugin hook lets a user's own node package (or the test suite's nodes) run
    under the same launcher without editing this repository.
    """
    from nodes import NODE_TYPES

    types = dict(NODE_TYPES)
    for plugin in filter(None, os.environ.get("EARSHOT_NODE_PLUGINS", "").split(",")):
        module_name, _, attr = plugin.partition(":")
        types.update(getattr(importlib.import_module(module_name), attr or "NODE_TYPES"))
    return types


def cmd_check(args: argparse.Namespace) -> int:
    from pipeline.graph import GraphError, load_graph

    try:
        graph = load_graph(args.config, registry())
    except GraphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wires = sum(len(n.inputs) for n in graph.nodes.values())
    print(f"{args.config}: graph {graph.name!r} is valid: {len(graph.nodes)} nodes, {wires} connections")
    for node in graph.nodes.values():
        ins = ", ".join(f"{p}←{i.from_node}/{i.from_port} ({i.policy}{'' if i.policy == 'latest' else f' {i.size}'})"
                        for p, i in node.inputs.items())
        host = f"{node.host:<12} " if graph.hosts else ""
        print(f"  {node.name:<16} {node.type:<16} {host}{ins}")
    for node in graph.nodes.values():  # what each host listens on, so firewalls can be opened for it
        for port, number in node.ports.items():
            print(f"  tcp {graph.hosts[node.host]['address']}:{number}  {node.name}/{port} (host {node.host}) "
                  f"→ {', '.join(sorted({graph.nodes[r].host for r in graph.readers(node.name, port)} - {node.host}))}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """A CURVE keypair per host of the graph: DIR/<host>.key (public, for every other host) and
    DIR/<host>.key_secret (stays on its host). Existing keypairs are kept."""
    from pipeline import keys
    from pipeline.graph import GraphError, load_graph

    try:
        graph = load_graph(args.config, registry())
        hosts = [graph.on_host(args.host).host] if args.host else keys.hosts_of(graph)
    except GraphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for host, what in keys.generate(args.dir, hosts):
        if what == "public only":
            print(f"kept {Path(args.dir) / host}.key: {host}'s public key; its secret stays on {host}")
        else:
            print(f"{what} {Path(args.dir) / host}.key (public) and {host}.key_secret (secret, mode 600)")
    print(f"each host needs its own <host>.key_secret and every other host's <host>.key here; then "
          f"`python launch.py run {args.config} --host NAME --keys {args.dir}`")
    return 0


class UsageError(ValueError):
    """A command line that cannot run: the message says which option and why."""


def yaml_str(text: str) -> str:
    """``text`` as a YAML string, so a path like ``0`` or ``yes.mp4`` stays a string in an override."""
    return "'" + text.replace("'", "''") + "'"


def is_webcam(source: str) -> bool:
    return source.isdigit() or source.startswith("/dev/video")


def input_overrides(source: str, node_names: Collection[str]) -> list[str]:
    """``--input`` → overrides: a file (or URL) feeds both camera and microphone, so the sound
    is the video's own; a webcam goes with the default microphone."""
    missing = [name for name in ("camera", "microphone") if name not in node_names]
    if missing:
        raise UsageError(f"--input feeds the nodes named 'camera' and 'microphone', and this graph has no "
                         f"{' and no '.join(repr(m) for m in missing)} (its nodes: {', '.join(node_names)})")
    return [f"camera.source={yaml_str(source)}",
            f"microphone.source={yaml_str('default' if is_webcam(source) else source)}"]


def check_input_file(path: str) -> None:
    """Fail now, in one line, for an --input file that the camera or microphone could not read."""
    from media.av_io import MediaError, probe

    if not Path(path).is_file():
        raise UsageError(f"--input {path}: no such file")
    try:
        info = probe(path)
    except MediaError as exc:
        raise UsageError(f"--input: {exc}") from None
    for has, what, node in ((info.has_video, "video", "camera"), (info.has_audio, "audio", "microphone")):
        if not has:
            raise UsageError(f"--input {path}: no {what} stream, so the {node} node would have nothing to read")


def output_overrides(graph: GraphSpec, out_dir: str) -> list[str]:
    """``--out`` → overrides: each file or folder a sink node writes (a set param whose name
    ends in ``_path`` or ``_dir``) moves into ``out_dir``, keeping its own name."""
    from pipeline.graph import import_node_class

    overrides = []
    for node in graph.nodes.values():
        if node.endpoints:  # a node with outputs is no sink: its paths are things it reads
            continue
        params = import_node_class(node.impl).make_params(node.params)
        for name, value in vars(params).items():
            if name.endswith(("_path", "_dir")) and isinstance(value, str) and value:
                overrides.append(f"{node.name}.{name}={yaml_str(str(Path(out_dir) / Path(value).name))}")
    if not overrides:
        raise UsageError(f"--out {out_dir}: no node of graph {graph.name!r} writes a file "
                         "(no sink has a *_path or *_dir param set)")
    return overrides


def run_overrides(args: argparse.Namespace) -> list[str]:
    """All the node.param=value overrides of a run: --set, then what --input and --out mean."""
    from pipeline.graph import load_graph

    pace = [f"settings.pace={args.pace}"] if args.pace else []
    keys = [f"settings.keys_dir={yaml_str(args.keys)}"] if args.keys else []
    if not (args.input or args.out):
        return args.set + pace + keys
    graph = load_graph(args.config, registry(), overrides=args.set)
    overrides = list(args.set)
    if args.input:
        overrides += input_overrides(args.input, list(graph.nodes))
        if not is_webcam(args.input) and "://" not in args.input:
            check_input_file(args.input)
            # a file given to process: its user wants every frame and sample, however slow the machine
            pace = pace or ["settings.pace=lossless"]
    overrides += pace
    if args.out:
        overrides += output_overrides(graph, args.out)
    return overrides + keys


def cmd_run(args: argparse.Namespace) -> int:
    """Run a graph. Exit 0: it ran to its end (or to --duration) and no node fell on the way;
    1: a node crashed or hung (even if it came back: its outputs may have holes), or the graph
    gave up; 2: it cannot run as configured (a bad config, a file that does not decode, an
    unsafe run directory), said in one line, with nothing started or written; 130: stopped."""
    from pipeline.graph import GraphError, load_graph
    from pipeline.supervisor import CONFIG_ERROR, FAILED, CannotRun, Supervisor

    def say(text: str) -> None:
        print(f"[earshot] {text}", flush=True)

    try:
        graph = load_graph(args.config, registry(), overrides=run_overrides(args))
        if args.host:
            graph = graph.on_host(args.host)
        elif graph.hosts:
            say(f"graph {graph.name!r} names hosts {sorted(graph.hosts)}: running all its nodes on this machine "
                "(--host NAME runs one host's share)")
        supervisor = Supervisor(graph, on_event=say, record_to=args.record, show_progress=args.progress or None)
    except (GraphError, UsageError, CannotRun) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def stop(_sig: int, _frame: object) -> None:
        supervisor.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    supervisor.start()
    code = supervisor.run(timeout_s=args.duration)
    if code == CONFIG_ERROR and not supervisor.epoch_ns:  # refused before the start: nothing ran or was
        print(f"error: {supervisor.failure}", file=sys.stderr)  # written, the reason is all there is to say
        return code
    for line in supervisor.summary():
        print(f"[earshot] {line}")
    for path in supervisor.artifacts():
        print(f"[earshot] wrote {path}")
    if code in (FAILED, CONFIG_ERROR):
        print(f"[earshot] graph failed: {supervisor.failure}", file=sys.stderr)
    return code


def cmd_top(args: argparse.Namespace) -> int:
    from pipeline.top import watch

    return watch(args.run_dir, once=args.once, interval_s=args.interval)


def cmd_list_nodes(_args: argparse.Namespace) -> int:
    from pipeline.graph import import_node_class

    for type_name, impl in sorted(registry().items()):
        try:
            cls = import_node_class(impl)
        except Exception as exc:  # show the rest even if one node cannot load here
            print(f"{type_name:<16} ({impl}: cannot load: {exc})")
            continue
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{type_name:<16} {doc}")
        for port, spec in cls.inputs.items():
            print(f"    in  {port:<10} {spec.type.__name__:<15} {spec.policy}{'' if spec.policy == 'latest' else f' {spec.size}'}")
        for port, spec in cls.outputs.items():
            print(f"    out {port:<10} {spec.type.__name__}")
        for f in dataclasses.fields(cls.Params):
            default = f.default if f.default is not dataclasses.MISSING else "(required)"
            print(f"    param {f.name} = {default!r}")
    return 0


def parse_args(argv: list[str], invoked_from: Path) -> argparse.Namespace:
    """The command line → what to do. ``run`` is the default command, so ``launch.py CONFIG``,
    ``launch.py --input talk.mp4`` and ``launch.py --set camera.width=320`` all run a graph;
    --input and --out paths are taken relative to ``invoked_from``, the caller's directory."""
    parser = argparse.ArgumentParser(prog="launch.py", description="Earshot: where a sound comes from, whose voice is whose.",
                                     epilog="run: launch.py [run] [CONFIG] [--input FILE|0] [--out DIR] "
                                            "[--set NODE.PARAM=VALUE] [--duration S]; see `launch.py run --help`")
    parser.add_argument("--list-nodes", action="store_true", help="list node types with ports and params")
    parser.add_argument("--list-messages", action="store_true", help="list message types with their fields")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("run", help="run a graph")
    p.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG), help="graph YAML (default: configs/demo.yaml)")
    p.add_argument("--input", metavar="FILE|0", help="camera and microphone read FILE; 0 or /dev/videoN: "
                   "the webcam and the default microphone")
    p.add_argument("--out", metavar="DIR", help="write every output file of the graph into DIR")
    p.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                   help="override a node parameter (YAML value), e.g. --set camera.width=320")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--progress", action="store_true",
                   help="lossless runs over files: a progress bar on stderr even when it is not a terminal")
    p.add_argument("--record", metavar="FILE.mcap", default=None,
                   help="also record every topic of the graph to this MCAP file (replay it with configs/replay.yaml)")
    p.add_argument("--pace", choices=("realtime", "lossless"), default=None,
                   help="realtime: file sources play at their own speed and slow nodes drop; lossless: every "
                        "frame and sample is processed, as fast as the slowest node (default for --input FILE)")
    p.add_argument("--host", metavar="NAME", default=None,
                   help="start only the nodes of this host (a key of the graph's hosts:); edges to other hosts are tcp")
    p.add_argument("--keys", metavar="DIR", default=None,
                   help="CURVE keys for tcp edges that leave the machine (made by `launch.py keys DIR CONFIG`)")
    p = sub.add_parser("check", help="validate a graph and exit")
    p.add_argument("config")
    p = sub.add_parser("keys", help="make a CURVE keypair per host of a graph (for tcp edges across machines)")
    p.add_argument("dir", help="where the keys go (created 0700)")
    p.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG), help="graph YAML whose hosts: get keys")
    p.add_argument("--host", metavar="NAME", default=None,
                   help="only this host's keypair (made on that host, its secret never travels)")
    p = sub.add_parser("top", help="live per-node table of a running graph")
    p.add_argument("--run-dir", default=None, help="run directory (default: the newest live one)")
    p.add_argument("--once", action="store_true", help="print one table and exit")
    p.add_argument("--interval", type=float, default=1.0)
    for tool in TOOLS:
        sub.add_parser(tool, help=f"see `launch.py {tool} --help`")

    if not argv or argv[0] not in (*sub.choices, "-h", "--help", "--list-nodes", "--list-messages"):
        argv = ["run", *argv]
    args = parser.parse_args(argv)
    if args.command == "run":
        if args.input and not is_webcam(args.input) and "://" not in args.input:
            args.input = str(invoked_from / args.input)
        args.out = args.out and str(invoked_from / args.out)
        args.record = args.record and str(invoked_from / args.record)
        args.keys = args.keys and str(invoked_from / Path(args.keys).expanduser())
    if args.command == "keys":
        args.dir = str(invoked_from / Path(args.dir).expanduser())
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    invoked_from = Path.cwd()  # --input and --out are the caller's paths; configs are the repository's
    os.chdir(ROOT)
    if argv and argv[0] in TOOLS:
        module_name, prefix = TOOLS[argv[0]]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in LAB_PACKAGES:
                print(f"error: `launch.py {argv[0]}` needs {exc.name}, which comes with the lab extra: "
                      f"pip install torch==2.13.0 && pip install -e '.[lab]'", file=sys.stderr)
                return 2
            raise
        return module.main(prefix + argv[1:])

    logging.basicConfig(level=os.environ.get("EARSHOT_LOG", "INFO"), format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    args = parse_args(argv, invoked_from)
    if args.list_nodes:
        return cmd_list_nodes(args)
    if args.list_messages:
        from pipeline.messages import describe_messages

        print("\n".join(describe_messages()))
        return 0
    handlers = {"run": cmd_run, "check": cmd_check, "top": cmd_top, "keys": cmd_keys}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
