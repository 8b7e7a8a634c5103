"""Property: no frame on any input makes a node's process die, and every refusal is counted.

Each node type of ``nodes.NODE_TYPES`` with inputs is opened in-process (``Harness``), and every
input gets, per example, one hostile message of *every* message type (its own type with zero,
one-pixel and huge-but-bounded dimensions, NaN, extreme scalars; the others well-formed, an
end-of-stream among them) plus one damaged on the wire. Each frame goes through what the node's
process does with it — ``Subscriber.accept``, ``pipeline.runner.deliver``, ``tick`` — and nothing
may escape; each frame must end up handled, an accepted end-of-stream, or counted as ``bad`` or
``errors``. The generator is ``benchmarks/fuzz_inputs.py`` (10,000 frames per input there),
driven here by hypothesis. ``EARSHOT_FUZZ_EXAMPLES`` raises the examples per input (default 25).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodes import NODE_TYPES
from pipeline.graph import import_node_class
from pipeline.harness import Harness
from pipeline.messages import encode, message_types

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fuzz_inputs", REPO / "benchmarks" / "fuzz_inputs.py")
fuzz = sys.modules.setdefault("fuzz_inputs", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(fuzz)

EXAMPLES = int(os.environ.get("EARSHOT_FUZZ_EXAMPLES", "25"))
PORTS = [(kind, port) for kind, impl in NODE_TYPES.items() for port in import_node_class(impl).inputs]


class DrawChooser(fuzz.Chooser):
    """The generator's decisions, drawn by hypothesis (so a failure shrinks to a small message)."""

    max_elems = 100_000  # hypothesis favours edges, the huge case among them: keep it quick here

    def __init__(self, data) -> None:
        self.data = data

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))

    def choice(self, options):
        return self.data.draw(st.sampled_from(list(options)))


@pytest.fixture(scope="module")
def opened(tmp_path_factory):
    """One opened node per type, shared by the examples (a live node sees a stream, not one message)."""
    harnesses: dict[str, Harness] = {}
    out = tmp_path_factory.mktemp("fuzz-out")

    def get(kind: str) -> Harness:
        if kind not in harnesses:
            params = {"mp4_path": str(out / "fuzz.mp4"), "wav_dir": str(out / "voices")} if kind == "renderer" else {}
            harnesses[kind] = Harness(import_node_class(NODE_TYPES[kind]), params, name=kind).__enter__()
        return harnesses[kind]

    logging.getLogger("pipeline.transport").setLevel(logging.CRITICAL)  # thousands of refusals, all counted
    yield get
    for h in harnesses.values():
        h.__exit__(None, None, None)


@pytest.mark.parametrize("kind, port", PORTS, ids=[f"{k}.{p}" for k, p in PORTS])
def test_no_frame_escapes_the_delivery_path(opened, kind: str, port: str) -> None:
    h = opened(kind)
    node_cls = type(h.node)
    sub = fuzz.input_port(node_cls, port, f"{kind}.{port}")
    report = fuzz.PortReport()
    types = list(message_types().values())

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def example(data) -> None:
        ch = DrawChooser(data)
        counted = report.handled + report.ended + sub.stats.bad + sub.stats.errors
        fed = report.fed
        own = node_cls.inputs[port].type
        for cls in [*types, own]:  # every type (the port's own twice: it gets furthest)
            fuzz.feed(h.node, port, sub, fuzz.frames_of(ch, cls, report.fed), report)
        fuzz.feed(h.node, port, sub, fuzz.frames_of(ch, own, report.fed, damage=True), report)  # wire damage
        for out in h.outputs.values():
            out.clear()
        assert not report.crashes, report.crashes[0]
        # every frame is accounted for exactly once
        assert report.handled + report.ended + sub.stats.bad + sub.stats.errors - counted == report.fed - fed

    example()
    assert report.fed >= 12 * EXAMPLES
    refusals = sub.stats.reasons
    assert sum(n for r, n in refusals.items() if r.startswith("wrong type")) > 0
    assert sum(n for r, n in refusals.items() if r.startswith("malformed")) > 0


