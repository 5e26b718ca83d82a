"""What one call may cost, and which lane it is scored in: limits with clear answers, and large
work kept away from small.

A call's cost is the number of items its answer can hold (instances x k, or the candidates when
fewer) and how many of those are explained (each explained item carries its score's parts). Past
`max_items`, `max_explained_items` or `max_answer_bytes` (an upper bound from the longest item
id) the call is refused before any work with a 413 naming the limit and the flag. The body size
limit itself is `--max_body_bytes` (serving/http.py).

Calls above `large_items` go to their own lane: one scoring thread of their own, one call at a
time, at most `max_large_queued` waiting or running (beyond: 429 with Retry-After). Small calls keep
the batched lane (serving/predictor.py), so they never queue behind a large one, and a large call
never deepens a small batch's retrieval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from grpc import StatusCode
from grpc_interceptor.exceptions import GrpcException
from kserve.errors import InvalidInput

from serving.requests import EXPLAINED_HISTORY, MAX_ID_LENGTH, Request
from serving.runtime import PART_NAMES

# Longest JSON text of one answer item besides its id: the score and, explained, each part and
# p_conversion, each a float of at most 24 characters (repr of a float64), with keys and commas,
# and whether the item was added after training.
_ITEM_BYTES = len('{"item_id":"","score":},') + 24
_PARTS_BYTES = (
    len(',"parts":{},"p_conversion":,"new":false') + 24 + sum(len(f'"{p}":,') + 24 for p in PART_NAMES)
)
_ANSWER_BYTES = 256  # one instance's envelope: model_version, every fallback reason, separators
# an explained item's title and category; an explained instance's provider, notice and history
_TEXTS_BYTES = len(',"title":"","category":""')
_NOTICE_BYTES = 128 + 5 * (MAX_ID_LENGTH * 6 + 4)  # at most 5 unknown categories named, escaped
_HISTORY_BYTES = len('{"item_id":"","title":"","category":"","scene":""},')
_EXPLAINED_ANSWER_BYTES = len(',"provider":"","history":[],"notice":""') + 64 + _NOTICE_BYTES


@dataclass(frozen=True)
class Limits:
    """Per-call limits (flags of `python -m serving`); defaults keep an answer under a megabyte."""

    max_items: int = 10_000
    max_explained_items: int = 2_000
    max_answer_bytes: int = 4 << 20
    large_items: int = 1_000
    max_large_queued: int = 4

    def __post_init__(self) -> None:
        for limit in fields(self):
            if getattr(self, limit.name) < 1:
                raise ValueError(f"{limit.name} must be >= 1, got {getattr(self, limit.name)}")


@dataclass(frozen=True)
class Cost:
    items: int
    explained_items: int
    answer_bytes: int


class LimitExceeded(InvalidInput):
    """A call larger than the limits: REST 413 (serving/http.py), gRPC INVALID_ARGUMENT."""


class Overloaded(GrpcException):
    """The large lane is full: REST 429 with Retry-After (serving/http.py), gRPC RESOURCE_EXHAUSTED."""

    status_code = StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, details: str, retry_after_s: int = 1) -> None:
        super().__init__(details=details)
        self.retry_after_s = retry_after_s


def cost(requests: Sequence[Request], n_items: int, longest_id: int, longest_text: int = 0) -> Cost:
    """The most a call's answer can hold (a catalogue of `n_items`): items, explained items, bytes.

    `longest_id` and `longest_text` are the longest item id and the longest title, category or
    scene name, as JSON text (escapes included)."""
    items = explained = explained_calls = 0
    for request in requests:
        n = min(request.k, n_items if request.candidates is None else len(request.candidates))
        items += n
        explained += n if request.explain else 0
        explained_calls += int(request.explain)
    history = EXPLAINED_HISTORY * (_HISTORY_BYTES + longest_id + 3 * longest_text)
    answer = (
        len(requests) * _ANSWER_BYTES
        + items * (_ITEM_BYTES + longest_id)
        + explained * (_PARTS_BYTES + _TEXTS_BYTES + 2 * longest_text)
        + explained_calls * (_EXPLAINED_ANSWER_BYTES + history)
    )
    return Cost(items, explained, answer)


def admit(
    requests: Sequence[Request], limits: Limits, n_items: int, longest_id: int, longest_text: int = 0
) -> Cost:
    """The call's cost, or LimitExceeded naming the limit that it passes and the flag that sets it."""
    found = cost(requests, n_items, longest_id, longest_text)
    if found.items > limits.max_items:
        raise LimitExceeded(
            f"instances x k: {found.items} items asked for, above the {limits.max_items} per call this "
            "server answers (--max_items); ask for fewer instances or a smaller k"
        )
    if found.explained_items > limits.max_explained_items:
        raise LimitExceeded(
            f"explain: {found.explained_items} explained items asked for, above the "
            f"{limits.max_explained_items} per call this server answers (--max_explained_items); "
            "explain fewer instances or a smaller k"
        )
    if found.answer_bytes > limits.max_answer_bytes:
        raise LimitExceeded(
            f"answer: up to {found.answer_bytes} bytes, above the {limits.max_answer_bytes} this server "
            "writes per call (--max_answer_bytes); ask for fewer items"
        )
    return found


def lane(found: Cost, limits: Limits) -> str:
    """ "large" for calls above `large_items` (an explained item counts as three), else "small"."""
    return "large" if found.items + 2 * found.explained_items > limits.large_items else "small"
