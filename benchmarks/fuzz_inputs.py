"""Hostile input for every node: fuzzed frames on each input of a graph, through the real delivery path.

    python benchmarks/fuzz_inputs.py [CONFIG] [--count 10000] [--seed 0] [--nodes stft,faces]

For each node of the graph (default ``configs/demo.yaml``) that has inputs, and each of its
inputs, ``--count`` frames go through what a node's process does with a frame from its socket:
``Subscriber.accept`` (decode, the port's type, the wired sender), ``pipeline.runner.deliver``
(``on_message``, failures counted) and ``tick``, on a node opened in-process (``Harness``; the
renderer writes to a temporary folder). No sockets: the fuzz is about what is *in* the frames.

The frames mix, per input:

* the port's own type with hostile content: zero, one-pixel and huge-but-bounded dimensions,
  NaN/inf and absurd magnitudes, every scalar at its edges (and past them), gaps in counters;
* every other message type (well-formed), end-of-stream included, from the wired sender and
  from another;
* wire damage: random bytes, deep JSON, 5,000-digit integers, shapes that lie about their
  buffers, dtypes off the list, missing and extra frames.

Prints, per input, the crashes (an exception out of accept / deliver / tick; must be 0) and the
refusals by reason; exit code 1 if anything crashed. ``tests/test_fuzz_nodes.py`` drives the
same generator with hypothesis.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline import messages as m  # noqa: E402
from pipeline.messages import EndOfStream, Message, encode  # noqa: E402
from pipeline.transport import Subscriber  # noqa: E402

UPSTREAM = "upstream"


class Chooser:
    """Where the fuzz gets its decisions: numpy here, hypothesis' ``data.draw`` in the tests."""

    #: the most elements built in one array: huge dims, not a huge run time (the byte ceilings
    #: themselves are fuzzed by shapes declared on the wire, see `_header_damage`)
    max_elems = 2_000_000

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi, endpoint=True))

    def choice(self, options: Sequence[Any]) -> Any:
        return options[self.integer(0, len(options) - 1)]

    def chance(self, p: float) -> bool:
        return self.integer(0, 999) < p * 1000


# -- messages of every type, with hostile content ----------------------------------------------

#: a typical shape per array field (what a real producer sends), before the fuzz bends it
TYPICAL = {
    "VideoFrame": {"image": (120, 160, 3)},
    "AudioChunk": {"samples": (160,)},
    "Spectrogram": {"frames": (4, 257)},
    "FeatureMap": {"features": (128, 14, 14)},
    "Embedding": {"vector": (128,)},
    "Heatmap": {"heatmap": (14, 14)},
    "FaceTracks": {"boxes": (2, 4), "track_ids": (2,), "lip_features": (2, 64)},
    "SeparatedAudio": {"samples": (2, 160), "track_ids": (2,)},
}
#: dims the fuzz likes: empty, degenerate, off by one, and large
EDGE_DIMS = (0, 1, 2, 3, 4, 7, 13, 16, 80, 128, 255, 256, 257, 513, 1025, 4096)
#: fields whose first dimension is shared (N faces, N voices): usually kept in agreement
SHARED_N = {"FaceTracks": ("boxes", "track_ids", "lip_features"), "SeparatedAudio": ("samples", "track_ids")}
FOREIGN = "intruder"


