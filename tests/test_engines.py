"""The engine interface on the backends this machine has (onnxruntime CPU, torch CPU), and "auto".

Parity tolerances, against PyTorch FP32 on the same inputs:
  FP32 (onnxruntime CPU, torch CPU): max abs error ≤ 1e-4.
  FP16 (torch): |err| ≤ 5e-3 + 1e-2·|ref|; FP16 keeps ~3 significant digits, outputs here are O(1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import engines.backends as backends
from engines.backends import Probe, probe
from engines.backends.onnxruntime_backend import CPU_EP, CUDA_EP, TRT_EP, provider_chain, trt_ep_cache_dir
from engines.loader import BackendUnavailable, EngineError, EngineInputError, ModelSource, choose_backend, load
from lab.onnx_export import ensure_onnx, export_onnx
from engines.models import MODELS, TensorSpec, ModelSpec, get, register
from tests.engine_reference import torch_reference

SPEC = get("tiny_conv_test")
FP32_ATOL = 1e-4


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An engine cache holding the test model's ONNX (the runtime never exports by itself)."""
    path = tmp_path_factory.mktemp("engine-cache")
    ensure_onnx(SPEC, path)
    return path


@pytest.fixture(scope="module")
def reference() -> dict[int, tuple[dict, dict]]:
    """PyTorch outputs for batch 1 and 8."""
    return torch_reference(SPEC)


# ----------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_fp32_backends_match_pytorch(backend: str, cache: Path, reference) -> None:
    with load("tiny_conv_test", backend=backend, device="cpu", cache_dir=cache) as engine:
        assert engine.backend == backend and engine.precision == "fp32"
        assert [t.name for t in engine.outputs] == list(SPEC.outputs)
        for batch, (inputs, expected) in reference.items():
            got = engine.run(inputs)
            assert set(got) == set(SPEC.outputs)
            for name in SPEC.outputs:
                assert got[name].shape == expected[name].shape
                assert np.max(np.abs(got[name] - expected[name])) <= FP32_ATOL, (backend, batch, name)


def test_torch_fp16_matches_pytorch_within_fp16_tolerance(cache: Path, reference) -> None:
    engine = load("tiny_conv_test", backend="torch", device="cpu", fp16=True)
    assert engine.precision == "fp16"
    inputs, expected = reference[8]
    got = engine.run(inputs)
    for name in SPEC.outputs:
        assert got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], expected[name], atol=5e-3, rtol=1e-2)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda_available(), reason="needs an NVIDIA GPU (runs on CUDA machines; CI has none)")
@pytest.mark.parametrize("fp16, cuda_graph, atol, rtol", [(False, False, 1e-3, 0.0), (True, False, 5e-3, 1e-2),
                                                          (True, True, 5e-3, 1e-2)])
def test_torch_cuda_matches_pytorch_cpu(reference, fp16: bool, cuda_graph: bool, atol: float, rtol: float) -> None:
    """FP32 on CUDA (TF32 convolutions allowed, hence 1e-3), FP16 eager, FP16 replayed from a CUDA graph."""
    engine = load("tiny_conv_test", backend="torch", device="cuda", fp16=fp16, cuda_graph=cuda_graph)
    for _ in range(2):  # the second call replays the captured graph
        for inputs, expected in reference.values():
            got = engine.run(inputs)
            for name in SPEC.outputs:
                np.testing.assert_allclose(got[name], expected[name], atol=atol, rtol=rtol, err_msg=name)
    engine.close()


def _auto_here() -> tuple[str, str]:
    """(backend, device) `auto` must pick on this machine: ONNX Runtime on the CPU where there is no
    GPU (CI), torch on CUDA where torch is the only GPU path (the lent GPU machines: no TensorRT, no
    onnxruntime-gpu). The ranking above those is covered with fake probes."""
    if probe("tensorrt").gpu_kind or probe("onnxruntime").gpu_kind:
        pytest.skip("TensorRT or onnxruntime-gpu here: auto's ranking is covered with fake probes")
    return ("torch", "cuda") if _cuda_available() else ("onnxruntime", "cpu")


def test_auto_picks_the_first_usable_backend_here(cache: Path, caplog) -> None:
    backend, device = _auto_here()
    caplog.set_level("INFO", logger="engines.loader")
    engine = load("tiny_conv_test", cache_dir=cache)
    assert engine.backend == backend and engine.device == device
    assert f"auto chose backend {backend}" in caplog.text


