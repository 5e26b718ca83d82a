"""The explorer page (serving/ui/) in a real browser: headless Debian Chromium driven by Selenium,
against a real `python -m serving` on loopback (the session's shared server).

Each test does what a person would (pick a user, a scene, click) and checks the page against the
V1 answer to the very request the page sent (shown under its answer): same rows in the same
order, same scores, bars whose segments are the answer's parts. The console must stay free of
errors throughout. Without Chromium the browser tests skip, naming what is missing, and fail under
CI=true. Screenshots and the measured timings go to build/test-artifacts/ (the figures of record
come from benchmarks/ui.py, not from here).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.ui import STATIC, install_ui_routes
from serving.ui.chromium import NoChromium, answer_timings, console_errors, paint_timings, start_chromium
from tests.serving.conftest import ROOT, Server

ARTIFACTS = ROOT / "build" / "test-artifacts"
WAIT_S = 30


# ---- without a browser -------------------------------------------------------------------------
def test_the_routes_serve_the_page_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    import serving.events_route

    # no model served (other tests load predictors in this process, which register themselves)
    monkeypatch.setattr(serving.events_route, "SERVED", {})
    app = FastAPI()
    install_ui_routes(app)
    client = TestClient(app)
    assert client.get("/ui", follow_redirects=False).headers["location"] == "ui/"
    page = client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/ui/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/ui/secret.txt").status_code == 404
    assert client.get("/ui/config.json").status_code == 503  # no model loaded yet


def test_no_ui_leaves_the_routes_out() -> None:
    """`--no_ui` reaches `install_http_extras(ui=False)`: KServe's app gets our other routes only."""
    script = (
        "from kserve import model_server\n"
        "from serving.http import install_http_extras\n"
        "install_http_extras(1 << 20, ui=False)\n"
        "print(sorted(getattr(r, 'path', '') for r in model_server.app.routes))\n"
    )
    command = [sys.executable, "-c", script]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    paths = result.stdout.splitlines()[-1]
    assert "'/metrics'" in paths and "/ui" not in paths


def test_the_page_uses_nothing_from_outside() -> None:
    for path in STATIC.iterdir():
        text = path.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path.name
        assert "innerHTML" not in text, f"{path.name}: answers are text, never markup"


# ---- in a browser --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module; a missing one skips (fails under CI=true)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        driver = start_chromium(log_path=ARTIFACTS / "chromedriver.log")
    except NoChromium as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and no browser for the UI tests: {e}")
        pytest.skip(str(e))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser: Any, server: Server) -> Any:
    """The page opened once: its set-up read and its first answer (the first example user) shown."""
    browser.get(f"{server.http}/ui")
    wait_for(
        browser, "return document.body.dataset.answers === '1' || document.body.dataset.state === 'error'"
    )
    assert browser.execute_script("return document.body.dataset.state") == "ready", text_of(
        browser, "message"
    )
    return browser


def wait_for(driver: Any, script: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(script))


def text_of(driver: Any, element_id: str) -> str:
    return str(driver.execute_script(f"return document.getElementById('{element_id}').textContent"))


def fill(driver: Any, element_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(value)


def choose(driver: Any, element_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, element_id)).select_by_value(value)


def click_and_wait(driver: Any, element_id: str = "go") -> dict[str, Any]:
    """Click, wait for the next answer on screen, return the V1 body the page sent."""
    from selenium.webdriver.common.by import By

    before = driver.execute_script("return Number(document.body.dataset.answers || 0)")
    driver.find_element(By.ID, element_id).click()
    wait_for(driver, f"return Number(document.body.dataset.answers || 0) > {before}")
    assert driver.execute_script("return document.getElementById('message').hidden"), text_of(
        driver, "message"
    )
    return dict(json.loads(text_of(driver, "request-body")))