def _shape(ch: Chooser, type_name: str, name: str, ndims: tuple[int, ...], max_elems: int) -> list[int]:
    max_elems = min(max_elems, ch.max_elems)
    typical = TYPICAL.get(type_name, {}).get(name)
    ndim = len(typical) if typical and ch.chance(0.85) else ch.choice(ndims)
    dims = list(typical) if typical and len(typical) == ndim else [ch.choice(EDGE_DIMS) for _ in range(ndim)]
    for i in range(ndim):
        if ch.chance(0.25):
            dims[i] = ch.choice(EDGE_DIMS)
    if ch.chance(0.05):  # huge but within the type's byte budget
        i = ch.integer(0, ndim - 1)
        dims[i] = max(1, max_elems // max(1, int(np.prod([d or 1 for j, d in enumerate(dims) if j != i]))))
    return dims


def _bounded(dims: list[int], max_elems: int) -> list[int]:
    """Halve the largest dimension until the array fits: keep what the fuzz builds in memory bounded."""
    while int(np.prod([d or 1 for d in dims])) > max_elems:
        dims[int(np.argmax(dims))] //= 2
    return dims


def _fill(ch: Chooser, dtype: str, shape: list[int]) -> np.ndarray:
    rng = np.random.default_rng(ch.integer(0, 2**32 - 1))
    n = int(np.prod(shape))
    kind = ch.choice(["normal", "normal", "normal", "zeros", "unit", "huge", "tiny", "nan", "inf", "max"])
    if dtype in ("uint8", "int64"):
        if dtype == "uint8":
            return rng.integers(0, 256, shape, dtype=np.uint8)
        values = {"zeros": np.zeros(n), "huge": rng.integers(-2**62, 2**62, n)}.get(kind)
        return (values if values is not None else rng.integers(-3, 50, n)).astype(np.int64).reshape(shape)
    a = rng.standard_normal(n)
    if kind == "zeros":
        a[:] = 0
    elif kind == "unit":
        a = rng.uniform(-1, 1, n)
    elif kind == "huge":
        a *= 1e30
    elif kind == "tiny":
        a *= 1e-42
    elif kind in ("nan", "inf") and n:
        a[rng.integers(0, n, max(1, n // 100))] = np.nan if kind == "nan" else rng.choice([np.inf, -np.inf])
    elif kind == "max":
        a[:] = np.finfo(np.float16 if dtype == "float16" else np.float32).max
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype.startswith("complex"):
            return (a + 1j * a[::-1]).astype(dtype).reshape(shape)
        return a.astype(dtype).reshape(shape)


def _scalar(ch: Chooser, cls: type[Message], name: str, hint: Any, default: Any) -> Any:
    bounds = next(f.metadata.get("bounds") for f in m.dataclasses.fields(cls) if f.name == name)
    if ch.chance(0.6):
        return default
    if hint is int:
        lo, hi = (int(bounds.lo), int(bounds.hi)) if bounds else (m.INT64_MIN, m.INT64_MAX)
        inside = [max(lo, 0), min(hi, 1), lo, hi, ch.integer(lo, hi), min(hi, max(lo, default + ch.integer(-100, 100))),
                  min(hi, max(lo, 10**11)), min(hi, max(lo, default * 1000))]
        outside = [hi + 1, lo - 1, 2**63 - 1, -2**63, 2**64]
        return ch.choice(inside if ch.chance(0.75) else outside)
    if hint is float:
        return ch.choice([0.0, -1.0, 1e-300, 1e300, float("nan"), float("inf"), -float("inf"), default * 1000,
                          float(ch.integer(-10**6, 10**6)), default + 0.5])
    if hint is str:
        options = [*(bounds.choices if bounds and bounds.choices else ()), "", "x" * 2000, "\u202e\x00é", default]
        return ch.choice(options)
    if hint is dict:
        return ch.choice([{}, {"inputs": {"a": {"latency_ms": {"p50": 1.0}}}}, {"compute_ms": "not a dict"},
                          {"counters": {"errors": 10**18}}])
    return default


def hostile_message(ch: Chooser, cls: type[Message], seq: int) -> Message:
    """A message of type ``cls`` that encodes (arrays of allowed dtypes and ranks), with anything else off."""
    kwargs: dict[str, Any] = {}
    for f in m.dataclasses.fields(cls):
        if f.name in ("capture_ns", "seq", "source"):
            continue
        hint = cls.scalar_fields().get(f.name)
        if hint is not None:
            default = f.default if f.default is not m.dataclasses.MISSING else f.default_factory()
            kwargs[f.name] = _scalar(ch, cls, f.name, hint, default)
    shapes: dict[str, list[int]] = {}
    for name, spec in cls.array_fields().items():
        dtype = spec.dtypes[0] if ch.chance(0.8) else ch.choice(spec.dtypes)
        shapes[name] = _shape(ch, cls.type_name, name, spec.ndims, cls.max_bytes // m._ITEMSIZE[dtype])
        kwargs[name] = dtype
    shared = SHARED_N.get(cls.type_name)
    if shared and ch.chance(0.9):
        n = shapes[shared[0]][0]
        for name in shared:
            shapes[name][0] = n
    if cls.type_name == "FaceTracks" and ch.chance(0.9):
        shapes["boxes"][1] = 4
    if cls.type_name == "VideoFrame" and ch.chance(0.95):
        shapes["image"][2] = 3
    if cls.type_name == "Spectrogram" and ch.chance(0.4):  # the other kind a real producer sends
        kwargs["frames"], shapes["frames"][1], kwargs["kind"] = "float32", 80, "logmel"
    for name in cls.array_fields():
        limit = min(ch.max_elems, cls.max_bytes // m._ITEMSIZE[kwargs[name]])
        kwargs[name] = _fill(ch, kwargs[name], _bounded(shapes[name], limit))
    now = time.monotonic_ns()
    capture_ns = now if ch.chance(0.7) else ch.choice([0, 1, now - 10**12, 2**63 - 1, now + 10**15])
    source = UPSTREAM if ch.chance(0.9) else FOREIGN
    return cls(capture_ns=capture_ns, seq=seq, source=source, **kwargs)


# -- frames: the wire, damaged or not ------------------------------------------------------

def _raw(frames: list[Any]) -> list[bytes]:
    return [*frames[:2], *(memoryview(f).cast("B").tobytes() if f.size else b"" for f in frames[2:])]


def _header_damage(ch: Chooser, header: dict) -> dict | bytes:
    damage = ch.integer(0, 13)
    if damage == 0:
        return b"[" * 30000 + b"]" * 30000  # RecursionError in a naive parser
    if damage == 1:
        return json.dumps({**header, "seq": 0}).replace('"seq": 0', '"seq": ' + "9" * 5000).encode()
    if damage == 2:
        return json.dumps({**header, "fields": {k: [[[[v]]]] for k, v in header["fields"].items()}}).encode()
    if damage == 3:
        header["buffers"] = [{**b, "shape": [0, 2**40, 3][: len(b["shape"])] or [0]} for b in header["buffers"]]
    elif damage == 4:
        header["buffers"] = [{**b, "shape": [d * 2 + 1 for d in b["shape"]]} for b in header["buffers"]]
    elif damage == 5:
        header["buffers"] = [{**b, "dtype": ch.choice(["object", "<f4", "float128", "V8", None, 7])}
                             for b in header["buffers"]]
    elif damage == 6:
        header["buffers"] = [{**b, "shape": ch.choice([[-1], "12", [1.5], [True], [2**70], None, [1] * 40])}
                             for b in header["buffers"]]
    elif damage == 7:
        header["fields"] = {k: ch.choice([None, [], {}, True, "1", 1e308]) for k in header["fields"]}
    elif damage == 8:
        header[ch.choice(["seq", "capture_ns", "source", "v", "type", "fields", "buffers"])] = ch.choice(
            [None, -1, 2**64, "x", [], {}, 1.5])
    elif damage == 9:
        header["type"] = ch.choice(list(m.message_types()))
    elif damage == 10:
        return json.dumps(header).encode()[: ch.integer(0, 60)]
    elif damage == 11:
        return json.dumps(header).replace("0", "NaN", 1).encode()
    elif damage == 12:
        return b"\xff\xfe" + json.dumps(header).encode("utf-16")
    else:
        header["fields"] = {**header["fields"], "extra": 1}
    return header


def damaged(ch: Chooser, frames: list[bytes]) -> list[bytes]:
    """One of the ways a frame can be wrong on the wire."""
    rng = np.random.default_rng(ch.integer(0, 2**32 - 1))
    damage = ch.integer(0, 7)
    if damage == 0:
        return [rng.bytes(ch.integer(0, 64)) for _ in range(ch.integer(0, 4))]
    if damage == 1:  # flip bytes in the header
        header = bytearray(frames[1])
        for i in rng.integers(0, len(header), ch.integer(1, 8)):
            header[i] = rng.integers(0, 256)
        return [frames[0], bytes(header), *frames[2:]]
    if damage == 2 and len(frames) > 2:  # a buffer shorter or longer than its shape
        i = ch.integer(2, len(frames) - 1)
        cut = frames[i][: max(0, len(frames[i]) - ch.integer(1, 9))] if ch.chance(0.5) else frames[i] + b"\0" * 3
        return [*frames[:i], cut, *frames[i + 1:]]
    if damage == 3:
        return frames[: ch.integer(0, len(frames) - 1)] if ch.chance(0.5) else [*frames, b"extra"]
    if damage == 4:
        return [ch.choice([b"", b"Pickle", b"VideoFrame", frames[0] * 100]), *frames[1:]]
    header = json.loads(frames[1])
    new = _header_damage(ch, header)
    return [frames[0], new if isinstance(new, bytes) else json.dumps(new).encode(), *frames[2:]]


def frames_of(ch: Chooser, cls: type[Message], seq: int, damage: bool = False) -> list[bytes]:
    """A hostile message of type ``cls`` as it would arrive: well-formed on the wire unless the fuzz
    bent an invariant (H×W×4, N that disagree) or ``damage`` asks for wire damage."""
    msg = hostile_message(ch, cls, seq)
    try:
        frames = _raw(encode(msg))
    except m.MessageError:  # encode refuses a bent invariant: write the frames by hand, as a forger would
        damage = True
        body = {"v": 1, "type": cls.type_name, "seq": seq, "source": msg.source, "capture_ns": msg.capture_ns,
                "fields": {k: getattr(msg, k) for k in cls.scalar_fields()},
                "buffers": [{"name": k, "dtype": getattr(msg, k).dtype.name, "shape": list(getattr(msg, k).shape)}
                            for k in cls.array_fields()]}
        frames = [cls.type_name.encode(), json.dumps(body).encode(),
                  *(getattr(msg, k).tobytes() for k in cls.array_fields())]
    return damaged(ch, frames) if damage else frames


def fuzz_frames(ch: Chooser, port_type: type[Message], seq: int) -> list[bytes]:
    """One fuzzed multipart frame for an input that takes ``port_type``: mostly its own type, often
    another (an end-of-stream among them), some damaged on the wire."""
    what = ch.choice(["own"] * 9 + ["other"] * 5 + ["eos"] + ["wire"] * 4)
    cls = port_type if what in ("own", "wire") else EndOfStream if what == "eos" else \
        ch.choice(list(m.message_types().values()))
    return frames_of(ch, cls, seq, damage=what == "wire")


# -- through the runtime's delivery path ------------------------------------------------------

@dataclass
class PortReport:
    fed: int = 0
    handled: int = 0  # on_message returned normally
    ended: int = 0  # end-of-stream accepted from the wired sender
    crashes: list[str] = field(default_factory=list)
    slowest_ms: float = 0.0


def feed(node: Any, port: str, sub: Subscriber, frames: list[bytes], report: PortReport) -> None:
    """What the runner does with one frame from the socket: accept, deliver, tick. Any exception
    out of here is a crash: the node's process would die of it."""
    from pipeline.runner import deliver

    report.fed += 1
    t0 = time.perf_counter()
    try:
        was_ended = sub.ended
        if sub.accept(frames):
            if sub.ended and not was_ended:
                report.ended += 1
                sub.ended = False  # keep fuzzing: a real node would finish here
            while (msg := sub.pop()) is not None:
                report.handled += deliver(node, port, msg, sub)
        node.tick()
    except Exception:  # noqa: BLE001 - the point: count what escaped
        report.crashes.append(traceback.format_exc(limit=6))
    report.slowest_ms = max(report.slowest_ms, (time.perf_counter() - t0) * 1e3)


def input_port(node_cls: Any, port: str, name: str) -> Subscriber:
    spec = node_cls.inputs[port]
    return Subscriber(None, "", policy="queue", size=spec.size, name=name, accepts=spec.type, upstream=UPSTREAM)


def fuzz_node(node_cls: Any, params: dict, ports: list[str], count: int, chooser: Chooser,
              on_progress: Callable[[str, int], None] | None = None) -> dict[str, tuple[PortReport, Subscriber]]:
    """``count`` fuzzed frames on each of ``ports`` of one node opened in-process."""
    from pipeline.harness import Harness

    with Harness(node_cls, params, name=node_cls.__name__.lower()) as h:
        results = {port: (PortReport(), input_port(node_cls, port, f"{h.node.name}.{port}")) for port in ports}
        for i in range(count):
            for port, (report, sub) in results.items():  # interleaved: what one input left behind meets the others
                frames = fuzz_frames(chooser, node_cls.inputs[port].type, i)
                feed(h.node, port, sub, frames, report)
                for out in h.outputs.values():
                    out.clear()  # the harness keeps every output: do not hoard them
            if on_progress and i % 200 == 0:
                on_progress(ports[0], i)
    return {port: (report, sub) for port, (report, sub) in results.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument("--count", type=int, default=10_000, help="frames per input")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nodes", default="", help="comma-separated node names (default: all with inputs)")
    args = parser.parse_args()

    import logging

    from nodes import NODE_TYPES
    from pipeline.graph import import_node_class, load_graph

    logging.basicConfig(level=logging.CRITICAL)  # the refusals are counted below; their log lines are not the point
    graph = load_graph(args.config, NODE_TYPES)
    wanted = set(filter(None, args.nodes.split(",")))
    out_dir = Path(tempfile.mkdtemp(prefix="earshot-fuzz-"))
    print(f"{args.count} fuzzed frames per input, graph {Path(args.config).name}, seed {args.seed}")
    total_crashes, t_start = 0, time.perf_counter()
    for name, spec in graph.nodes.items():
        if not spec.inputs or (wanted and name not in wanted):
            continue
        params = dict(spec.params)
        for key in ("mp4_path", "wav_dir"):  # the renderer: write into a scratch folder
            if params.get(key):
                params[key] = str(out_dir / f"{name}-{Path(params[key]).name}")
        t0 = time.perf_counter()
        results = fuzz_node(import_node_class(spec.impl), params, list(spec.inputs), args.count,
                            Chooser(np.random.default_rng([args.seed, len(name)])))
        for port, (report, sub) in results.items():
            s = sub.stats
            total_crashes += len(report.crashes)
            reasons = ", ".join(f"{n} {r}" for r, n in sorted(s.reasons.items(), key=lambda item: -item[1]))
            print(f"{name}.{port:<10} fed {report.fed:>6}  crashes {len(report.crashes)}  handled {report.handled:>5}  "
                  f"ended {report.ended:>4}  bad {s.bad:>5}  errors {s.errors:>5}  "
                  f"slowest {report.slowest_ms:7.1f} ms")
            print(f"    {reasons}")
            for crash in report.crashes[:2]:
                print("    CRASH " + crash.replace("\n", "\n    "))
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"    ({time.perf_counter() - t0:.0f} s; peak RSS of this process so far {peak_mb:.0f} MB)")
    print(f"crashes: {total_crashes} in {time.perf_counter() - t_start:.0f} s")
    return 1 if total_crashes else 0


if __name__ == "__main__":
    sys.exit(main())
