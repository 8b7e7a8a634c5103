"""The layering rules, checked from the import graph so a change cannot break them silently.

    pipeline  talks; knows nothing else of ours
    media     reads and writes media; knows nothing else of ours
    engines   thinks: loads and runs models; never imports lab/, nodes/, media/ or pipeline/
    nodes     import pipeline (to talk), engines (to think) and media, never lab/
    lab       makes and judges models (training, corpus, evaluation, export); imports anything

Every import counts, including those inside functions, because a lazy import still runs on the
live path the day that function is called. A deployment installs no torch and reads no lab code:
the last test imports every node and opens every shipped model with both blocked.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "media", "engines", "nodes", "lab")
ALLOWED = {
    "pipeline": {"pipeline"},
    "media": {"media"},
    "engines": {"engines"},
    "nodes": {"nodes", "pipeline", "engines", "media"},
    "lab": set(PACKAGES),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """Our modules that ``path`` imports anywhere in its body (``from a import b`` → a.b if b is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    return {name for name in found if name.split(".")[0] in PACKAGES}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) for name, path in known.items()}


def test_each_layer_imports_only_what_it_may(graph) -> None:
    broken = sorted(f"{src} imports {dst}" for src, targets in graph.items() for dst in targets
                    if dst.split(".")[0] not in ALLOWED[src.split(".")[0]])
    assert not broken, "\n".join(broken)


def test_there_are_no_import_cycles(graph) -> None:
    """Tarjan's strongly connected components: any component of more than one module is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_rules_see_a_violation(tmp_path) -> None:
    """The checker itself: a node importing the lab is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from lab.corpus.speech import TRAIN\n")
    assert imports_of(bad, modules()) == {"lab.corpus.speech"}


def test_the_live_path_runs_without_torch_or_the_lab() -> None:
    """Every node imports, and every shipped model opens on ONNX Runtime, with torch and lab/ unimportable."""
    script = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'lab', 'torchmetrics'):
            raise ImportError(f'blocked on the live path: {name}')
sys.meta_path.insert(0, Block())
from pipeline.graph import import_node_class
from nodes import NODE_TYPES
for impl in NODE_TYPES.values():
    import_node_class(impl)
from engines.loader import load
from engines.models import MODELS
for spec in MODELS.values():
    if spec.shipped:
        load(spec.name, backend='onnxruntime', device='cpu', threads=1).close()
print('live path ok', len(NODE_TYPES), 'nodes')
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "live path ok" in out.stdout
