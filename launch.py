#!/usr/bin/env python3
"""Earshot's one entry point.

    python launch.py                      run the demo graph (configs/demo.yaml)
    python launch.py run CONFIG           run a graph, each node in its own process
    python launch.py check CONFIG         validate a graph without starting anything
    python launch.py top                  live per-node table of a running graph
    python launch.py --list-nodes         the node types a graph may use, with their ports
    python launch.py make-data | gallery | make-demo | export | ...   (tools, see --help)

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
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = ROOT / "configs" / "demo.yaml"

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
        print(f"  {node.name:<16} {node.type:<16} {ins}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.graph import GraphError, load_graph
    from pipeline.supervisor import Supervisor

    try:
        graph = load_graph(args.config, registry(), overrides=args.set)
    except GraphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    supervisor = Supervisor(graph, on_event=lambda text: print(f"[earshot] {text}", flush=True))

    def stop(_sig: int, _frame: object) -> None:
        supervisor.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    supervisor.start()
    code = supervisor.run(timeout_s=args.duration)
    for line in supervisor.summary():
        print(f"[earshot] {line}")
    for path in supervisor.artifacts():
        print(f"[earshot] wrote {path}")
    if code == 1:
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.chdir(ROOT)
    if argv and argv[0] in TOOLS:
        module_name, prefix = TOOLS[argv[0]]
        module = importlib.import_module(module_name)
        return module.main(prefix + argv[1:])

    logging.basicConfig(level=os.environ.get("EARSHOT_LOG", "INFO"), format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    parser = argparse.ArgumentParser(prog="launch.py", description="Earshot: where a sound comes from, whose voice is whose.")
    parser.add_argument("--list-nodes", action="store_true", help="list node types with ports and params")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("run", help="run a graph")
    p.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG))
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                   help="override a node parameter (YAML value), e.g. --set camera.source=clip.mp4")
    p = sub.add_parser("check", help="validate a graph and exit")
    p.add_argument("config")
    p = sub.add_parser("top", help="live per-node table of a running graph")
    p.add_argument("--run-dir", default=None, help="run directory (default: the newest live one)")
    p.add_argument("--once", action="store_true", help="print one table and exit")
    p.add_argument("--interval", type=float, default=1.0)
    for tool in TOOLS:
        sub.add_parser(tool, help=f"see `launch.py {tool} --help`")

    if not argv or (argv[0] not in sub.choices and not argv[0].startswith("-")):
        argv = ["run", *argv]  # `python launch.py [CONFIG]`
    args = parser.parse_args(argv)
    if args.list_nodes:
        return cmd_list_nodes(args)
    handlers = {"run": cmd_run, "check": cmd_check, "top": cmd_top}
    if args.command not in handlers:
        parser.print_help()
        return 2
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
