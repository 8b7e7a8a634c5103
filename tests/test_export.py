"""Export: every registered model → checked ONNX (opset ≥ 17, dynamic batch) that matches PyTorch."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from lab import onnx_export as export
from engines.models import MODELS, get

SPEC = get("tiny_conv_test")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_exports_and_matches_pytorch(name: str, tmp_path: Path) -> None:
    report = export.export_model(MODELS[name], tmp_path)
    model = onnx.load(str(report.path))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= export.MIN_OPSET
    assert report.ok and report.max_abs_error <= MODELS[name].atol


def test_batch_axis_is_dynamic(tmp_path: Path) -> None:
    model = onnx.load(str(export.export_onnx(SPEC, tmp_path / "m.onnx")))
    for value in [*model.graph.input, *model.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name
    assert export.max_abs_error(SPEC, tmp_path / "m.onnx", batches=(1, 8)) <= 1e-4


def test_cli(tmp_path: Path, capsys) -> None:
    assert export.main(["--list"]) == 0
    assert "tiny_conv_test" in capsys.readouterr().out
    assert export.main(["--model", "tiny_conv_test", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "tiny_conv_test.onnx").exists()
    assert "ok" in capsys.readouterr().out
    assert export.main(["--model", "tiny_conv_test"]) == 2  # test-only models never go to engines/weights
    assert "test-only" in capsys.readouterr().err
    assert export.main(["--model", "nope"]) == 2


def test_shipped_model_without_onnx_points_to_export(monkeypatch, tmp_path: Path) -> None:
    import dataclasses

    shipped = dataclasses.replace(SPEC, name="not_exported_yet", shipped=True)
    with pytest.raises(FileNotFoundError, match="launch.py export --model not_exported_yet"):
        export.ensure_onnx(shipped, tmp_path)


def test_cli_tensorrt_build_without_tensorrt_fails_clearly(tmp_path: Path, capsys, monkeypatch) -> None:
    import engines.backends as backends

    monkeypatch.setattr(backends, "installed", lambda name: name != "tensorrt")
    assert export.main(["--model", "tiny_conv_test", "--out", str(tmp_path), "--tensorrt"]) == 1
    assert "pip install 'earshot[tensorrt]'" in capsys.readouterr().err