def v1(server: Server, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = httpx.post(f"{server.http}/v1/models/scenerec:predict", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return list(response.json()["predictions"])


def assert_no_console_errors(driver: Any) -> None:
    errors = console_errors(driver)
    assert not errors, f"console errors: {errors}"


def widest_stacks(items: list[dict[str, Any]]) -> tuple[float, float]:
    """The bars' common scale: the widest stacks of positive and of negative segments (parts + bias)."""
    pos = neg = 0.0
    for item in items:
        values = [*item["parts"].values(), item["score"] - sum(item["parts"].values())]
        pos = max(pos, sum(v for v in values if v > 0))
        neg = max(neg, -sum(v for v in values if v < 0))
    return pos, neg


def setup_of(server: Server) -> dict[str, Any]:
    return dict(httpx.get(f"{server.http}/ui/config.json", timeout=10).json())


def test_the_page_shows_the_served_model_and_its_choices(page: Any, server: Server) -> None:
    config = setup_of(server)
    assert text_of(page, "model-name") == config["model"] == "scenerec"
    assert text_of(page, "model-version") == config["model_version"]
    assert text_of(page, "model-provider") == config["provider"] == "CPUExecutionProvider"
    scenes = page.execute_script("return [...document.getElementById('scene').options].map(o => o.value)")
    assert scenes == config["scenes"] and config["default_scene"] in scenes
    examples = page.execute_script(
        "return [...document.querySelectorAll('#examples .chip')].map(b => b.dataset.user)"
    )
    assert examples[:-1] == [u["user_id"] for u in config["example_users"]] and len(examples) > 1
    origins = page.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)"
    )
    assert set(origins) == {server.http}, "everything from the predictor itself"
    paints = paint_timings(page)
    assert paints.get("first-contentful-paint", 0) > 0, paints
    assert_no_console_errors(page)


def test_a_ranking_is_the_v1_answer_to_the_same_request(page: Any, server: Server) -> None:
    config = setup_of(server)
    user = config["example_users"][1]["user_id"]
    scene = next(s for s in config["scenes"] if s != config["default_scene"])
    fill(page, "user", user)
    choose(page, "scene", scene)
    choose(page, "device", config["devices"][-1])
    fill(page, "hour", "21")
    fill(page, "k", "7")
    body = click_and_wait(page)
    instance = body["instances"][0]
    assert (instance["user_id"], instance["scene"], instance["k"]) == (user, scene, 7)
    assert instance["context"]["device"] == config["devices"][-1] and instance["explain"] is True
    assert instance["context"]["timestamp"] % 86400 == 21 * 3600
    answer = v1(server, body)[0]
    rows = page.execute_script(
        """return [...document.querySelectorAll('#items tbody tr')].map(r => {
             const bar = r.querySelector('.bar').getBoundingClientRect().width;
             return {id: r.dataset.itemId, score: Number(r.querySelector('.score').dataset.score),
                     text: r.querySelector('.score').textContent,
                     title: r.querySelector('.title').textContent,
                     pos: Number(r.querySelector('.bar').dataset.pos),
                     neg: Number(r.querySelector('.bar').dataset.neg),
                     segs: [...r.querySelectorAll('.seg')].map(s => ({part: s.dataset.part,
                       value: Number(s.dataset.value), share: s.getBoundingClientRect().width / bar}))};
           });"""
    )
    assert [r["id"] for r in rows] == [i["item_id"] for i in answer["items"]] and len(rows) == 7
    for row, item in zip(rows, answer["items"], strict=True):
        assert row["score"] == item["score"] and row["text"] == f"{item['score']:.3f}"
        assert row["title"] == (item.get("title") or item["item_id"])
        values = {s["part"]: s["value"] for s in row["segs"]}
        assert {k: values[k] for k in item["parts"]} == item["parts"]
        assert math.isclose(sum(values.values()), item["score"], abs_tol=1e-9), "segments add up to the score"
        span = row["pos"] + row["neg"]
        for seg in row["segs"]:  # each segment's length is its share of the common scale
            assert math.isclose(seg["share"], abs(seg["value"]) / span, abs_tol=0.01), seg
    widest = widest_stacks(answer["items"])
    assert math.isclose(rows[0]["pos"], widest[0], rel_tol=1e-9)
    assert math.isclose(rows[0]["neg"], widest[1], rel_tol=1e-9)
    history = page.execute_script(
        "return [...document.querySelectorAll('#history-items li')].map(l => l.dataset.itemId)"
    )
    if "history" in answer:
        assert history == [h["item_id"] for h in answer["history"]][:20] and history
    assert text_of(page, "model-version") == answer["model_version"]
    assert page.execute_script("return document.getElementById('fallback').hidden") is (
        not answer["fallback"]
    )
    page.save_screenshot(str(ARTIFACTS / "ui.png"))
    assert answer_timings(page), "the page measures ask -> answer"
    assert_no_console_errors(page)


