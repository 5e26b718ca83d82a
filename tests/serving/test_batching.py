"""`--batching auto`: a lone request is scored on the event loop, requests under load in one batch.

In process, with the real model directory, Feast store (SQLite) and ONNX Runtime sessions; which
thread scored each call and how many requests it held are read by wrapping `recommend`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from serving.predictor import ScenerecModel

pytestmark = pytest.mark.integration


def scored_calls(predictor: ScenerecModel) -> list[tuple[str, int]]:
    """(thread name, requests in the call) of every `recommend` from now on."""
    calls: list[tuple[str, int]] = []
    recommend = predictor.recommend

    def recording(requests: list[Any], record: bool = True) -> list[dict[str, Any]]:
        calls.append((threading.current_thread().name, len(requests)))
        return recommend(requests, record)

    predictor.recommend = recording  # type: ignore[method-assign]
    return calls


def body(n: int) -> dict[str, Any]:
    return {"instances": [{"user_id": f"u{n}", "scene": "home", "k": 5}]}


@pytest.fixture(scope="module")
def loaded(served_model: tuple[Path, Path, Path]) -> dict[str, ScenerecModel]:
    _, model, repo = served_model
    out = {}
    for mode in ("auto", "on", "off"):
        out[mode] = ScenerecModel("scenerec", model, feature_repo=repo, device="cpu", batching=mode)
        out[mode].load()
    return out


def test_auto_scores_a_lone_request_inline_and_a_burst_in_one_batch(loaded: dict[str, ScenerecModel]) -> None:
    predictor = loaded["auto"]
    calls = scored_calls(predictor)

    async def scenario() -> list[Any]:
        time.sleep(0.01)  # idle: the next request is alone
        lone = await predictor.predict(body(0))
        burst = await asyncio.gather(*(predictor.predict(body(n)) for n in range(1, 9)))
        return [lone, *burst]

    answers = asyncio.run(scenario())
    main = threading.main_thread().name
    # the burst's first request finds the last scoring under 1 ms ago (a stall of the loop could
    # let it go inline alone): the rest wait for the thread and are scored in one run
    assert calls[0] == (main, 1), calls
    assert calls[-1][0] == "scenerec-scoring_0" and calls[-1][1] >= 7, calls
    assert sum(size for _, size in calls) == 9
    assert all(len(a["predictions"][0]["items"]) == 5 for a in answers)


def test_auto_sends_an_idle_request_to_the_thread_when_other_calls_are_in_flight(
    loaded: dict[str, ScenerecModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a closed loop the gap since the last scoring can exceed idle_s while other calls are
    still being parsed: the in-flight count (kept by serving.request_metrics) decides."""
    import serving.request_metrics as request_metrics

    predictor = loaded["auto"]
    calls = scored_calls(predictor)

    async def scenario() -> None:
        time.sleep(0.01)  # idle for 10 ms: alone, this would be scored inline
        await predictor.predict(body(0))

    monkeypatch.setattr(request_metrics, "_in_flight", 3)  # this call and two others on the wire
    asyncio.run(scenario())
    monkeypatch.setattr(request_metrics, "_in_flight", 1)  # this call only
    asyncio.run(scenario())
    assert [name for name, _ in calls] == ["scenerec-scoring_0", threading.main_thread().name], calls


@pytest.mark.parametrize(("mode", "inline"), [("on", False), ("off", True)])
def test_on_always_uses_the_thread_and_off_never(
    loaded: dict[str, ScenerecModel], mode: str, inline: bool
) -> None:
    predictor = loaded[mode]
    calls = scored_calls(predictor)

    async def scenario() -> None:
        time.sleep(0.01)
        await predictor.predict(body(0))
        await asyncio.gather(*(predictor.predict(body(n)) for n in range(1, 4)))

    asyncio.run(scenario())
    threads = {name for name, _ in calls}
    assert threads == ({threading.main_thread().name} if inline else {"scenerec-scoring_0"}), calls
    assert (max(size for _, size in calls) > 1) is (not inline)


def test_an_unknown_batching_mode_is_refused(served_model: tuple[Path, Path, Path]) -> None:
    with pytest.raises(ValueError, match="batching must be one of"):
        ScenerecModel("scenerec", served_model[1], batching="sometimes")
