"""A graph across machines: the same YAML, each host starting its own share (`launch.py run --host`).

What needs no network is checked anywhere: ports derived from the config alone, an unknown host and
a remote endpoint without keys refused before anything starts (exit 2, one line). The rest runs on
two real network stacks: two network namespaces joined by a veth pair stand in for a camera box and
a GPU box (root and `ip` needed; CI runs as root). A ticker on one and a recorder on the other:
frames cross over CURVE-encrypted tcp, a client with an unknown key (or none) gets nothing and the
publisher logs the refusal, no key is ever logged, and killing either host and starting it again
brings the frames back.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import yaml
import zmq.auth

from pipeline.graph import DEFAULT_BASE_PORT, GraphError, load_graph
from tests.runtime_nodes import REGISTRY, read_records

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "EARSHOT_NODE_PLUGINS": "tests.runtime_nodes:REGISTRY", "PYTHONUNBUFFERED": "1"}


def split_graph(tmp_path: Path, camera_ip: str, gpu_ip: str, record_to: Path, **settings) -> Path:
    """A ticker on camera_box, a recorder of its frames on gpu_box (the default host)."""
    path = tmp_path / "split.yaml"
    path.write_text(yaml.safe_dump({
        "name": "split",
        "hosts": {"camera_box": {"address": camera_ip}, "gpu_box": {"address": gpu_ip, "default": True}},
        "settings": {"pace": "realtime", **settings},
        "nodes": {
            "src": {"type": "ticker", "host": "camera_box", "params": {"rate_hz": 100, "count": 0}},
            "sink": {"type": "recorder", "params": {"path": str(record_to)}, "inputs": {"frames": "src/frames"}},
        },
    }, sort_keys=False))
    return path


def launch(*args: str, run_base: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**ENV, "EARSHOT_RUN_BASE": str(run_base)})


# -- no network needed -------------------------------------------------------------------------

def test_ports_come_from_the_config_alone(tmp_path: Path) -> None:
    """Every host derives the same ports: base_port up, in node/port order, skipping asked-for ones."""
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({
        "hosts": {"a": {"address": "10.0.0.1"}, "b": {"address": "10.0.0.2"}},
        "nodes": {
            "video": {"type": "ticker", "host": "a"},
            "audio": {"type": "audio_ticker", "host": "a", "outputs": {"audio": {"port": DEFAULT_BASE_PORT}}},
            "relay": {"type": "relay", "host": "a", "inputs": {"frames": "video/frames"}},  # same host: ipc
            "sink": {"type": "recorder", "host": "b", "inputs": {"frames": "relay/frames", "audio": "audio/audio"}},
            "late": {"type": "recorder", "host": "b", "inputs": {"frames": "video/frames"}},
        }}))
    graph = load_graph(path, REGISTRY)
    assert graph.nodes["audio"].ports == {"audio": DEFAULT_BASE_PORT}  # asked for
    # the others in node/port order (relay/frames, video/frames), skipping the port audio took
    assert graph.nodes["relay"].ports == {"frames": DEFAULT_BASE_PORT + 1}
    assert graph.nodes["video"].ports == {"frames": DEFAULT_BASE_PORT + 2}
    assert graph.nodes["sink"].ports == {} and graph.nodes["sink"].host == "b"
    assert load_graph(path, REGISTRY).to_dict() == graph.to_dict()  # nothing random: the other host agrees

    on_b = graph.on_host("b")
    on_b.resolve_endpoints(tmp_path)
    assert on_b.nodes["video"].endpoints["frames"] == f"tcp://10.0.0.1:{DEFAULT_BASE_PORT + 2}"  # connect to a
    assert on_b.sources == []  # a's sources are not in b's media clock
    on_a = graph.on_host("a")
    on_a.resolve_endpoints(tmp_path)
    assert on_a.nodes["video"].endpoints["frames"] == f"tcp://10.0.0.1:{DEFAULT_BASE_PORT + 2}"  # bind
    everything_here = load_graph(path, REGISTRY)  # no --host: one machine, every edge ipc
    everything_here.resolve_endpoints(tmp_path)
    assert everything_here.nodes["video"].endpoints["frames"].startswith("ipc://")


@pytest.mark.parametrize("change, message", [
    (lambda g: g["nodes"]["sink"].update(host="gpubox"), "node 'sink' host: unknown host 'gpubox'"),
    (lambda g: g["hosts"].update(a={"address": "fe80::1"}), "hosts.a.address: expected an IPv4 address or a DNS name"),
    (lambda g: g["hosts"].update(a={"address": "cam.local"}), "add bind: this host's IPv4 address"),
    (lambda g: g["nodes"]["src"].update(outputs={"frames": {"endpoint": "tcp://10.0.0.1:5000"}}),
     "node 'sink' on host 'b' reads it, so it goes over tcp"),
    (lambda g: g["nodes"]["src"].update(outputs={"frames": {"port": 80}}), "port must be an integer in 1024..65535"),
    (lambda g: g.pop("hosts"), "node 'src' host: 'a': the graph has no hosts: table"),
])
def test_host_mistakes_are_one_line(tmp_path: Path, change: Callable, message: str) -> None:
    data = {"hosts": {"a": {"address": "10.0.0.1"}, "b": {"address": "10.0.0.2"}},
            "settings": {"allow_remote": True},
            "nodes": {"src": {"type": "ticker", "host": "a"},
                      "sink": {"type": "recorder", "host": "b", "inputs": {"frames": "src/frames"}}}}
    change(data)
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(GraphError, match="^" + str(path).replace(".", r"\.")) as err:
        load_graph(path, REGISTRY)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_an_unknown_host_stops_the_run_in_one_line(tmp_path: Path) -> None:
    path = split_graph(tmp_path, "10.0.0.1", "10.0.0.2", tmp_path / "rec.jsonl")
    for args in (["run", str(path), "--host", "gpubox"], ["keys", str(tmp_path / "k"), str(path), "--host", "x"]):
        proc = launch(*args, run_base=tmp_path / "run")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"error: {path}: --host {args[-1]}: unknown host; the graph's hosts are ['camera_box', 'gpu_box']"]
    assert not (tmp_path / "run").exists() and not (tmp_path / "k").exists()  # nothing started or made


def test_a_remote_endpoint_without_keys_does_not_start(tmp_path: Path) -> None:
    """Nothing leaves the machine in clear: no keys, no run (exit 2, one line, no process)."""
    path = split_graph(tmp_path, "10.0.0.1", "10.0.0.2", tmp_path / "rec.jsonl")
    for host in ("camera_box", "gpu_box"):
        proc = launch("run", str(path), "--host", host, run_base=tmp_path / "run")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "tcp://10.0.0.1:27100 leaves this machine and the graph has no keys" in lines[0], lines
        assert "--keys DIR" in lines[0] and not proc.stdout
    # keys for camera_box only: gpu_box lacks its own secret and says which file
    assert launch("keys", str(tmp_path / "keys"), str(path), "--host", "camera_box", run_base=tmp_path).returncode == 0
    proc = launch("run", str(path), "--host", "gpu_box", "--keys", str(tmp_path / "keys"), run_base=tmp_path / "run")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: keys: {tmp_path / 'keys' / 'gpu_box.key_secret'} is missing; make it with "
        f"`python launch.py keys {tmp_path / 'keys'} CONFIG` on that host"]
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
    # without --host the same file runs on one machine, every edge ipc: no keys needed
    proc = launch("check", str(path), run_base=tmp_path / "run")
    assert proc.returncode == 0 and "tcp 10.0.0.1:27100  src/frames (host camera_box) → gpu_box" in proc.stdout


# -- two hosts: two network namespaces joined by a veth pair -----------------------------------

def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@pytest.fixture
def two_hosts():
    """Two network namespaces, camera (10.N.M.1) and gpu (10.N.M.2), joined by a veth pair; names
    unique per run, and removed afterwards however the test ended."""
    if os.geteuid() != 0:
        pytest.skip("needs root: it makes two network namespaces (`ip netns`) to stand in for two machines")
    if shutil.which("ip") is None:
        pytest.skip("needs the `ip` command (iproute2) to make two network namespaces")
    tag = secrets.token_hex(3)
    ns_a, ns_b, veth_a, veth_b = f"es-{tag}-camera", f"es-{tag}-gpu", f"esa{tag}", f"esb{tag}"
    net = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"
    try:
        ip("netns", "add", ns_a)
        ip("netns", "add", ns_b)
        ip("link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
        ip("link", "set", veth_a, "netns", ns_a)
        ip("link", "set", veth_b, "netns", ns_b)
        for ns, veth, address in ((ns_a, veth_a, f"{net}.1"), (ns_b, veth_b, f"{net}.2")):
            ip("-n", ns, "addr", "add", f"{address}/24", "dev", veth)
            ip("-n", ns, "link", "set", veth, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield (ns_a, f"{net}.1"), (ns_b, f"{net}.2")
    finally:
        for args in (["netns", "del", ns_a], ["netns", "del", ns_b], ["link", "del", veth_a]):
            subprocess.run(["ip", *args], capture_output=True, timeout=20)  # deleting a namespace frees its veth


class Host:
    """`launch.py run --host NAME` inside a network namespace, its output in a file."""

    def __init__(self, ns: str, config: Path, name: str, keys: Path, tmp_path: Path) -> None:
        self.ns, self.config, self.name, self.keys, self.tmp = ns, config, name, keys, tmp_path
        self.logs: list[Path] = []
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.tmp / f"{self.name}.{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "launch.py", "run", str(self.config),
                 "--host", self.name, "--keys", str(self.keys)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**ENV, "EARSHOT_RUN_BASE": str(self.tmp / f"run-{self.name}")})

    def kill(self) -> None:
        """As a crash or a pulled plug would: SIGKILL (its nodes follow it, by PDEATHSIG)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(20)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    @property
    def output(self) -> str:
        return self.logs[-1].read_text() if self.logs else ""

    def all_output(self) -> str:
        return "".join(log.read_text() for log in self.logs)


