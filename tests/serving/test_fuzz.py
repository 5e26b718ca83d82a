"""Schemathesis against the running predictor's own OpenAPI document: no request is a server error.

Every operation in `/openapi.json` gets valid and invalid requests (a fixed number per operation,
derandomized, so a run is repeatable); any 5xx answer fails the test, which lists each one. Bad
input must be a 4xx naming the field. Only `not_a_server_error` is checked: KServe's own schema is
too loose for the conformance checks.

Schemathesis' pytest loader (`from_fixture`) does not run under pytest 9, so the cases are drawn
with its documented Hypothesis strategies (`APIOperation.as_strategy`) inside one test.
"""

from __future__ import annotations

from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import APIOperation, BaseSchema, Case, GenerationMode, HookContext
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok

from tests.serving.conftest import Server

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 100  # valid and invalid together
FUZZ_CONFIG = {
    "checks": {"enabled": False, "not_a_server_error": {"enabled": True}},
    # unloading the only model is allowed by design and would leave the shared server empty
    "operations": [{"include-path-regex": "/unload$", "enabled": False}],
}
SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,  # the same cases on every run
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the first 5xx is reported as it was
    suppress_health_check=list(HealthCheck),
)


def served_api(server: Server) -> BaseSchema:
    config = schemathesis.Config.from_dict(FUZZ_CONFIG)
    api = schemathesis.openapi.from_url(f"{server.http}/openapi.json", config=config, timeout=10)

    @api.hook
    def map_body(context: HookContext, body: Any) -> Any:
        """V2 tensors whose shape matches their data, so the fuzz gets past the reshape to the values."""
        if isinstance(body, dict) and isinstance(body.get("inputs"), list):
            for tensor in body["inputs"]:
                if isinstance(tensor, dict) and isinstance(tensor.get("data"), list):
                    tensor["shape"] = [len(tensor["data"])]
        return body

    return api


def server_error(operation: APIOperation) -> str | None:
    """The first 5xx answer to this operation's valid and invalid cases, if any."""
    fixed = {"model_name": "scenerec"} if "{model_name}" in operation.path else None  # else: 404s
    valid = operation.as_strategy(generation_mode=GenerationMode.POSITIVE, path_parameters=fixed)
    invalid = operation.as_strategy(generation_mode=GenerationMode.NEGATIVE, path_parameters=fixed)

    @SETTINGS
    @hypothesis.given(case=valid | invalid)
    def fuzz(case: Case) -> None:
        case.call_and_validate(checks=[not_a_server_error], timeout=30)

    try:
        fuzz()
    except (Failure, FailureGroup) as e:
        return f"{operation.label}: {e}"
    return None


def test_the_document_describes_our_request_bodies(server: Server) -> None:
    paths = httpx.get(f"{server.http}/openapi.json", timeout=10).json()["paths"]
    v1 = paths["/v1/models/{model_name}:predict"]["post"]["requestBody"]["content"]["application/json"]
    assert set(v1["schema"]["properties"]["instances"]["items"]["properties"]) >= {"user_id", "scene", "k"}
    v2 = paths["/v2/models/{model_name}/infer"]["post"]["requestBody"]["content"]["application/json"]
    names = {t["properties"]["name"]["const"] for t in v2["schema"]["properties"]["inputs"]["items"]["oneOf"]}
    assert names == {"user_id", "scene", "k", "device", "timestamp", "diversity", "exclude", "categories"}


def test_no_request_is_a_server_error(server: Server) -> None:
    api = served_api(server)
    results = list(api.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results) >= 10, results  # KServe's V1, V2 and health routes, all valid
    found = [error for operation in operations if (error := server_error(operation)) is not None]
    assert not found, "\n\n".join(found)
