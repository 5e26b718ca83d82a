"""Run the training pipeline on this machine: kfp.local with the SubprocessRunner (no Docker, no network).

Every step runs as a subprocess of this Python environment (`use_venv=False`: the venv already holds
scenerec and kfp, as the image does), writing its artifacts under the pipeline root:
`<root>/scenerec-training-<timestamp>/<step>/<output>`.

Caching is kfp's own (`kfp.local.init(enable_caching=True)`): a step is reused when its component,
image, command and arguments match a previous run's. Arguments carry paths, not contents, and the
command carries the component's code, not scenerec's; so the cache lives in a folder named after the
dataset's bytes and scenerec's source, and editing either starts a fresh cache instead of serving
stale artifacts.

Per-step wall times come from kfp's own log records (start, finish, cache hit), observed through a
logging filter: they include each subprocess's start-up, which is what a run costs.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import sys
import time
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kfp import local

import scenerec
from pipelines.training_pipeline import training_pipeline
from scenerec.artifact import sha256_file
from scenerec.config import Config, config_json
from scenerec.errors import DataError, ScenerecError

DEFAULT_ROOT = Path("build/pipeline_root")
SYNTHETIC = "synthetic-data"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_HIT = re.compile(r"Task (\S+) cache hit")
_FAILED_TASK = re.compile(r"Inner task failed: '([^']+)'")
_ERROR_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.*)$")
_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d+ - |^-{10,}")


@dataclass
class StepTime:
    """One step of a run: `ran`, `cached` (kfp reused an earlier output) or `failed`."""

    name: str
    status: str
    seconds: float


class PipelineRunError(ScenerecError):
    """A step failed; the message names it and quotes its error, `steps` holds the times so far."""

    def __init__(self, message: str, steps: list[StepTime]) -> None:
        super().__init__(message)
        self.steps = steps


@dataclass
class LocalRun:
    """Where a finished local run left its main artifacts, and what each step cost."""

    model_dir: Path
    feature_repo: Path
    inference_service: Path
    steps: list[StepTime] = field(default_factory=list)
    seconds: float = 0.0


def run_local(
    data: Path, config: Config, root: Path = DEFAULT_ROOT, cache: bool = True, deploy: bool = False
) -> LocalRun:
    """Run the whole pipeline on `data` with `config` (passed verbatim) under the pipeline `root`.

    Raises:
        PipelineRunError: A step failed (the gate included); the message quotes the step's error.
        DataError: `data` is not a directory.
    """
    data, root = Path(data).resolve(), Path(root).resolve()
    if not data.is_dir():
        raise DataError(f"{data}: not a directory (expected a dataset directory)")
    cache_root = root / ".kfp_cache" / cache_partition(data) if cache else None
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        raise_on_error=True,
        enable_caching=cache,
        cache_root=str(cache_root) if cache_root else None,
    )
    clock, tail = StepClock(), _Tail(sys.stdout)
    started = time.perf_counter()
    try:
        with clock.observing(), contextlib.redirect_stdout(tail), warnings.catch_warnings():
            # The SubprocessRunner warns for any image not named "python"; it runs this venv anyway.
            warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
            task = training_pipeline(data=str(data), config=config_json(config), deploy=deploy)
    except RuntimeError as e:
        if "finished with status" not in str(e):
            raise
        raise PipelineRunError(_failure(str(e), list(tail.lines)), clock.steps) from e
    outputs = task.outputs
    return LocalRun(
        model_dir=Path(outputs["model"].path),
        feature_repo=Path(outputs["feature_repo"].path),
        inference_service=Path(outputs["inference_service"].path),
        steps=clock.steps,
        seconds=time.perf_counter() - started,
    )


def cache_partition(data: Path) -> str:
    """A short digest of the dataset's files and scenerec's source: the local cache's folder name."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(data).iterdir() if p.is_file()):
        digest.update(f"data/{path.name}\0{sha256_file(path)}\0".encode())
    source = Path(scenerec.__file__).resolve().parent
    for path in sorted(source.rglob("*.py")):
        digest.update(f"src/{path.relative_to(source)}\0{sha256_file(path)}\0".encode())
    return digest.hexdigest()[:16]


def synthetic_data(root: Path = DEFAULT_ROOT) -> Path:
    """The default synthetic dataset under `root`, generated once (it is seeded, so reuse is exact)."""
    import dataclasses
    import json

    from scenerec.data.synthetic import SyntheticSpec, write_synthetic

    out, spec = Path(root) / SYNTHETIC, SyntheticSpec()
    truth = out / "truth.json"
    if not (truth.is_file() and json.loads(truth.read_text()).get("spec") == dataclasses.asdict(spec)):
        write_synthetic(out, spec)
    return out


class StepClock(logging.Filter):
    """Times steps from kfp.local's log records; never drops a record."""

    def __init__(self) -> None:
        super().__init__()
        self._started: dict[str, float] = {}
        self._steps: dict[str, StepTime] = {}

    @property
    def steps(self) -> list[StepTime]:
        return list(self._steps.values())

    def filter(self, record: logging.LogRecord) -> bool:
        text = _ANSI.sub("", record.getMessage())
        if match := _START.search(text):
            self._started[match[1]] = record.created
        elif match := _END.search(text):
            name = match[1]
            seconds = record.created - self._started.get(name, record.created)
            self._steps[name] = StepTime(name, "ran" if match[2] == "SUCCESS" else "failed", seconds)
        elif match := _HIT.search(text):
            self._steps[match[1]] = StepTime(match[1], "cached", 0.0)
        return True

    @contextlib.contextmanager
    def observing(self) -> Iterator[None]:
        """Attach to the root logger (kfp logs there) at INFO, so cache hits are recorded too."""
        root = logging.getLogger()
        level = root.level
        root.addFilter(self)
        root.setLevel(min(level or logging.INFO, logging.INFO))
        try:
            yield
        finally:
            root.removeFilter(self)
            root.setLevel(level)


class _Tail:
    """Passes writes through to `stream`, keeping the last lines (a failed step's error is there)."""

    def __init__(self, stream: TextIO, keep: int = 500) -> None:
        self.stream = stream
        self.lines: deque[str] = deque(maxlen=keep)
        self._partial = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        *complete, self._partial = (self._partial + text).split("\n")
        self.lines.extend(_ANSI.sub("", line) for line in complete)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, encoding, fileno... as the real stream
        return getattr(self.stream, name)


def _failure(message: str, lines: list[str]) -> str:
    """'step X failed: <its error>' from kfp's failure message and the step's streamed log."""
    task = _FAILED_TASK.search(_ANSI.sub("", message))
    step = task[1] if task else "a step"
    for at in range(len(lines) - 1, -1, -1):
        match = _ERROR_LINE.match(lines[at])
        if match:
            rest = []
            for line in lines[at + 1 : at + 20]:
                if _LOG_LINE.match(line) or not line.strip():
                    break
                rest.append(line.strip())
            return "\n".join([f"step {step} failed: {match[1]}: {match[2]}", *rest])
    return f"step {step} failed (its log is above)"
