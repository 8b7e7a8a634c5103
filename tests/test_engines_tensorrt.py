"""The TensorRT backend, driven through test doubles (tests/fake_tensorrt.py): no GPU, no TensorRT.

What this proves: plans are keyed and invalidated correctly, stale/foreign/corrupt plans are rebuilt
rather than loaded, buffers are bound by tensor name and sized for the profile, CUDA graphs are
captured once per shape and replayed, and each error path says what went wrong. What it cannot
prove: that real TensorRT builds and runs these plans; see engines/README.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from engines.backends import probe
from engines.backends.engine import EngineError, EngineInputError
from engines.backends.cuda_runtime import GpuPlatform, read_l4t_release
from engines.backends.tensorrt_backend import TensorRTEngine, open_engine, plan_key
from engines.backends.tensorrt_build import BuildOptions, EngineBuildError, build_plan, profile_for
from engines.backends.tensorrt_cache import MAGIC, PlanKey, PlanStore
from lab.onnx_export import export_onnx
from engines.models import get
from tests.fake_tensorrt import FakeCuda, FakeTensorRT
from tests.engine_reference import torch_reference

SPEC = get("tiny_conv_test")


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(SPEC, tmp_path_factory.mktemp("onnx") / "tiny_conv_test.onnx")


@pytest.fixture(scope="module")
def reference() -> dict[int, tuple[dict, dict]]:
    """PyTorch outputs for batch 1 and 8."""
    return torch_reference(SPEC)


def make(tmp_path: Path, onnx_path: Path, cuda: FakeCuda | None = None, version: str = "10.9.0.34", **options):
    cuda = cuda or FakeCuda()
    trt = FakeTensorRT(cuda, version)
    options.setdefault("profile", SPEC.profile_shapes())
    engine = open_engine(onnx_path, model_name="tiny", cache_dir=tmp_path, trt=trt, cuda=cuda, **options)
    return engine, trt, cuda


def key(**changes) -> PlanKey:
    base = PlanKey("a" * 64, "10.9.0.34", "12.6", "8.7", "Orin", "R36.4.3", BuildOptions().key_fields())
    return dataclasses.replace(base, **changes)


# ------------------------------------------------------------------------------------ cache key
@pytest.mark.parametrize("change", [
    {"onnx_sha256": "b" * 64}, {"tensorrt_version": "10.9.0.35"}, {"cuda_version": "12.8"},
    {"compute_capability": "9.0"}, {"gpu_name": "H100"}, {"l4t_release": "R35.4.1"}, {"l4t_release": None},
    {"build": BuildOptions(fp16=False).key_fields()},
    {"build": BuildOptions(profile={"image": ((1, 3, 64, 64),) * 3}).key_fields()},
])
def test_every_dependency_changes_the_plan_key(change: dict) -> None:
    assert key(**change).digest() != key().digest()


def test_plan_key_is_stable_and_composed_from_onnx_bytes_and_platform(onnx_path: Path) -> None:
    assert key().digest() == key().digest()
    cuda = FakeCuda(GpuPlatform("13.0", "9.0", "NVIDIA H100", None))
    made = plan_key(FakeTensorRT(cuda, "11.4.0.106"), cuda, onnx_path.read_bytes(), BuildOptions())
    assert made.onnx_sha256 == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert (made.tensorrt_version, made.cuda_version, made.compute_capability, made.l4t_release) == \
        ("11.4.0.106", "13.0", "9.0", None)
    # the timing cache is shared across models on one GPU + TensorRT, not across GPUs
    assert key(onnx_sha256="c" * 64).timing_cache_name() == key().timing_cache_name()
    assert key(compute_capability="9.0").timing_cache_name() != key().timing_cache_name()


# ----------------------------------------------------------------------------------- plan store
def test_plan_store_round_trip_and_refuses_anything_else(tmp_path: Path) -> None:
    store = PlanStore(tmp_path)
    path = store.write("m", key(), b"PLAN-BYTES")
    assert store.read("m", key()) == b"PLAN-BYTES"
    assert store.read("m", key(tensorrt_version="10.10.0.1")) is None  # stale: another name, never found
    blob = path.read_bytes()

    path.write_bytes(b"raw trtexec plan")  # foreign: no header
    assert store.read("m", key()) is None
    path.write_bytes(blob[:-3])  # truncated
    assert store.read("m", key()) is None
    path.write_bytes(blob[:-1] + b"X")  # corrupt
    assert store.read("m", key()) is None
    other = PlanStore(tmp_path / "other")  # a valid plan for another GPU copied under this key's name
    other_path = other.write("m", key(compute_capability="9.0"), b"PLAN-BYTES")
    path.write_bytes(other_path.read_bytes())
    assert store.read("m", key()) is None
    assert blob.startswith(MAGIC)


# ------------------------------------------------------------------------------ build and cache
def test_first_load_builds_then_the_cached_plan_is_loaded(tmp_path: Path, onnx_path: Path) -> None:
    engine, trt, _ = make(tmp_path, onnx_path)
    assert len(trt.builds) == 1 and engine.backend == "tensorrt" and engine.precision == "fp16"
    engine.close()
    _, trt2, _ = make(tmp_path, onnx_path)
    assert trt2.builds == [] and trt2.deserializations == 1


def test_new_tensorrt_version_or_gpu_rebuilds(tmp_path: Path, onnx_path: Path) -> None:
    make(tmp_path, onnx_path)
    _, trt, _ = make(tmp_path, onnx_path, version="10.10.0.31")
    assert len(trt.builds) == 1
    _, trt, _ = make(tmp_path, onnx_path, cuda=FakeCuda(GpuPlatform("12.6", "8.6", "RTX 3090", None)))
    assert len(trt.builds) == 1
    assert len(list((tmp_path / "tensorrt").glob("*.plan"))) == 3


def test_corrupt_plan_is_rebuilt_and_replaced(tmp_path: Path, onnx_path: Path) -> None:
    engine, _, _ = make(tmp_path, onnx_path)
    engine.close()
    (plan_file,) = (tmp_path / "tensorrt").glob("*.plan")
    plan_file.write_bytes(plan_file.read_bytes()[:-10])
    _, trt, _ = make(tmp_path, onnx_path)
    assert len(trt.builds) == 1 and trt.deserializations == 1  # only the fresh plan was deserialized
    _, trt, _ = make(tmp_path, onnx_path)
    assert trt.builds == []


def test_plan_tensorrt_refuses_is_rebuilt(tmp_path: Path, onnx_path: Path) -> None:
    make(tmp_path, onnx_path)
    cuda = FakeCuda()
    trt = FakeTensorRT(cuda)
    trt.reject_plans = True
    with pytest.raises(EngineError, match="deserialize"):
        open_engine(onnx_path, model_name="tiny", cache_dir=tmp_path, trt=trt, cuda=cuda, profile=SPEC.profile_shapes())
    assert len(trt.builds) == 1 and trt.deserializations == 2  # tried the cached one, rebuilt, tried again


def test_timing_cache_is_saved_and_fed_to_the_next_build(tmp_path: Path, onnx_path: Path) -> None:
    _, trt, _ = make(tmp_path, onnx_path)
    assert trt.builds[0]["timing_cache_in"] == b""
    _, trt, _ = make(tmp_path, onnx_path, fp16=False)  # another plan, same GPU → same timing cache
    assert trt.builds[0]["timing_cache_in"] == b"+tactics"


def test_builder_gets_profile_workspace_and_fp16_on_tensorrt_10(tmp_path: Path, onnx_path: Path) -> None:
    _, trt, _ = make(tmp_path, onnx_path)
    build = trt.builds[0]
    assert build["flags"] == ["FP16"] and build["network_flags"] == 0
    assert build["profiles"] == [{"image": ((1, 3, 64, 64), (1, 3, 64, 64), (8, 3, 64, 64))}]


def test_tensorrt_11_is_strongly_typed_and_gets_an_fp16_onnx(tmp_path: Path, onnx_path: Path, monkeypatch) -> None:
    converted = []

    def fake_to_fp16(data: bytes) -> bytes:
        converted.append(data)
        return data

    monkeypatch.setattr("engines.backends.tensorrt_build.to_fp16_onnx", fake_to_fp16)
    _, trt, _ = make(tmp_path, onnx_path, version="11.4.0.106")
    assert converted == [onnx_path.read_bytes()]
    assert trt.builds[0]["flags"] == [] and trt.builds[0]["network_flags"] == 1 << 5


def test_int8_needs_explicit_qdq(tmp_path: Path, onnx_path: Path) -> None:
    with pytest.raises(EngineBuildError, match="QuantizeLinear"):
        make(tmp_path, onnx_path, int8=True)
    qdq = tmp_path / "qdq.onnx"
    onnx.save(_qdq_model(), qdq)
    _, trt, _ = make(tmp_path, qdq, int8=True, profile={})
    assert "INT8" in trt.builds[0]["flags"]


def test_parse_and_build_failures_raise_with_the_reason(tmp_path: Path, onnx_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(EngineBuildError, match="could not parse.*INVALID_GRAPH"):
        make(tmp_path, bad)
    cuda = FakeCuda()
    trt = FakeTensorRT(cuda)
    trt.fail_build = True
    with pytest.raises(EngineBuildError, match="failed to build"):
        build_plan(trt, onnx_path.read_bytes(), BuildOptions(profile=SPEC.profile_shapes()))
    assert not list((tmp_path / "tensorrt").glob("*.plan"))


def test_profile_defaults_to_dynamic_batch_and_rejects_bad_shapes() -> None:
    assert profile_for("x", (-1, 3, 8), {}) == ((1, 3, 8), (1, 3, 8), (8, 3, 8))
    with pytest.raises(EngineBuildError, match="dynamic axes \\[0, 2\\]"):
        profile_for("x", (-1, 3, -1), {})
    with pytest.raises(EngineBuildError, match="does not fit"):
        profile_for("x", (-1, 3, 8), {"x": ((1, 4, 8), (1, 4, 8), (2, 4, 8))})
    with pytest.raises(EngineBuildError, match="min <= opt <= max"):
        profile_for("x", (-1, 3, 8), {"x": ((4, 3, 8), (1, 3, 8), (8, 3, 8))})


# ------------------------------------------------------------------------------- running a plan
@pytest.mark.parametrize("cuda_graph", [True, False])
def test_outputs_match_pytorch_through_bound_buffers(tmp_path: Path, onnx_path: Path, reference, cuda_graph) -> None:
    engine, trt, cuda = make(tmp_path, onnx_path, cuda_graph=cuda_graph)
    assert [t.name for t in engine.inputs] == ["image"]
    assert [t.name for t in engine.outputs] == ["embedding", "feature_map"]
    assert engine.inputs[0].shape == (None, 3, 64, 64)
    for _ in range(2):  # second round replays captured graphs
        for batch in (1, 8):
            inputs, expected = reference[batch]
            got = engine.run(inputs)
            for name in SPEC.outputs:
                np.testing.assert_allclose(got[name], expected[name], atol=1e-4, rtol=0)
    assert cuda.graphs_launched == (2 if cuda_graph else 0)
    engine.close()
    assert cuda.memory == {} and cuda.closed  # every buffer freed
    assert cuda.graphs_destroyed == (2 if cuda_graph else 0)


def test_buffers_are_preallocated_for_the_profile_maximum(tmp_path: Path, onnx_path: Path, reference) -> None:
    engine, _, cuda = make(tmp_path, onnx_path)
    sizes = sorted(len(b) for b in cuda.memory.values())
    # image (8,3,64,64), embedding (8,24), feature_map (8,32,32,32), float32
    assert sizes == sorted([8 * 3 * 64 * 64 * 4, 8 * 24 * 4, 8 * 32 * 32 * 32 * 4])
    before = dict(cuda.memory)
    engine.run(reference[1][0])
    engine.run(reference[8][0])
    assert cuda.memory.keys() == before.keys()  # no allocation per call


def test_cuda_graph_captured_once_per_input_shape(tmp_path: Path, onnx_path: Path, reference) -> None:
    engine, _, cuda = make(tmp_path, onnx_path)
    context = engine._context
    engine.run(reference[1][0])
    assert context.enqueues == 2 and cuda.graphs_launched == 0  # warm-up enqueue + captured enqueue
    engine.run(reference[1][0])
    engine.run(reference[1][0])
    assert context.enqueues == 2 and cuda.graphs_launched == 2
    engine.run(reference[8][0])
    assert context.enqueues == 4


def test_inputs_outside_the_profile_or_misnamed_are_refused(tmp_path: Path, onnx_path: Path) -> None:
    engine, _, _ = make(tmp_path, onnx_path)
    with pytest.raises(EngineInputError, match="outside the engine's profile"):
        engine.run(SPEC.example_inputs(batch=9))
    with pytest.raises(EngineInputError, match="shape"):
        engine.run({"image": np.zeros((1, 3, 32, 32), np.float32)})
    with pytest.raises(EngineInputError, match="missing \\['image'\\]"):
        engine.run({"frames": np.zeros((1, 3, 64, 64), np.float32)})


def test_a_failing_constructor_frees_what_it_allocated(onnx_path: Path) -> None:
    cuda = FakeCuda()
    trt = FakeTensorRT(cuda)
    plan = build_plan(trt, onnx_path.read_bytes(), BuildOptions(profile=SPEC.profile_shapes()))[0]
    original = FakeCuda.malloc
    calls = []

    def malloc_then_fail(self, nbytes):
        calls.append(nbytes)
        if len(calls) == 2:
            raise EngineError("out of memory")
        return original(self, nbytes)

    cuda.malloc = malloc_then_fail.__get__(cuda)
    with pytest.raises(EngineError, match="out of memory"):
        TensorRTEngine(trt, cuda, plan)
    assert cuda.memory == {}


# ------------------------------------------------------------------------------------- platform
def test_l4t_release_is_read_from_nv_tegra_release(tmp_path: Path) -> None:
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: ...\n")
    assert read_l4t_release(release) == "R36.4.3"
    assert read_l4t_release(tmp_path / "absent") is None


def test_tensorrt_probe_never_raises_and_needs_a_gpu() -> None:
    found = probe("tensorrt")
    assert found.backend == "tensorrt" and found.gpu_kind is None  # no GPU on CI


def test_real_cuda_runtime_reports_a_missing_gpu_clearly() -> None:
    pytest.importorskip("cuda.bindings.runtime")
    from engines.backends.cuda_runtime import CudaError, CudaRuntime, gpu_count

    count, why = gpu_count()
    if count:  # a lent GPU machine: the calls the TensorRT backend makes must then work
        runtime = CudaRuntime()
        facts = runtime.platform()
        assert facts.gpu_name and float(facts.compute_capability) >= 5.0 and facts.cuda_version
        data = np.arange(1024, dtype=np.float32)
        back = np.zeros_like(data)
        ptr = runtime.malloc(data.nbytes)
        runtime.copy_to_device(ptr, data)
        runtime.copy_to_host(back, ptr)
        runtime.synchronize()
        runtime.free(ptr)
        runtime.close()
        np.testing.assert_array_equal(back, data)
        return
    assert why
    with pytest.raises(CudaError, match="cudaSetDevice failed"):
        CudaRuntime()


def _qdq_model() -> onnx.ModelProto:
    """x → QuantizeLinear → DequantizeLinear → Relu: the smallest explicitly quantized graph."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"]),
        helper.make_node("Relu", ["dq"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("zero", TensorProto.INT8, [], [0])],
    )
    # IR 8 (opset 17's own): the default is the installed onnx's newest IR, which an older ONNX
    # Runtime refuses (onnx 1.23 writes IR 14, ONNX Runtime 1.30 reads up to 13)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
