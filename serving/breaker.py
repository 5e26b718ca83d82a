"""A circuit breaker for the feature store: after repeated failures, stop asking and probe aside.

A hung store (packets dropped, a stopped Redis) costs every read its full deadline. Past
`failures` failed reads within `window_s` the breaker opens: requests skip the store at once
(answers degrade with `fallback: feature_store_unavailable`) while a background thread probes it,
waiting `backoff_s` before the first probe and doubling the wait after each failed one, up to
`max_backoff_s`. The first successful probe closes the breaker. No request ever waits for a probe.

    closed --(failures within window)--> open --(probe due)--> half_open --ok--> closed
                                          ^---------------------- fail ----------'
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

STATES = ("closed", "open", "half_open")


@dataclass(frozen=True)
class BreakerSettings:
    """When to open (`failures` within `window_s`) and how often to probe once open."""

    # One: a hung store costs every read its whole deadline (on the event loop when the server
    # scores inline), so the first timeout opens; a blip costs one backoff of degraded answers.
    failures: int = 1
    window_s: float = 10.0
    backoff_s: float = 0.25
    max_backoff_s: float = 5.0

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError(f"breaker failures must be >= 1, got {self.failures}")
        if not 0 < self.backoff_s <= self.max_backoff_s:
            raise ValueError(
                f"breaker backoff must satisfy 0 < backoff ({self.backoff_s}) <= max ({self.max_backoff_s})"
            )
        if self.window_s <= 0:
            raise ValueError(f"breaker window must be > 0 s, got {self.window_s}")


class CircuitBreaker:
    """Thread-safe state of one dependency; `probe` is called from the breaker's own thread only."""

    def __init__(
        self,
        probe: Callable[[], object],
        settings: BreakerSettings = BreakerSettings(),
        on_change: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings, self._probe, self._on_change, self._clock = settings, probe, on_change, clock
        self._lock = threading.Lock()
        self._failures: deque[float] = deque()
        self._state = "closed"
        self._backoff = settings.backoff_s
        self._next_probe = 0.0
        self._opened_at = 0.0
        self._last_error = ""
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def state(self) -> str:
        return self._state

    def allow(self) -> bool:
        """May a request read the store now? Only while closed: open and half-open are the probe's."""
        return self._state == "closed"

    def success(self) -> None:
        if self._failures:
            with self._lock:
                self._failures.clear()

    def failure(self, error: BaseException | str) -> None:
        """A request's read failed; opens the breaker once `failures` fell within `window_s`."""
        now = self._clock()
        with self._lock:
            self._last_error = str(error)
            if self._state != "closed":
                return
            self._failures.append(now)
            while self._failures and now - self._failures[0] > self.settings.window_s:
                self._failures.popleft()
            if len(self._failures) < self.settings.failures:
                return
            self._failures.clear()
            self._backoff = self.settings.backoff_s
            self._next_probe = now + self._backoff
            self._opened_at = now
            self._set("open")
        log.warning(
            "feature store circuit open after %d failures within %.0f s (last: %s); "
            "probing every %.2f-%.0f s",
            self.settings.failures,
            self.settings.window_s,
            self._last_error,
            self.settings.backoff_s,
            self.settings.max_backoff_s,
        )
        self._ensure_thread()

    def status(self) -> dict[str, object]:
        """For readiness detail: the state, the last error and when the next probe is due."""
        now = self._clock()
        detail: dict[str, object] = {"state": self._state}
        if self._state != "closed":
            detail["open_for_s"] = round(now - self._opened_at, 3)
            detail["next_probe_in_s"] = round(max(0.0, self._next_probe - now), 3)
            detail["last_error"] = self._last_error
        return detail

    def probe_once(self) -> bool:
        """One probe if one is due (what the thread runs; tests call it with a fake clock)."""
        with self._lock:
            if self._state != "open" or self._clock() < self._next_probe:
                return False
            self._set("half_open")
        try:
            self._probe()
        except Exception as e:  # any failure of the store's client keeps the circuit open
            with self._lock:
                self._last_error = str(e)
                self._backoff = min(self._backoff * 2, self.settings.max_backoff_s)
                self._next_probe = self._clock() + self._backoff
                self._set("open")
            return False
        with self._lock:
            self._set("closed")
        log.warning("feature store circuit closed: the probe read succeeded")
        return True

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def _set(self, state: str) -> None:  # under the lock
        self._state = state
        if self._on_change is not None:
            self._on_change(state)

    def _ensure_thread(self) -> None:
        """One long-lived daemon thread per breaker, started at the first opening."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="scenerec-store-probe", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while not self._stopped:
            wait = None if self._state == "closed" else self._next_probe - self._clock()
            if wait is None or wait > 0:
                self._wake.wait(wait)  # closed: until the next opening; open: until the probe is due
                self._wake.clear()
                continue
            self.probe_once()
