"""The predictor's Prometheus metrics: one histogram per request stage, counters by bounded labels.

Buckets start at 50 microseconds: the stages here take well under a millisecond, and
prometheus_client's default buckets (5 ms and up) would put every one of them in the first bucket.
Labels are bounded: model (served models, else "other"), protocol, code, scene (known scenes, else
"other"), outcome, reason, feature; never a user or item id. Two views of time: `scenerec_request_*`
per inference call as the client sees it, `scenerec_batch_*` per scoring batch (where time goes).
Feast's own metric families (declared at its import, never updated by the predictor) are left out
of the page.

With several server processes (`--workers N`), PROMETHEUS_MULTIPROC_DIR must be set before this
module is imported (serving/__main__.py does it); `/metrics` then aggregates every process. The
directory is captured at import: importing Feast sets PROMETHEUS_MULTIPROC_DIR to a temporary
directory of its own, which would otherwise turn a single process's /metrics page empty.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.0002,
    0.0003,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
# Per scoring batch (one ONNX run per graph for every request scored together): where the time goes.
STAGES = ("feature_read", "user_tower", "retrieval", "ranking")

STAGE_SECONDS = {
    stage: Histogram(
        f"scenerec_batch_{stage}_seconds",
        f"Time a scoring batch spent in the {stage.replace('_', ' ')} stage",
        ["model"],
        buckets=LATENCY_BUCKETS,
    )
    for stage in STAGES
}
BATCH_SECONDS = Histogram(
    "scenerec_batch_seconds",
    "Time to score one batch of requests, features to top-k (queueing not included)",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "scenerec_batch_size",
    "Requests scored together in one ONNX run",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
# Per request, as the client sees it (serving/request_metrics.py): one observation per inference
# call, from its first byte read to its last byte written, on every path (V1, V2 REST, V2 gRPC).
REQUEST_SECONDS = Histogram(
    "scenerec_request_seconds",
    "Inference calls by protocol and status class (2xx, 4xx, 5xx): time from request to answer",
    ["model", "protocol", "code"],
    buckets=LATENCY_BUCKETS,
)
RESPONSES = Counter(
    "scenerec_responses_total",
    "Inference answers by protocol and exact status (HTTP code, or gRPC status name)",
    ["model", "protocol", "status"],
)
LARGE_IN_LANE = Gauge(
    "scenerec_large_calls_in_lane",
    "Large calls (serving/admission.py) waiting or being scored on their own lane",
    ["model"],
    multiprocess_mode="livesum",
)
EVENTS = Counter(
    "scenerec_events_total",
    "Events pushed to POST /v1/models/{name}/events by outcome (accepted, duplicate, unknown_item, "
    "refused calls, store_unavailable calls)",
    ["model", "outcome"],
)
MODEL_SWAPS = Counter(
    "scenerec_model_swaps_total",
    "Model version swaps by outcome (swapped; refused: the new version failed a check, the old serves)",
    ["model", "outcome"],
)
ITEM_CHANGES = Counter(
    "scenerec_item_changes_total",
    "Catalogue changes through POST /v1/models/{name}/items by outcome (add, hide, show, remove; "
    "refused and store_unavailable calls)",
    ["model", "outcome"],
)
CATALOGUE_ITEMS = Gauge(
    "scenerec_catalogue_items",
    "Items served beside the trained catalogue: added (after training) and hidden",
    ["model", "kind"],
    multiprocess_mode="max",
)
SHED = Counter("scenerec_shed_calls_total", "Large calls refused with 429: their lane was full", ["model"])
REQUESTS = Counter(
    "scenerec_requests_total", "Recommendation requests by scene and outcome", ["model", "scene", "outcome"]
)
RERANKED = Counter(
    "scenerec_reranked_requests_total",
    "Requests answered with a ranking option (diversity, exclude, categories) by option",
    ["model", "option"],
)
SHORT_ANSWERS = Counter(
    "scenerec_short_answers_total",
    "Requests whose filters (exclude, categories) left fewer than the k items asked for",
    ["model"],
)
FALLBACKS = Counter(
    "scenerec_fallbacks_total", "Degraded or cold-start answers by reason", ["model", "reason"]
)
MISSING_FEATURES = Counter(
    "scenerec_missing_features_total", "Features absent from the online store", ["model", "feature"]
)
FEATURE_READ_ERRORS = Counter(
    "scenerec_feature_read_errors_total",
    "Failed batch reads of the online store by kind (timeout, error)",
    ["model", "kind"],
)
FEATURE_STORE_CIRCUIT = Gauge(
    "scenerec_feature_store_circuit",
    "The feature store's circuit breaker: 1 for its current state (closed, open, half_open)",
    ["model", "state"],
    multiprocess_mode="max",
)
PROVIDER = Gauge(
    "scenerec_onnx_provider_info",
    "ONNX Runtime execution provider in use (1) per graph",
    ["model", "graph", "requested", "provider"],
    multiprocess_mode="max",
)
MODEL_INFO = Gauge(
    "scenerec_model_info", "Model version being served (1)", ["model", "version"], multiprocess_mode="max"
)
READY = Gauge(
    "scenerec_model_ready",
    "1 when the model, its sessions and a feature round trip are up",
    ["model"],
    multiprocess_mode="min",
)


MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def exposition(accept: str | None) -> tuple[bytes, str]:
    """The metrics page: every process's metrics in multiprocess mode, this process's otherwise."""
    source: CollectorRegistry = REGISTRY
    if MULTIPROC_DIR:
        source = CollectorRegistry()
        multiprocess.MultiProcessCollector(source, path=MULTIPROC_DIR)
    encoder, content_type = choose_encoder(accept or "")
    return encoder(_WithoutFeast(source)), content_type


class _WithoutFeast:
    """A registry's families minus Feast's (`feast_*`: its SDK's and feature server's, all zero here)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        return (family for family in self.registry.collect() if not family.name.startswith("feast_"))