def wait_for(what: str, condition: Callable[[], bool], timeout: float, *hosts: Host) -> None:
    """Poll until ``condition``; generous timeouts, since the CI machine is shared and loaded."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {h.name}:\n{h.all_output()[-3000:]}" for h in hosts)
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")
        time.sleep(0.1)


def frames_since_open(path: Path, opened: int) -> list[dict]:
    """Frame records written after the ``opened``-th "open" (1 = the first recorder process)."""
    seen, out = 0, []
    for record in read_records(path):
        if record.get("event") == "open":
            seen += 1
        elif seen == opened and "index" in record:
            out.append(record)
    return out


def pids_opened(path: Path) -> list[int]:
    return [r["pid"] for r in read_records(path) if r.get("event") == "open"]


def node_pids(run_base: Path) -> list[int]:
    """The node processes still alive of the runs under ``run_base`` (their command line names their run dir)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"pipeline.runner" in args and any(a.startswith(str(run_base).encode()) for a in args):
            pids.append(int(cmdline.parent.name))
    return pids


INTRUDER = """
import json, sys, time, zmq, zmq.auth
endpoint, server_key, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
ctx = zmq.Context()
plain = ctx.socket(zmq.SUB)  # no CURVE at all
unknown = ctx.socket(zmq.SUB)  # CURVE, the right server key, a key of its own that no host has
unknown.curve_publickey, unknown.curve_secretkey = zmq.curve_keypair()
unknown.curve_serverkey = zmq.auth.load_certificate(server_key)[0]
got = {}
for name, sock in (("plain", plain), ("unknown key", unknown)):
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    got[name] = 0
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    for name, sock in (("plain", plain), ("unknown key", unknown)):
        while sock.poll(0):
            sock.recv_multipart()
            got[name] += 1
    time.sleep(0.02)
print(json.dumps(got))
ctx.destroy(linger=0)
"""


