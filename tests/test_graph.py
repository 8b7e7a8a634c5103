"""Graph validation: each mistake a config can hold gives one error naming file, node, field."""

from __future__ import annotations

import pytest
import yaml

from pipeline.graph import GraphError, load_graph
from tests.runtime_nodes import REGISTRY

GOOD = {
    "name": "g",
    "nodes": {
        "src": {"type": "ticker", "params": {"rate_hz": 30}},
        "rec": {"type": "recorder", "params": {"path": "/tmp/x"}, "inputs": {"frames": "src/frames"}},
    },
}


def check(tmp_path, data) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return load_graph(path, REGISTRY)


def variant(node: str, **changes) -> dict:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    data["nodes"][node].update(changes)
    return data


def test_a_good_graph_resolves_policies_and_subscribers(tmp_path) -> None:
    graph = check(tmp_path, GOOD)
    rec = graph.nodes["rec"].inputs["frames"]
    assert (rec.from_node, rec.from_port, rec.policy) == ("src", "frames", "latest")
    assert graph.nodes["src"].subscribers == {"frames": 1}
    graph.resolve_endpoints(tmp_path)
    assert graph.nodes["src"].endpoints["frames"] == f"ipc://{tmp_path}/src.frames"


@pytest.mark.parametrize("data, message", [
    (variant("src", type="camra"), "node 'src' type: unknown node type 'camra'"),
    (variant("rec", inputs={"frames": "nowhere/frames"}), "node 'rec' inputs.frames: unknown source node 'nowhere'"),
    (variant("rec", inputs={"frames": "src/pixels"}), "node 'src' has no output 'pixels'"),
    (variant("rec", inputs={"video": "src/frames"}), "node 'rec' inputs.video: recorder has no input 'video'"),
    (variant("rec", inputs={"audio": "src/frames"}), "type mismatch: src/frames sends VideoFrame, audio accepts AudioChunk"),
    (variant("rec", inputs={"frames": {"from": "src/frames", "policy": "newest"}}), "policy 'newest' is not one of"),
    (variant("rec", inputs={"frames": {"from": "src/frames", "size": 0}}), "size must be an integer"),
    (variant("rec", inputs={}), "node 'rec' inputs: none wired"),
    (variant("src", params={"rate_hz": "fast"}), "node 'src' params: param 'rate_hz': expected float, got str"),
    (variant("src", params={"colour": 1}), "node 'src' params: unknown param(s) ['colour']"),
    (variant("src", outputs={"frames": {"endpoint": "tcp://10.0.0.5:5555"}}), "is not loopback"),
    (variant("src", outputs={"frames": {"endpoint": "udp://x"}}), "use ipc://path or tcp://host:port"),
    (variant("src", color=1), "node 'src': unknown key(s) ['color']"),
    ({**GOOD, "settings": {"max_restarts": -1}}, "settings: max_restarts must be ≥ 0"),
    ({**GOOD, "nodez": {}}, "top level: unknown key(s) ['nodez']"),
    ({"name": "g", "nodes": {}}, "nodes: expected a non-empty mapping"),
    ({"name": "g", "nodes": {"Bad-Name": {"type": "ticker"}}}, "names are lower_snake_case"),
    ("nodes:\n  src: {type: ticker}\n  src: {type: ticker}\n", "duplicate key 'src'"),
    ("nodes: [unclosed", "not valid YAML"),
    ("!!python/object/apply:os.system ['true']", "not valid YAML"),  # never construct objects
])
def test_bad_graphs_are_rejected_with_a_precise_reason(tmp_path, data, message) -> None:
    with pytest.raises(GraphError) as err:
        check(tmp_path, data)
    assert message in str(err.value)
    assert str(tmp_path / "g.yaml") in str(err.value)


def test_missing_file_is_a_graph_error(tmp_path) -> None:
    with pytest.raises(GraphError, match="cannot read graph file"):
        load_graph(tmp_path / "nope.yaml", REGISTRY)


def test_a_broken_node_module_is_not_reported_as_a_typo(tmp_path) -> None:
    with pytest.raises(GraphError, match="cannot load no.such.module:Node"):
        path = tmp_path / "g.yaml"
        path.write_text(yaml.safe_dump({"nodes": {"x": {"type": "broken"}}}))
        load_graph(path, {"broken": "no.such.module:Node"})


def test_overrides_change_params_and_are_validated(tmp_path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    graph = load_graph(path, REGISTRY, overrides=["src.rate_hz=12.5", "rec.path=/tmp/y"])
    assert graph.nodes["src"].params["rate_hz"] == 12.5 and graph.nodes["rec"].params["path"] == "/tmp/y"
    with pytest.raises(GraphError, match="param 'rate_hz': expected float"):
        load_graph(path, REGISTRY, overrides=["src.rate_hz=fast"])
    with pytest.raises(GraphError, match="no node 'nope'"):
        load_graph(path, REGISTRY, overrides=["nope.x=1"])
    with pytest.raises(GraphError, match="expected node.param=value"):
        load_graph(path, REGISTRY, overrides=["src=1"])
    # YAML reads a bare 0 as a number; a text param (a camera index, a path) takes its text
    graph = load_graph(path, REGISTRY, overrides=["rec.path=0"])
    assert graph.nodes["rec"].params["path"] == "0"
