"""The transport's compiled read and wait (`pipeline/_fastzmq.pyx`) hand over exactly what the Python read does.

Where no C compiler was at install the transport reads in Python; the tests of the compiled path then skip, loudly,
unless ``EARSHOT_REQUIRE_COMPILED=1`` (CI sets it), where a missing build fails instead of passing as "skipped"."""

from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

from pipeline.messages import AudioChunk, EndOfStream, FaceTracks, Spectrogram, VideoFrame, decode, encode
from pipeline.transport import COMPILED_READ, Publisher, Subscriber, _read_python, waiter


def _compiled():
    if COMPILED_READ is None:
        if os.environ.get("EARSHOT_REQUIRE_COMPILED") == "1":
            pytest.fail("the compiled read (pipeline/_fastzmq) is not built, and EARSHOT_REQUIRE_COMPILED=1")
        pytest.skip("the compiled read is not built here (no C compiler at install): the transport reads in Python")
    return COMPILED_READ


def _messages() -> list:
    rng = np.random.default_rng(7)
    return [
        AudioChunk(samples=rng.uniform(-1, 1, 16).astype(np.float32), first_sample=160, source="mic"),
        VideoFrame(image=rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), frame_index=9, pts_s=0.36),
        Spectrogram(frames=(rng.normal(size=(5, 257)) + 1j * rng.normal(size=(5, 257))).astype(np.complex64)),
        FaceTracks(boxes=np.zeros((0, 4), np.float32), track_ids=np.zeros(0, np.int64),
                   lip_features=np.zeros((0, 16), np.float32), frame_width=640, frame_height=480),
        EndOfStream(reason="done"),
    ]


def _pair(ctx: zmq.Context, name: str):
    pub = Publisher(ctx, f"ipc:///tmp/earshot-test-{name}-{os.getpid()}", hwm=100)
    subs = [zmq.Context.instance().socket(zmq.SUB) for _ in range(2)]
    for s in subs:
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.connect(pub.endpoint)
    assert pub.wait_for_subscribers(2, 10)
    return pub, subs


def _read_all(read, address, count: int, deadline_s: float = 10.0) -> list:
    out, deadline = [], time.monotonic() + deadline_s
    while len(out) < count and time.monotonic() < deadline:
        frames = read(address)
        if frames is None:
            time.sleep(0.001)
        else:
            out.append(frames)
    return out


def _same(a, b) -> None:
    assert type(a) is type(b)
    for key, value in a.__dict__.items():
        other = b.__dict__[key]
        if isinstance(value, np.ndarray):
            assert value.dtype == other.dtype and value.shape == other.shape and np.array_equal(value, other), key
        else:
            assert value == other, key


def test_both_readers_hand_over_the_same_messages() -> None:
    read = _compiled()
    ctx = zmq.Context()
    pub, (fast_sock, slow_sock) = _pair(ctx, "same")
    sent = _messages()
    for msg in sent:
        pub.send(msg, source="node")
    fast = _read_all(read, fast_sock.underlying, len(sent))
    slow = _read_all(_read_python, slow_sock, len(sent))
    assert len(fast) == len(slow) == len(sent)
    assert read(fast_sock.underlying) is None, "an empty socket: None, not an error"
    for a, b, original in zip(fast, slow, sent):
        assert len(a) == len(b) == len(encode(original))
        _same(decode(a), decode(b))
        _same(decode(a), original)
    big = fast[1][2]
    assert not isinstance(big, bytes) and big.nbytes == 480 * 640 * 3, "a large part is not copied"
    for s in (fast_sock, slow_sock):
        s.close(linger=0)
    pub.close()
    ctx.term()


def test_a_large_part_stays_valid_after_the_socket_is_gone_and_is_read_only() -> None:
    read = _compiled()
    ctx = zmq.Context()
    pub, (sock, other) = _pair(ctx, "part")
    other.close(linger=0)
    image = np.random.default_rng(3).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    pub.send(VideoFrame(image=image))
    pub.send(AudioChunk(samples=np.zeros(16, np.float32)))
    frames, _ = _read_all(read, sock.underlying, 2)
    msg = decode(frames)
    del frames
    sock.close(linger=0)
    pub.close()
    gc.collect()
    assert np.array_equal(msg.image, image), "the message's bytes live as long as the array viewing them"
    assert not msg.image.flags.writeable and memoryview(msg.image.base).readonly
    with pytest.raises((BufferError, TypeError)):
        ctypes.c_char.from_buffer(msg.image.base)  # wants to write to it
    with pytest.raises(zmq.ZMQError):
        read(sock.underlying)  # closed: an error, as pyzmq gives, never a read of freed memory
    ctx.term()
    with pytest.raises(TypeError):
        type(msg.image.base)()  # a part holds a received message: one made from Python would hold none


def test_the_waiter_wakes_on_a_message_and_refuses_a_closed_socket() -> None:
    _compiled()
    ctx = zmq.Context()
    pub, (sock, other) = _pair(ctx, "wait")
    wait = waiter([other, sock])
    assert wait(0) == 0, "nothing sent: nothing ready"
    pub.send(AudioChunk(samples=np.zeros(16, np.float32)))
    assert wait(5000) >= 1
    sock.close(linger=0)
    with pytest.raises(zmq.ZMQError):
        wait(0)
    other.close(linger=0)
    pub.close()
    ctx.term()


def test_a_subscriber_reads_the_same_through_either_reader(monkeypatch) -> None:
    """The node's own path (drain, accept, pop) with the compiled read and with the Python one."""
    _compiled()
    import pipeline.transport as transport

    got = {}
    for name, compiled in (("fast", transport.COMPILED_READ), ("slow", None)):
        monkeypatch.setattr(transport, "COMPILED_READ", compiled)
        ctx = zmq.Context()
        pub = Publisher(ctx, f"ipc:///tmp/earshot-test-drain-{name}-{os.getpid()}", hwm=100)
        sub = Subscriber(ctx, pub.endpoint, policy="queue", size=16, name=name)
        assert pub.wait_for_subscribers(1, 10)
        for msg in _messages():
            pub.send(msg, source="node")
        deadline, out = time.monotonic() + 10, []
        while time.monotonic() < deadline:
            waiter([sub.socket])(50)
            sub.drain()
            while (m := sub.pop()) is not None:
                out.append(m)
            if sub.finished:
                break
        got[name] = out
        assert sub.ended and sub.stats.received == len(_messages()) and not sub.stats.bad, sub.stats
        sub.close()
        pub.close()
        ctx.term()
    assert len(got["fast"]) == len(got["slow"]) == len(_messages()) - 1  # the end of stream is not queued
    for a, b in zip(got["fast"], got["slow"]):
        _same(a, b)


def test_without_the_compiled_read_the_transport_reads_and_decodes_in_python() -> None:
    code = ("import pipeline.transport as t, pipeline.messages as m; "
            "assert t.COMPILED_READ is None and m._COMPILED_DECODE is None; "
            "import zmq; w = t.waiter([zmq.Context.instance().socket(zmq.SUB)]); print(w(0))")
    env = dict(os.environ, EARSHOT_PYTHON_READ="1")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "0"
