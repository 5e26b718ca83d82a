"""The feature store's circuit breaker, driven by a fake clock (no threads, no sleeps)."""

from __future__ import annotations

import pytest

from serving.breaker import BreakerSettings, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Store:
    """A probe target that fails while `down`."""

    def __init__(self) -> None:
        self.down, self.probes = True, 0

    def probe(self) -> None:
        self.probes += 1
        if self.down:
            raise ConnectionError("still down")


def breaker(clock: Clock, store: Store, changes: list[str]) -> CircuitBreaker:
    settings = BreakerSettings(failures=3, window_s=10, backoff_s=0.5, max_backoff_s=2)
    made = CircuitBreaker(store.probe, settings, on_change=changes.append, clock=clock)
    made._ensure_thread = lambda: None  # type: ignore[method-assign]  # probes are driven by the test
    return made


def test_opens_only_after_n_failures_within_the_window() -> None:
    clock, store, changes = Clock(), Store(), []
    b = breaker(clock, store, changes)
    b.failure("timeout")
    clock.now += 11  # the first failure falls out of the window
    b.failure("timeout")
    b.failure("timeout")
    assert b.allow() and b.state == "closed"
    b.success()  # a success forgets earlier failures
    b.failure("timeout")
    b.failure("timeout")
    assert b.allow()
    b.failure("timeout: 50 ms")
    assert not b.allow() and b.state == "open" and changes == ["open"]
    status = b.status()
    assert status["state"] == "open" and status["last_error"] == "timeout: 50 ms"
    assert status["next_probe_in_s"] == 0.5


def test_probes_back_off_doubling_to_the_cap_then_close() -> None:
    clock, store, changes = Clock(), Store(), []
    b = breaker(clock, store, changes)
    for _ in range(3):
        b.failure("refused")
    assert not b.probe_once() and store.probes == 0  # not due yet
    waits = []
    for _ in range(4):
        waits.append(b.status()["next_probe_in_s"])
        clock.now += float(waits[-1])  # type: ignore[arg-type]
        assert not b.probe_once()
    assert waits == [0.5, 1.0, 2.0, 2.0] and store.probes == 4
    assert b.status()["last_error"] == "still down"
    store.down = False
    clock.now += 2
    assert b.probe_once() and b.allow() and b.status() == {"state": "closed"}
    assert changes == ["open", *["half_open", "open"] * 4, "half_open", "closed"]
    for _ in range(3):  # reopening starts from the first backoff again
        b.failure("refused")
    assert b.status()["next_probe_in_s"] == 0.5


def test_failures_while_open_do_not_extend_it() -> None:
    clock, store, changes = Clock(), Store(), []
    b = breaker(clock, store, changes)
    for _ in range(3):
        b.failure("refused")
    b.failure("late")  # a read that started before the opening
    assert changes == ["open"] and b.status()["next_probe_in_s"] == 0.5


def test_the_probe_thread_closes_a_recovered_circuit() -> None:
    """The real daemon thread, with the real clock and a short backoff."""
    import time

    store = Store()
    b = CircuitBreaker(store.probe, BreakerSettings(failures=1, backoff_s=0.01, max_backoff_s=0.02))
    try:
        b.failure("refused")
        deadline = time.monotonic() + 5
        while store.probes < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.probes >= 2 and not b.allow()
        store.down = False
        while not b.allow() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert b.allow()
    finally:
        b.stop()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"failures": 0}, "failures must be >= 1"),
        ({"backoff_s": 0}, "0 < backoff"),
        ({"backoff_s": 9, "max_backoff_s": 1}, "<= max"),
        ({"window_s": 0}, "window must be > 0"),
    ],
)
def test_bad_settings_name_the_setting(settings: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BreakerSettings(**settings)  # type: ignore[arg-type]
