"""The explorer page's speed in a real browser: first paint, and a click to its answer on screen.

Starts `python -m serving` on loopback with a model and its published Feast repo, opens `/ui/` in
headless Debian Chromium (serving/ui/chromium.py) and reads the browser's own timings:
- a page load (fresh navigation, `--loads` times): `first-paint` and `first-contentful-paint`
  (performance.getEntriesByType('paint')), DOMContentLoaded, and when its first answer is on screen;
- a click (`--clicks` times, over the example users and scenes): the page's `scenerec:answer`
  measure, from the click to the next frame after the answer is drawn, split into the V1 fetch
  (resource timing of the call) and the rest (parse + render + that frame);
- the same for "compare scenes" (two instances in one V1 call).
Then it saves a screenshot of the page for the README (`--screenshot`, default docs/ui.png).

Usage: python benchmarks/ui.py [--model DIR --repo DIR] [--loads 10 --clicks 40]
Without --model it builds a world of its own once (benchmarks/out/ui: 1,000 users, the demo's
2,000-item catalogue, a model trained for 2 epochs: what the page costs does not depend on how
well the model ranks). Every loop is bounded and targets loopback only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table, write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `serving` is the package
from serving.launch import free_port, predictor_command, predictor_env, wait_until_ready  # noqa: E402
from serving.ui.chromium import answer_timings, console_errors, paint_timings, start_chromium  # noqa: E402

OUT = Path(__file__).parent / "out" / "ui"
WAIT_S = 30.0
# Click an element and return once the page counts its next answer (a MutationObserver, no polling).
CLICK_AND_WAIT = """
const [id, done] = arguments;
const count = () => Number(document.body.dataset.answers || 0);
const before = count();
const watch = new MutationObserver(() => { if (count() > before) { watch.disconnect(); done(true); } });
watch.observe(document.body, {attributes: true, attributeFilter: ["data-answers"]});
document.getElementById(id).click();
"""


def world(out: Path) -> tuple[Path, Path]:
    """(model dir, published feature repo) of the benchmark's own world, built once."""
    data, model, repo = out / "data", out / "model", out / "feature_repo"
    run = [sys.executable, "-m", "scenerec.cli"]
    if not (data / "truth.json").is_file():
        subprocess.run(
            [*run, "data", "synth", "--out", str(data), "--users", "1000", "--items", "2000"], check=True
        )
    if not (model / "manifest.json").is_file():
        settings = [
            "train.epochs=2",
            "train.ablations=[]",
            "train.cold_start_eval=false",
            "baselines.names=[popularity]",
        ]
        subprocess.run(
            [
                *run,
                "train",
                "--data",
                str(data),
                "--out",
                str(model),
                *(x for s in settings for x in ("--set", s)),
            ],
            check=True,
        )
    if not (repo / "data" / "sources" / "users.parquet").is_file():
        shutil.rmtree(repo, ignore_errors=True)
        shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
        subprocess.run(
            [*run, "features", "publish", "--data", str(data), "--model", str(model), "--repo", str(repo)],
            check=True,
        )
    return model, repo


