"""The local runner's own parts, without running a pipeline: step times, failures, cache folders."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from kfp.local import logging_utils, status

from pipelines.local_run import StepClock, _failure, cache_partition


def record(message: str, created: float) -> logging.LogRecord:
    entry = logging.LogRecord("root", logging.INFO, __file__, 1, message, None, None)
    entry.created = created
    return entry


def test_step_times_come_from_kfps_own_log_lines() -> None:
    clock = StepClock()
    name = logging_utils.format_task_name  # kfp's colouring, as in its real records
    lines = [
        (f"Executing task {name('train-model')}", 10.0),
        (f"Task {name('train-model')} finished with status "
         f"{logging_utils.format_status(status.Status.SUCCESS)}", 42.5),
        ("Task split-data cache hit (key=0123456789ab); skipping execution.", 43.0),
        (f"Executing task {name('evaluate-model')}", 50.0),
        (f"Task {name('evaluate-model')} finished with status "
         f"{logging_utils.format_status(status.Status.FAILURE)}", 57.0),
    ]  # fmt: skip
    assert all(clock.filter(record(text, at)) for text, at in lines)
    assert [(s.name, s.status, s.seconds) for s in clock.steps] == [
        ("train-model", "ran", 32.5),
        ("split-data", "cached", 0.0),
        ("evaluate-model", "failed", 7.0),
    ]


def test_a_failure_names_the_step_and_quotes_its_error() -> None:
    kfp_message = (
        "Pipeline 'scenerec-training' finished with status FAILURE. Inner task failed: 'ingest-data'."
    )
    log = [
        "    Traceback (most recent call last):",
        '      File "x.py", line 1, in <module>',
        "    scenerec.errors.DataError: interactions: missing file",
        "    items: column 'item_id' has 2 empty values",
        "    ",
        "03:26:38.000 - ERROR - Task 'ingest-data' finished with status FAILURE",
    ]
    assert _failure(kfp_message, log) == (
        "step ingest-data failed: DataError: interactions: missing file\n"
        "items: column 'item_id' has 2 empty values"
    )
    assert _failure(kfp_message, ["no traceback here"]) == "step ingest-data failed (its log is above)"


def test_the_cache_folder_follows_the_datas_bytes(small_synthetic: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_synthetic, data)
    first = cache_partition(data)
    assert cache_partition(data) == first
    (data / "truth.json").write_text("{}")
    assert cache_partition(data) != first