def test_compare_scenes_puts_two_top_10s_side_by_side(page: Any, server: Server) -> None:
    config = setup_of(server)
    user = config["example_users"][0]["user_id"]
    fill(page, "user", user)
    click_and_wait(page, "mode-compare")  # asks at once, with the scenes chosen so far
    scene_a, scene_b = config["scenes"][0], config["scenes"][-1]
    choose(page, "scene", scene_a)
    choose(page, "scene-b", scene_b)
    body = click_and_wait(page)
    assert [i["scene"] for i in body["instances"]] == [scene_a, scene_b]
    assert {i["k"] for i in body["instances"]} == {10} and {i["user_id"] for i in body["instances"]} == {user}
    answers = v1(server, body)
    for column, answer in zip(("compare-a", "compare-b"), answers, strict=True):
        ids = page.execute_script(
            f"return [...document.querySelectorAll('#{column} li')].map(l => [l.dataset.itemId, "
            "Number(l.dataset.score), l.classList.contains('shared')])"
        )
        other = answers[1] if answer is answers[0] else answers[0]
        shared = {i["item_id"] for i in other["items"]}
        assert ids == [[i["item_id"], i["score"], i["item_id"] in shared] for i in answer["items"]]
    assert page.execute_script("return document.getElementById('ranking').hidden") is True
    page.save_screenshot(str(ARTIFACTS / "ui-compare.png"))
    click_and_wait(page, "mode-rank")
    assert_no_console_errors(page)


def test_an_unknown_user_is_answered_and_the_fallback_shown(page: Any, server: Server) -> None:
    fill(page, "user", f"nobody-{uuid.uuid4().hex[:8]}")
    body = click_and_wait(page)
    answer = v1(server, body)[0]
    assert "unknown_user" in answer["fallback"]
    assert (
        page.execute_script("return document.getElementById('fallback').dataset.reasons")
        == answer["fallback"]
    )
    assert "unknown_user" in text_of(page, "fallback") and "cold start" in text_of(page, "fallback")
    rows = page.execute_script(
        "return [...document.querySelectorAll('#items tbody tr')].map(r => r.dataset.itemId)"
    )
    assert rows == [i["item_id"] for i in answer["items"]]
    assert page.execute_script("return document.querySelectorAll('#history-items li').length") == 0
    assert_no_console_errors(page)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("user", "   ", "user id: required"),
        ("k", "0", "k: expected an integer in 1..1000, got 0"),
        ("k", "2.5", "k: expected an integer in 1..1000, got 2.5"),
        ("hour", "24", "hour: expected an integer in 0..23, got 24"),
    ],
)
def test_bad_input_shows_a_message_naming_the_field_and_sends_nothing(
    page: Any, field: str, value: str, message: str
) -> None:
    from selenium.webdriver.common.by import By

    fill(page, "user", "u1")
    fill(page, field, value)
    sent = "return performance.getEntriesByType('resource').filter(e => e.name.includes(':predict')).length"
    before = page.execute_script(sent)
    page.find_element(By.ID, "go").click()
    wait_for(page, "return !document.getElementById('message').hidden")
    assert message in text_of(page, "message")
    assert page.execute_script(sent) == before, "nothing was sent"
    fill(page, field, {"user": "u1", "k": "10", "hour": "12"}[field])
    assert_no_console_errors(page)
