"""Session creation reports the provider a session really got (this machine has no GPU)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from scenerec.onnx_runtime import CPU, CUDA, create_session


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4 → 2 linear layer exported to ONNX: enough for ONNX Runtime to build a session."""
    path = tmp_path_factory.mktemp("onnx") / "linear.onnx"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript-based ONNX export"
        torch.onnx.export(
            torch.nn.Linear(4, 2),
            (torch.zeros(1, 4),),
            str(path),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            dynamo=False,  # the default dynamo exporter needs onnxscript, which is not installed
        )
    return path


def test_cuda_without_gpu_falls_back_to_cpu_with_a_warning(
    tiny_onnx: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="scenerec.onnx_runtime"):
        session, report = create_session(tiny_onnx, device="cuda")
    assert report.requested == (CUDA, CPU)
    assert report.actual == CPU == session.get_providers()[0]
    assert report.fell_back
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert CUDA in warnings[0].getMessage() and CPU in warnings[0].getMessage()
    (y,) = session.run(None, {"x": np.ones((3, 4), dtype=np.float32)})
    assert y.shape == (3, 2)


def test_auto_is_reported_like_cuda(tiny_onnx: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="scenerec.onnx_runtime"):
        _, report = create_session(tiny_onnx, device="auto", threads=1)
    assert (report.actual, report.fell_back) == (CPU, True)
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_cpu_is_cpu_without_fallback_or_warning(tiny_onnx: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="scenerec.onnx_runtime"):
        session, report = create_session(tiny_onnx, device="cpu", threads=1)
    assert report.requested == (CPU,)
    assert (report.actual, report.fell_back) == (CPU, False)
    assert session.get_providers() == [CPU]
    assert not caplog.records


@pytest.mark.parametrize("device", ["gpu", "CUDA", "", "cuda:0"])
def test_bad_device_names_the_allowed_values(tiny_onnx: Path, device: str) -> None:
    with pytest.raises(ValueError, match="cpu, cuda, auto"):
        create_session(tiny_onnx, device=device)


def test_bad_threads_and_missing_file(tiny_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="threads"):
        create_session(tiny_onnx, threads=0)
    with pytest.raises(FileNotFoundError, match=r"missing\.onnx"):
        create_session(tmp_path / "missing.onnx")
