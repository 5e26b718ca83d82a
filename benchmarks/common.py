"""What every benchmark shares: the machine description, a table printer and the JSON writer."""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path(__file__).parent / "results"
SERVING_WORLD = Path(__file__).parent / "out" / "serving"


def machine() -> dict[str, Any]:
    """The machine a figure was measured on (cores, memory, CPU model, Python, torch threads)."""
    import torch

    cpu = ""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor()
    mem_kb = (
        next(
            (
                int(line.split()[1])
                for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")
            ),
            0,
        )
        if Path("/proc/meminfo").exists()
        else 0
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "commit": commit,
    }


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in rows[0]:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    Console(width=200).print(table)


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, sort_keys=True) + "\n")
    return path


def serving_world(out: Path = SERVING_WORLD) -> tuple[Path, Path]:
    """(data, model) of the serving benchmarks' world: 3,000 users, 10,000 items, a model trained
    for 3 epochs (what serving costs does not depend on how well it ranks). Built once."""
    import sys

    data, model = out / "data", out / "model"
    run = [sys.executable, "-m", "scenerec.cli"]
    if not (data / "truth.json").is_file():
        subprocess.run(
            [*run, "data", "synth", "--out", str(data), "--users", "3000", "--items", "10000"], check=True
        )
    manifest = model / "manifest.json"
    if manifest.is_file() and "fresh_ranker" not in json.loads(manifest.read_text())["graphs"]:
        shutil.rmtree(model)  # exported before new items could be served: train it again
    if not manifest.is_file():
        settings = ["train.epochs=3", "train.ablations=[]", "train.cold_start_eval=false"]
        overrides = [x for s in [*settings, "baselines.names=[popularity]"] for x in ("--set", s)]
        subprocess.run([*run, "train", "--data", str(data), "--out", str(model), *overrides], check=True)
    return data, model