def test_auto_ignores_options_meant_for_other_backends(cache: Path) -> None:
    engine = load("tiny_conv_test", cache_dir=cache, threads=1, int8=False, workspace_bytes=1 << 28, cuda_graph=True)
    assert engine.backend == _auto_here()[0]


def test_load_by_onnx_path(tmp_path: Path, reference) -> None:
    path = export_onnx(SPEC, tmp_path / "model.onnx")
    engine = load(path, backend="onnxruntime", device="cpu")
    inputs, expected = reference[1]
    assert np.max(np.abs(engine.run(inputs)["embedding"] - expected["embedding"])) <= FP32_ATOL
    assert load(str(path)).backend == "onnxruntime"  # auto: torch is skipped for a bare ONNX file
    with pytest.raises(EngineError, match="only ONNX"):
        load(path, backend="torch")


# ---------------------------------------------------------------------------------- errors
def test_bad_inputs_are_named(cache: Path) -> None:
    engine = load("tiny_conv_test", backend="onnxruntime", device="cpu", cache_dir=cache)
    with pytest.raises(EngineInputError, match="missing \\['image'\\]"):
        engine.run({"img": np.zeros((1, 3, 64, 64), np.float32)})
    with pytest.raises(EngineInputError, match="'image' has shape \\(1, 3, 32, 32\\).*\\(\\?, 3, 64, 64\\)"):
        engine.run({"image": np.zeros((1, 3, 32, 32), np.float32)})


@pytest.mark.parametrize("backend,package,extra", [
    ("tensorrt", "tensorrt", "earshot[tensorrt]"),
    ("torch", "torch", "earshot[torch]"),
])
def test_missing_package_gives_one_clear_error(backend, package, extra, monkeypatch) -> None:
    monkeypatch.setattr(backends, "installed", lambda name: name != package)
    with pytest.raises(BackendUnavailable) as err:
        load("tiny_conv_test", backend=backend)
    assert f"{package}" in str(err.value) and f"pip install '{extra}'" in str(err.value)


def test_onnxruntime_on_cuda_without_gpu_providers_says_so(cache: Path) -> None:
    import onnxruntime

    if {TRT_EP, CUDA_EP} & set(onnxruntime.get_available_providers()):
        pytest.skip("onnxruntime-gpu is installed")
    with pytest.raises(BackendUnavailable, match="earshot\\[gpu\\]"):
        load("tiny_conv_test", backend="onnxruntime", device="cuda", cache_dir=cache)


def test_unknown_model_and_backend() -> None:
    with pytest.raises(KeyError, match="tiny_conv_test"):
        load("no_such_model")
    with pytest.raises(ValueError, match="unknown backend"):
        load("tiny_conv_test", backend="tflite")
    with pytest.raises(FileNotFoundError):
        load("/nowhere/model.onnx")
    with pytest.raises(EngineError, match="takes no option\\(s\\) \\['int8'\\]"):
        load("tiny_conv_test", backend="onnxruntime", int8=True)


# ------------------------------------------------------------------------------ selection
def probes(**table: tuple[bool, str | None]):
    def probe(name: str) -> Probe:
        installed, gpu = table.get(name, (False, None))
        return Probe(name, installed, gpu, "fake")

    return probe


REGISTERED = ModelSource("m", spec=SPEC)
BARE_ONNX = ModelSource("m", onnx_path=Path("m.onnx"))


@pytest.mark.parametrize("source,table,expected", [
    (REGISTERED, {"tensorrt": (True, "tensorrt"), "onnxruntime": (True, "tensorrt"), "torch": (True, "cuda")},
     ("tensorrt", {})),
    (REGISTERED, {"tensorrt": (True, None), "onnxruntime": (True, "tensorrt"), "torch": (True, "cuda")},
     ("onnxruntime", {"device": "auto"})),
    (REGISTERED, {"onnxruntime": (True, "cuda"), "torch": (True, "cuda")}, ("torch", {"device": "cuda"})),
    (BARE_ONNX, {"onnxruntime": (True, "cuda"), "torch": (True, "cuda")}, ("onnxruntime", {"device": "auto"})),
    (REGISTERED, {"tensorrt": (True, None), "onnxruntime": (True, None), "torch": (True, None)},
     ("onnxruntime", {"device": "cpu"})),
    (REGISTERED, {"torch": (True, None)}, ("torch", {"device": "cpu"})),
])
def test_auto_ranking(source, table, expected) -> None:
    assert choose_backend(source, probes(**table)) == expected


