"""The one place that creates ONNX Runtime sessions, and says which provider each really got.

onnxruntime-gpu lists `CUDAExecutionProvider` in `get_available_providers()` even on a machine with
no GPU, and a session asked for CUDA quietly runs on CPU instead. Only `session.get_providers()`
tells the truth, so every session is built here and comes back with a `ProviderReport` that
training, export and serving can log, put in a manifest or turn into a metric label.

ONNX Runtime writes the CUDA load failure (an `[E:...] Failed to load library` line and a
`[W:...]` paragraph, on every session) through its process-wide default logger, which
`SessionOptions.log_severity_level` does not reach (measured with onnxruntime-gpu 1.31.1). So while
a CUDA session is created that logger is raised to fatal-only and one WARNING from this module says
what happened instead; with this module's logger at DEBUG, ONNX Runtime's own lines are kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEVICES = ("cpu", "cuda", "auto")

# ONNX Runtime's own logger severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal.
_ORT_ERROR = 3
_ORT_FATAL = 4
# ONNX Runtime has no getter for the default logger's severity; 2 (warning) is its built-in default,
# restored after a CUDA session has been created.
_ORT_DEFAULT_SEVERITY = 2

_REQUESTS: dict[str, tuple[str, ...]] = {
    "cpu": (CPU,),
    # "auto" asks for the same as "cuda": a CPU fallback is expected there, but still reported,
    # because on a GPU node it means the CUDA libraries did not load.
    "cuda": (CUDA, CPU),
    "auto": (CUDA, CPU),
}


@dataclass(frozen=True)
class ProviderReport:
    """Which execution providers a session asked for and which one it really runs on.

    Attributes:
        requested: The providers passed to ONNX Runtime, in priority order.
        actual: `session.get_providers()[0]`, the provider that runs the graph.
        fell_back: True when a GPU provider was requested and the session got another one.
    """

    requested: tuple[str, ...]
    actual: str
    fell_back: bool


def create_session(
    path: str | Path, device: str = "cpu", threads: int | None = None
) -> tuple[ort.InferenceSession, ProviderReport]:
    """Open an ONNX model with the providers `device` asks for and report what it really got.

    Args:
        path: The `.onnx` file.
        device: "cpu" (CPU only), "cuda" or "auto" (CUDA first, CPU as fallback).
        threads: Intra-op threads; None lets ONNX Runtime use one per core. Serving pins this so
            that several workers on one node do not oversubscribe its cores.

    Returns:
        The session and a `ProviderReport`. A fallback from CUDA to CPU is logged as a WARNING.

    Raises:
        ValueError: `device` is not one of "cpu", "cuda", "auto", or `threads` is below 1.
        FileNotFoundError: `path` is not a file.
    """
    if device not in _REQUESTS:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}; got {device!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1 (or None for one per core); got {threads}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no ONNX model file there")

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or 0  # 0 = ONNX Runtime's default, one per core
    options.log_severity_level = _ORT_ERROR  # the session's own warnings (e.g. node placement)

    requested = _REQUESTS[device]
    wants_gpu = CUDA in requested
    quiet = wants_gpu and not log.isEnabledFor(logging.DEBUG)
    if quiet:
        ort.set_default_logger_severity(_ORT_FATAL)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=list(requested))
    finally:
        if quiet:
            ort.set_default_logger_severity(_ORT_DEFAULT_SEVERITY)

    actual = session.get_providers()[0]
    report = ProviderReport(requested=requested, actual=actual, fell_back=wants_gpu and actual != CUDA)
    if report.fell_back:
        log.warning(
            "%s: device=%r requested %s but the session got %s (no GPU here, or the CUDA/cuDNN "
            "libraries onnxruntime-gpu %s needs are not loadable); running on CPU",
            path.name,
            device,
            requested[0],
            actual,
            ort.__version__,
        )
    else:
        log.debug("%s: running on %s (requested %s)", path.name, actual, ", ".join(requested))
    return session, report