def wait(driver: Any, script: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not driver.execute_script(script):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page did not get there in {WAIT_S:.0f} s: {script}")
        time.sleep(0.005)


def click(driver: Any, element_id: str) -> dict[str, float]:
    """Click, wait for the answer on screen; (click -> shown, its V1 fetch) in ms."""
    driver.execute_async_script(CLICK_AND_WAIT, element_id)  # no polling beside the page's own work
    fetch = driver.execute_script(
        "const e = performance.getEntriesByType('resource').filter(e => e.name.includes(':predict')).pop();"
        "return e.responseEnd - e.startTime;"
    )
    shown = answer_timings(driver)[-1]
    return {"shown_ms": shown, "fetch_ms": float(fetch), "render_ms": shown - float(fetch)}


def summary(name: str, values: list[float]) -> dict[str, Any]:
    a = np.asarray(values, dtype=float)
    return {
        "measure": name,
        "n": len(a),
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "max_ms": float(a.max()),
    }


def measure(driver: Any, url: str, loads: int, clicks: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        found.setdefault(key, []).append(value)

    for _ in range(loads):
        driver.get("about:blank")
        driver.get(url)
        wait(driver, "return document.body.dataset.answers === '1'")
        paints = paint_timings(driver)
        add("first-paint", paints["first-paint"])
        add("first-contentful-paint", paints["first-contentful-paint"])
        add(
            "DOMContentLoaded",
            driver.execute_script(
                "return performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"
            ),
        )
        add(
            "first answer shown (load)",
            driver.execute_script(
                "return performance.getEntriesByName('scenerec:answer')[0].startTime"
                " + performance.getEntriesByName('scenerec:answer')[0].duration"
            ),
        )
    users = driver.execute_script(
        "return [...document.querySelectorAll('#examples .chip')].map(b => b.dataset.user)"
    )
    scenes = driver.execute_script("return [...document.getElementById('scene').options].map(o => o.value)")
    for n in range(clicks):
        driver.execute_script(
            "document.getElementById('user').value = arguments[0];"
            "document.getElementById('scene').value = arguments[1];",
            users[n % len(users)],
            scenes[n % len(scenes)],
        )
        timing = click(driver, "go")
        add("click -> answer shown", timing["shown_ms"])
        add("  of which the V1 fetch", timing["fetch_ms"])
        add("  of which parse + render + frame", timing["render_ms"])
    click(driver, "mode-compare")
    for n in range(max(1, clicks // 4)):
        driver.execute_script("document.getElementById('user').value = arguments[0];", users[n % len(users)])
        add("compare click -> answer shown", click(driver, "go")["shown_ms"])
    click(driver, "mode-rank")
    return found


def screenshot(driver: Any, url: str, path: Path) -> None:
    """The README's picture: the page as it opens, with a non-default scene chosen."""
    driver.get(url)
    wait(driver, "return document.body.dataset.answers === '1'")
    scenes = driver.execute_script("return [...document.getElementById('scene').options].map(o => o.value)")
    chosen = next((s for s in scenes if s not in ("default", scenes[0])), scenes[0])
    driver.execute_script("document.getElementById('scene').value = arguments[0];", chosen)
    click(driver, "go")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1360, min(int(height) + 160, 2400))  # the whole page (+ the window frame)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model directory (default: build the benchmark's world)")
    parser.add_argument("--repo", type=Path, help="its published feature repo")
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--clicks", type=int, default=40)
    parser.add_argument("--screenshot", type=Path, default=ROOT / "docs" / "ui.png")
    args = parser.parse_args()
    model, repo = (args.model, args.repo) if args.model and args.repo else world(OUT)
    port, grpc = free_port(), free_port()
    log = OUT / "predictor.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as handle:
        server = subprocess.Popen(
            predictor_command(model, repo, port, grpc, "--device", "cpu"),
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=predictor_env(),
        )
    driver, browser, errors = None, None, []
    try:
        wait_until_ready(server, port, log)
        url = f"http://127.0.0.1:{port}/ui/"
        driver = start_chromium(window=(1360, 1020))
        driver.set_script_timeout(WAIT_S)
        browser = driver.capabilities.get("browserVersion")
        found = measure(driver, url, args.loads, args.clicks)
        errors = console_errors(driver)
        screenshot(driver, url, args.screenshot)
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=60)
    rows = [summary(name, values) for name, values in found.items()]
    print_table("explorer page (headless Chromium, ms)", rows)
    print(f"console errors: {len(errors)}; screenshot: {args.screenshot}")
    path = write_results(
        "ui",
        {
            "model": str(model),
            "loads": args.loads,
            "clicks": args.clicks,
            "rows": rows,
            "console_errors": errors,
            "browser": browser,
            "load_average_1_5_15": os.getloadavg(),  # a shared machine: what else was running
        },
    )
    print(f"results: {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