def test_a_graph_split_over_two_hosts(two_hosts, tmp_path: Path) -> None:
    (ns_a, camera_ip), (ns_b, gpu_ip) = two_hosts
    record = tmp_path / "sink.jsonl"
    config = split_graph(tmp_path, camera_ip, gpu_ip, record)
    endpoint = f"tcp://{camera_ip}:{DEFAULT_BASE_PORT}"

    # each box makes its own keypair (its secret never travels) and gets the other's public key
    keys_a, keys_b = tmp_path / "keys-camera", tmp_path / "keys-gpu"
    for keys, host in ((keys_a, "camera_box"), (keys_b, "gpu_box")):
        made = launch("keys", str(keys), str(config), "--host", host, run_base=tmp_path)
        assert made.returncode == 0, made.stderr
    shutil.copy(keys_a / "camera_box.key", keys_b)
    shutil.copy(keys_b / "gpu_box.key", keys_a)
    assert not (keys_a / "gpu_box.key_secret").exists() and not (keys_b / "camera_box.key_secret").exists()

    camera = Host(ns_a, config, "camera_box", keys_a, tmp_path)
    gpu = Host(ns_b, config, "gpu_box", keys_b, tmp_path)
    try:
        gpu.start()
        camera.start()
        wait_for("frames to reach the gpu box", lambda: len(frames_since_open(record, 1)) >= 30, 45, camera, gpu)
        assert f"src/frames → sink on gpu_box: serving {endpoint} (CURVE)" in camera.output
        assert f"src/frames from host 'camera_box': reading {endpoint} (CURVE)" in gpu.output

        # a client without a known key, or without CURVE, gets nothing while the gpu box keeps receiving
        before = len(frames_since_open(record, 1))
        intruder = subprocess.run(["ip", "netns", "exec", ns_b, sys.executable, "-c", INTRUDER, endpoint,
                                   str(keys_b / "camera_box.key"), "3"], capture_output=True, text=True, timeout=60)
        assert intruder.returncode == 0, intruder.stderr
        assert json.loads(intruder.stdout) == {"plain": 0, "unknown key": 0}
        assert len(frames_since_open(record, 1)) > before  # the real reader was served meanwhile
        wait_for("the camera box to log the refusal", lambda: f"output {endpoint}: refused a client at {gpu_ip}: "
                 "its CURVE key is not one of the hosts that read this output (1 refused so far" in camera.output,
                 30, camera)

        # the gpu box dies and comes back: the camera box serves it again
        first_sink = pids_opened(record)[0]
        gpu.kill()
        wait_for("the killed gpu box's nodes to exit", lambda: not node_pids(tmp_path / "run-gpu_box"), 30, gpu)
        gpu.start()
        wait_for("frames after the gpu box restarted", lambda: len(frames_since_open(record, 2)) >= 30, 45, camera, gpu)

        # the camera box dies and comes back: the gpu box's reader reconnects by itself
        camera.kill()
        wait_for("the killed camera box's nodes to exit", lambda: not node_pids(tmp_path / "run-camera_box"), 30, camera)
        seen = frames_since_open(record, 2)
        last = max(r["index"] for r in seen)
        camera.start()  # a new ticker, counting from 0 again: its frames are the ones below `last`
        wait_for("frames after the camera box restarted",
                 lambda: sum(r["index"] < last for r in frames_since_open(record, 2)[len(seen):]) >= 30, 45, camera, gpu)

        assert camera.stop() == 130 and gpu.stop() == 130  # stopped, as Ctrl-C would
    finally:
        for host in (camera, gpu):
            if host.proc is not None and host.proc.poll() is None:
                host.proc.kill()
                host.proc.wait(10)

    # each host's summary covers its own nodes only
    assert "[earshot] src: " in camera.output and "[earshot] sink: " not in camera.output
    assert "[earshot] sink: " in gpu.output and "[earshot] src: " not in gpu.output
    assert pids_opened(record)[1] != first_sink
    # no key ever reaches a log line, nor the plan the supervisor leaves for its nodes
    written = camera.all_output() + gpu.all_output() + "".join(
        p.read_text() for p in tmp_path.glob("run-*/*/curve.json"))
    for key_file in [*keys_a.glob("*.key*"), *keys_b.glob("*.key*")]:
        for key in zmq.auth.load_certificate(key_file):
            if key:
                assert key.decode() not in written, f"a key of {key_file.name} was logged"
    assert json.loads(next(tmp_path.glob("run-gpu_box/*/curve.json")).read_text())["endpoints"] == {
        endpoint: {"server": "camera_box", "clients": ["gpu_box"]}}  # the killed host's run dir is left behind