def test_auto_with_nothing_usable_says_why() -> None:
    with pytest.raises(BackendUnavailable, match="onnxruntime: fake"):
        choose_backend(BARE_ONNX, probes(torch=(True, None)))


def test_auto_probes_lazily_in_rank_order() -> None:
    asked = []

    def probe(name: str) -> Probe:
        asked.append(name)
        return Probe(name, name == "onnxruntime", None)

    choose_backend(BARE_ONNX, probe)
    assert asked == ["tensorrt", "onnxruntime"]  # torch never imported for a bare ONNX on CPU


# --------------------------------------------------------------------------- onnxruntime
def test_provider_chain_orders_tensorrt_cuda_cpu_with_caches(tmp_path: Path) -> None:
    chain = provider_chain([CPU_EP, CUDA_EP, TRT_EP], cache_dir=tmp_path, fp16=True)
    assert [name for name, _ in chain] == [TRT_EP, CUDA_EP, CPU_EP]
    trt_options = chain[0][1]
    assert trt_options["trt_engine_cache_enable"] and trt_options["trt_timing_cache_enable"]
    assert trt_options["trt_engine_cache_path"] == str(tmp_path) and trt_options["trt_fp16_enable"]
    assert provider_chain([CPU_EP, CUDA_EP, TRT_EP], device="cpu") == [(CPU_EP, {})]
    assert provider_chain([CPU_EP]) == [(CPU_EP, {})]
    assert [n for n, _ in provider_chain([CUDA_EP, CPU_EP])] == [CUDA_EP, CPU_EP]


def test_ort_tensorrt_cache_folder_is_keyed_by_model_bytes_and_ort_version(tmp_path: Path) -> None:
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    a.write_bytes(b"one")
    b.write_bytes(b"one")
    first = trt_ep_cache_dir(a, "1.32.0", tmp_path).name.split("-")[1]
    assert first == trt_ep_cache_dir(b, "1.32.0", tmp_path).name.split("-")[1]
    assert trt_ep_cache_dir(a, "1.33.0", tmp_path) != trt_ep_cache_dir(a, "1.32.0", tmp_path)
    b.write_bytes(b"two")
    assert trt_ep_cache_dir(b, "1.32.0", tmp_path).name.split("-")[1] != first


# ------------------------------------------------------------------------------ registry
def test_registry_entries_are_complete_and_unique() -> None:
    for spec in MODELS.values():
        names = {s.name for s in spec.inputs} | set(spec.outputs)
        assert set(spec.dynamic_axes) <= names, spec.name
        spec.profile_shapes()  # every dynamic axis has a range
    with pytest.raises(ValueError, match="twice"):
        register(SPEC)
    with pytest.raises(KeyError, match="registered"):
        get("nope")


def test_profile_shapes_follow_axis_ranges() -> None:
    assert SPEC.profile_shapes() == {"image": ((1, 3, 64, 64), (1, 3, 64, 64), (8, 3, 64, 64))}
    spec = ModelSpec("x", "m:f", (TensorSpec("a", (1, 10)),), ("y",), dynamic_axes={"a": {1: "frames"}})
    with pytest.raises(ValueError, match="frames"):
        spec.profile_shapes()


def test_pinned_tensorrt_ignores_the_threads_hint_but_refuses_unknown_options(tmp_path: Path, monkeypatch) -> None:
    """Every node passes ``threads``; a config that pins ``backend: tensorrt`` must still load."""
    import sys

    from engines import backends
    from engines.backends.engine import EngineError
    from tests.fake_tensorrt import FakeCuda, FakeTensorRT

    cuda = FakeCuda()
    monkeypatch.setattr(backends, "installed", lambda name: True)
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT(cuda))
    monkeypatch.setattr("engines.backends.tensorrt_backend.CudaRuntime", lambda device_id=0: cuda)
    ensure_onnx(SPEC, tmp_path)
    engine = load("tiny_conv_test", backend="tensorrt", cache_dir=tmp_path, threads=2)
    assert engine.backend == "tensorrt"
    engine.close()
    with pytest.raises(EngineError, match="bogus"):
        load("tiny_conv_test", backend="tensorrt", cache_dir=tmp_path, threads=2, bogus=1)