# -- the findings of issue 15, one by one, through the same path ------------------------------

def _feed_one(h: Harness, port: str, msg, source: str = fuzz.UPSTREAM, raw: list[bytes] | None = None):
    sub = fuzz.input_port(type(h.node), port, f"{h.node.name}.{port}")
    report = fuzz.PortReport()
    msg.source = source
    fuzz.feed(h.node, port, sub, raw or fuzz._raw(encode(msg)), report)
    assert not report.crashes, report.crashes[0]
    return sub.stats, report


def test_issue_findings_are_refused_and_counted(opened) -> None:
    import numpy as np

    from pipeline.messages import AudioChunk, EndOfStream, FaceTracks, Heatmap, SeparatedAudio, VideoFrame

    # a 0×0 and a 1×1 frame (ZeroDivisionError in faces, cv2.error in the renderer): refused on the wire
    for side in (0, 1):
        image = VideoFrame(image=np.zeros((2, 2, 3), np.uint8))
        header = _raw_header(image, shape=[side, side, 3])
        for kind in ("faces", "renderer"):
            stats, _ = _feed_one(opened(kind), "video", image, raw=[b"VideoFrame", header, b"\0" * (3 * side * side)])
            assert stats.reasons == {"malformed: schema": 1}
    # first_sample 1e11 (373 GiB of zeros): refused by the node, nothing allocated
    stft, renderer = opened("stft"), opened("renderer")
    now = time.monotonic_ns()
    _feed_one(stft, "audio", AudioChunk(samples=np.zeros(160, np.float32), first_sample=0, capture_ns=now))
    stats, _ = _feed_one(stft, "audio", AudioChunk(samples=np.zeros(160, np.float32), first_sample=10**11,
                                                    capture_ns=now))
    assert stats.reasons == {"BadInput": 1}
    for port, msg in (("audio", AudioChunk(samples=np.zeros(160, np.float32), capture_ns=now)),
                      ("voices", SeparatedAudio(samples=np.zeros((1, 160), np.float32), track_ids=np.array([1]),
                                                capture_ns=now))):
        _feed_one(renderer, port, msg)
        msg.first_sample = 10**11
        stats, _ = _feed_one(renderer, port, msg)
        assert stats.reasons == {"BadInput": 1}, (port, stats.reasons)
    # an end-of-stream from anyone but the wired node does not end the input
    sub = fuzz.input_port(type(stft.node), "audio", "stft.audio")
    assert not sub.accept(fuzz._raw(encode(EndOfStream(source="intruder"))))
    assert not sub.ended and sub.stats.reasons == {"foreign sender": 1}
    # NaN audio: refused on decode
    nan = AudioChunk(samples=np.full(160, np.nan, np.float32), capture_ns=now)
    stats, _ = _feed_one(stft, "audio", nan)
    assert stats.reasons == {"non-finite": 1}
    # well-formed messages of another type (AttributeError in 7 of 18 classes): refused by the port
    for kind, port in PORTS:
        wrong = Heatmap(heatmap=np.zeros((2, 2), np.float32)) if kind != "fusion" else \
            FaceTracks(boxes=np.zeros((0, 4), np.float32), track_ids=np.zeros(0, np.int64),
                       lip_features=np.zeros((0, 16), np.float32))
        if isinstance(wrong, import_node_class(NODE_TYPES[kind]).inputs[port].type):
            continue
        stats, _ = _feed_one(opened(kind), port, wrong)
        assert stats.reasons == {f"wrong type: {wrong.type_name}": 1}, (kind, port)


def _raw_header(msg, shape: list[int]) -> bytes:
    import json

    header = json.loads(encode(msg)[1])
    header["buffers"][0]["shape"] = shape
    header["source"] = fuzz.UPSTREAM
    return json.dumps(header).encode()
