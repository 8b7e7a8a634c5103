"""Helpers to write a graph YAML into a temp dir and run it under a real supervisor."""

from __future__ import annotations

import threading
from pathlib import Path

import yaml

from pipeline.graph import GraphSpec, load_graph
from pipeline.supervisor import Supervisor
from tests.runtime_nodes import REGISTRY


def write_graph(tmp_path: Path, nodes: dict, **top) -> Path:
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump({"name": "test", **top, "nodes": nodes}))
    return path


def load(path: Path) -> GraphSpec:
    return load_graph(path, REGISTRY)


class Background:
    """A supervisor running in a thread, so the test can poke at its processes."""

    def __init__(self, graph: GraphSpec, timeout_s: float = 60) -> None:
        self.events: list[str] = []
        self.supervisor = Supervisor(graph, on_event=self.events.append)
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, args=(timeout_s,), daemon=True)

    def _run(self, timeout_s: float) -> None:
        self.code = self.supervisor.run(timeout_s=timeout_s)

    def __enter__(self) -> Supervisor:
        self.supervisor.start()
        self.thread.start()
        return self.supervisor

    def __exit__(self, *exc) -> None:
        self.supervisor.stop()
        self.thread.join(30)
