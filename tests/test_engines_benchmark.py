"""benchmarks/engines.py: CenterFace through the prepared model on every backend, and a table that
survives failures (a one-shot GPU run must keep every row it got to)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from engines import backends
from engines.faces.detector import INPUT_NAME
from tests.fake_tensorrt import FakeCuda, FakeTensorRT

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_engines", REPO / "benchmarks" / "engines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_tensorrt(monkeypatch):
    cuda = FakeCuda()
    trt = FakeTensorRT(cuda)
    monkeypatch.setattr(backends, "installed", lambda name: True)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr("engines.backends.tensorrt_backend.CudaRuntime", lambda device_id=0: cuda)
    return trt


def test_centerface_rows_on_onnxruntime_and_tensorrt_and_failures_do_not_end_the_table(
        bench, fake_tensorrt, tmp_path, monkeypatch, capsys):
    timed = bench.time_engine

    def fails_at_batch_2(engine, inputs, iters, warmup):
        if inputs[next(iter(inputs))].shape[0] == 2:
            raise RuntimeError("CUDA error: out of memory | on purpose")
        return timed(engine, inputs, iters, warmup)

    monkeypatch.setattr(bench, "time_engine", fails_at_batch_2)
    monkeypatch.setenv("EARSHOT_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "table.md"
    assert bench.main(["--models", "centerface", "tiny_conv_test", "--variants", "onnxruntime", "tensorrt",
                       "--batches", "1", "2", "--iters", "2", "--warmup", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.read_text() == printed
    assert printed.startswith("machine: ")
    rows = [line for line in printed.splitlines() if line.startswith("| centerface") or line.startswith("| tiny")]
    assert len(rows) == 8, rows
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    for model, variant, runs_on, batch, p50, *_, diff in cells:
        if batch == "2":
            assert p50.startswith("cannot run: RuntimeError: CUDA error: out of memory / on purpose")
        else:
            assert float(p50) > 0
            absolute, relative = (float(x) for x in diff.split(" / "))  # the fake TensorRT runs the same ONNX
            assert absolute < 1e-4 and relative < 1e-4
        assert runs_on.startswith("tensorrt" if variant == "tensorrt" else "onnxruntime")
    # CenterFace on TensorRT: the prepared model with a dynamic-H/W profile up to the largest batch asked for
    centerface_build = next(b for b in fake_tensorrt.builds if INPUT_NAME in b["profiles"][0])
    assert centerface_build["profiles"][0][INPUT_NAME] == ((1, 3, 32, 32), (1, 3, 320, 320), (2, 3, 320, 320))


def test_a_model_that_cannot_load_is_one_row(bench, capsys):
    assert bench.main(["--models", "no_such_model", "--variants", "onnxruntime", "--iters", "1", "--warmup", "0"]) == 0
    assert "| no_such_model | onnxruntime | – | – | cannot load: KeyError:" in capsys.readouterr().out


def test_localizer_parity_compares_real_inputs_with_onnxruntime(tmp_path, capsys):
    """benchmarks/localizer_parity.py on saved inputs: torch FP32 on the CPU must find the same peaks;
    a variant that cannot run here (CUDA on CI) is one row, not the end of the table."""
    import numpy as np

    spec = importlib.util.spec_from_file_location("localizer_parity", REPO / "benchmarks" / "localizer_parity.py")
    parity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(parity)
    rng = np.random.default_rng(0)
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, image=rng.integers(0, 256, (3, 224, 224, 3), dtype=np.uint8),
             previous=rng.integers(0, 256, (3, 224, 224, 3), dtype=np.uint8),
             logmel=rng.standard_normal((3, 97, 80)).astype(np.float32), source="random")
    assert parity.main(["--inputs", str(inputs), "--variants", "torch-fp32-cpu", "torch-fp16-cuda"]) == 0
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")]
            for r in capsys.readouterr().out.splitlines() if r.startswith("| torch")}
    assert rows["torch-fp32-cpu"][-1] == "100.0%"
    assert float(rows["torch-fp32-cpu"][2]) < 1e-4
    cuda = rows["torch-fp16-cuda"]
    assert cuda[1].startswith("cannot run") or cuda[-1].endswith("%")
