"""The large-call lane on a real predictor: small calls do not wait behind large ones, and a full
lane answers 429 with Retry-After instead of queueing without bound."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import start_server

pytestmark = pytest.mark.integration

LARGE = {"instances": [{"user_id": f"u{n}", "k": 150, "explain": True} for n in range(256)]}


def test_small_calls_overtake_large_ones_and_a_full_lane_sheds(
    served_model: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, model, repo = served_model
    server = start_server(
        model,
        repo,
        tmp_path / "predictor.log",
        *("--large_items", "100", "--max_large_queued", "1"),
        *("--max_items", "50000", "--max_explained_items", "50000", "--max_answer_bytes", str(64 << 20)),
    )
    url = f"{server.http}/v1/models/scenerec:predict"
    try:
        finished: dict[str, float] = {}
        answered: list[httpx.Response] = []

        def large() -> None:
            answered.append(httpx.post(url, json=LARGE, timeout=120))
            finished["large"] = time.monotonic()

        first = threading.Thread(target=large)
        first.start()
        deadline = time.monotonic() + 30  # until the large call holds the lane
        while (
            'scenerec_large_calls_in_lane{model="scenerec"} 1.0'
            not in httpx.get(f"{server.http}/metrics", timeout=10).text
        ):
            assert time.monotonic() < deadline and first.is_alive(), "the large call never reached its lane"
            time.sleep(0.01)
        shed = httpx.post(url, json=LARGE, timeout=60)
        assert shed.status_code == 429, shed.text[:300]
        assert shed.headers["retry-after"] == "1" and "--max_large_queued 1" in shed.json()["error"]
        small_done = []
        with httpx.Client(timeout=60) as client:  # small calls, one after another, while it runs
            while first.is_alive() and len(small_done) < 200:
                small = client.post(url, json={"instances": [{"user_id": "u1", "k": 5}]})
                assert small.status_code == 200 and len(small.json()["predictions"][0]["items"]) == 5
                small_done.append(time.monotonic())
        first.join(timeout=120)
        (response,) = answered
        assert response.status_code == 200, response.text[:300]
        assert len(response.json()["predictions"]) == len(LARGE["instances"])
        # one lane would have held every small call until the large one was answered
        assert sum(done < finished["large"] for done in small_done) >= 3, (small_done, finished)
        text = httpx.get(f"{server.http}/metrics", timeout=10).text
        assert 'scenerec_shed_calls_total{model="scenerec"} 1.0' in text
        assert 'scenerec_responses_total{model="scenerec",protocol="v1",status="429"} 1.0' in text
        assert 'scenerec_large_calls_in_lane{model="scenerec"} 0.0' in text
    finally:
        assert server.stop() in (0, -15)
