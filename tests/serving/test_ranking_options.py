"""Per-request ranking options: `diversity`, `exclude`, `categories`, and what explained answers carry.

In process with the real model directory, Feast store (SQLite) and ONNX Runtime sessions, plus
the real server for the protocols (V1, V2 REST, V2 gRPC), /metrics and /openapi.json.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from kserve.errors import InvalidInput

from scenerec.metrics import intra_list_diversity
from serving.predictor import ScenerecModel
from tests.serving.conftest import Server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def predictor(served_model: tuple[Path, Path, Path]) -> ScenerecModel:
    _, model, repo = served_model
    loaded = ScenerecModel("scenerec", model, feature_repo=repo, device="cpu", batching="off")
    loaded.load()
    return loaded


@pytest.fixture(scope="module")
def users(served_model: tuple[Path, Path, Path]) -> list[str]:
    log = pd.read_parquet(served_model[0] / "interactions.parquet")
    return sorted(log["user_id"].astype(str).unique())[:40]


def answer(predictor: ScenerecModel, **instance: Any) -> dict[str, Any]:
    body = {"instances": [{"scene": "home", "k": 10, **instance}]}
    return asyncio.run(predictor.predict(body))["predictions"][0]  # type: ignore[index]


def categories_of(predictor: ScenerecModel, items: list[dict[str, Any]]) -> list[str]:
    rt = predictor.runtime
    assert rt is not None
    indices = rt.item_indices([i["item_id"] for i in items], rt.overlay)  # added items too (other tests')
    return [str(c) for c in rt.categories_of(indices, rt.overlay)]


def served_categories(predictor: ScenerecModel) -> Counter[str]:
    """Items per category: the exported ones and those added since (the repo is shared)."""
    rt = predictor.runtime
    assert rt is not None
    return Counter(str(c) for c in (*rt.info.categories, *rt.overlay.categories))


def test_diversity_zero_is_exactly_the_relevance_answer(predictor: ScenerecModel, users: list[str]) -> None:
    for user in users[:10]:
        plain = answer(predictor, user_id=user)
        assert answer(predictor, user_id=user, diversity=0.0) == plain


def test_full_diversity_raises_intra_list_diversity_and_keeps_each_items_score(
    predictor: ScenerecModel, users: list[str]
) -> None:
    codes: dict[str, int] = {}
    ild = {}
    for d in (0.0, 1.0):
        lists = []
        for user in users:
            result = answer(predictor, user_id=user, diversity=d, explain=True)
            names = [i["category"] for i in result["items"]]
            assert names == categories_of(predictor, result["items"])
            lists.append([codes.setdefault(n, len(codes)) for n in names])
            if d == 1.0:
                relevance = answer(predictor, user_id=user, k=100, explain=True)["items"]
                by_id = {i["item_id"]: i for i in relevance}
                for item in result["items"]:  # picked from the relevance pool, score and parts unchanged
                    assert item == by_id[item["item_id"]]
        ild[d] = intra_list_diversity(np.array(lists)).mean()
    assert ild[1.0] > ild[0.0] + 0.05, ild


def test_excluded_items_are_never_answered(predictor: ScenerecModel, users: list[str]) -> None:
    plain = [i["item_id"] for i in answer(predictor, user_id=users[0])["items"]]
    result = answer(predictor, user_id=users[0], exclude=[*plain[:3], "no-such-item"])
    ids = [i["item_id"] for i in result["items"]]
    assert len(ids) == 10 and not set(ids) & set(plain[:3])
    assert ids[:7] == plain[3:]  # the rest move up, in their order
    assert "notice" not in result


def test_a_category_filter_holds_and_says_when_it_leaves_fewer_than_k(
    predictor: ScenerecModel, users: list[str]
) -> None:
    counts = served_categories(predictor)
    common, rare = counts.most_common()[0][0], counts.most_common()[-1][0]
    result = answer(predictor, user_id=users[1], categories=[common], k=20)
    assert len(result["items"]) == 20 and set(categories_of(predictor, result["items"])) == {common}
    scores = [i["score"] for i in result["items"]]
    assert scores == sorted(scores, reverse=True)
    everything = answer(predictor, user_id=users[1], categories=[rare], k=1000)
    assert set(categories_of(predictor, everything["items"])) == {rare}
    assert len(everything["items"]) <= counts[rare] < 1000
    assert everything["notice"] == f"the filters left {len(everything['items'])} of the 1000 items asked for"
    nothing = answer(predictor, user_id=users[1], categories=["no-such-category"])
    assert nothing["items"] == [] and "no item has the category 'no-such-category'" in nothing["notice"]


def test_filters_and_diversity_combine(predictor: ScenerecModel, users: list[str]) -> None:
    two = [name for name, _ in served_categories(predictor).most_common(2)]
    plain = answer(predictor, user_id=users[2], categories=two)
    result = answer(
        predictor, user_id=users[2], categories=two, diversity=1.0, exclude=[plain["items"][0]["item_id"]]
    )
    names = categories_of(predictor, result["items"])
    assert set(names) == set(two) and len(result["items"]) == 10
    assert plain["items"][0]["item_id"] not in {i["item_id"] for i in result["items"]}


def test_explained_answers_carry_titles_history_and_provider(
    predictor: ScenerecModel, served_model: tuple[Path, Path, Path], users: list[str]
) -> None:
    data, _, repo = served_model
    items = pd.read_parquet(data / "items.parquet").set_index("item_id")
    sources = pd.read_parquet(repo / "data" / "sources" / "users.parquet").set_index("user_id")
    user = users[3]
    result = answer(predictor, user_id=user, explain=True)
    for item in result["items"]:
        assert item["title"] == items.loc[item["item_id"], "title"]
        assert item["category"] == items.loc[item["item_id"], "category"]
    expected = [str(i) for i in sources.loc[user, "history_item_ids"]][::-1][:20]  # what the store serves
    assert [h["item_id"] for h in result["history"]] == expected
    assert all(h["title"] == items.loc[h["item_id"], "title"] for h in result["history"])
    assert result["provider"] == "CPUExecutionProvider"
    assert "history" not in answer(predictor, user_id=user)  # only explained answers carry it


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("diversity", 1.5, "instances[0].diversity: expected a number in [0, 1]"),
        ("diversity", True, "instances[0].diversity: expected a number in [0, 1]"),
        ("exclude", "i1", "instances[0].exclude: expected a list of strings"),
        ("exclude", [""], "instances[0].exclude[0]: expected a non-empty string"),
        ("categories", [], "instances[0].categories: expected a non-empty list of strings"),
    ],
)
def test_bad_options_name_the_field(predictor: ScenerecModel, field: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        answer(predictor, user_id="u1", **{field: value})


def test_options_over_v2_rest_grpc_and_counted_in_metrics(
    server: Server, served_model: tuple[Path, Path, Path]
) -> None:
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    log = pd.read_parquet(served_model[0] / "interactions.parquet")
    users = sorted(log["user_id"].astype(str).unique())[:2]
    v1 = httpx.post(
        f"{server.http}/v1/models/scenerec:predict",
        json={"instances": [{"user_id": u, "k": 5, "diversity": 0.5, "exclude": ["x"]} for u in users]},
        timeout=30,
    )
    assert v1.status_code == 200, v1.text
    expected = [[i["item_id"] for i in a["items"]] for a in v1.json()["predictions"]]
    inputs = [
        {"name": "user_id", "shape": [2], "datatype": "BYTES", "data": users},
        {"name": "k", "shape": [1], "datatype": "INT32", "data": [5]},
        {"name": "diversity", "shape": [1], "datatype": "FP64", "data": [0.5]},
        {"name": "exclude", "shape": [2, 1], "datatype": "BYTES", "data": ["x", ""]},
    ]
    v2 = httpx.post(f"{server.http}/v2/models/scenerec/infer", json={"inputs": inputs}, timeout=30)
    assert v2.status_code == 200, v2.text
    assert np.array(v2.json()["outputs"][0]["data"]).reshape(2, 5).tolist() == expected

    async def grpc_call() -> list[list[str]]:
        client = InferenceGRPCClient(server.grpc, timeout=30)
        tensors = [InferInput(t["name"], t["shape"], t["datatype"]) for t in inputs]
        for tensor, spec in zip(tensors, inputs, strict=True):
            kind = {"BYTES": object, "INT32": np.int32, "FP64": np.float64}[spec["datatype"]]
            tensor.set_data_from_numpy(np.array(spec["data"], dtype=kind).reshape(spec["shape"]))
        response = await client.infer(InferRequest(model_name="scenerec", infer_inputs=tensors))
        await client.close()
        ids = response.outputs[0].as_numpy()
        return [[v.decode() if isinstance(v, bytes) else v for v in row] for row in ids]

    assert asyncio.run(grpc_call()) == expected
    bad = [*inputs[:3], {"name": "diversity", "shape": [1], "datatype": "FP64", "data": [2.0]}]
    refused = httpx.post(
        f"{server.http}/v2/models/scenerec/infer", json={"inputs": bad[1:] + inputs[:1]}, timeout=30
    )
    assert refused.status_code == 400 and "inputs.diversity[0]: expected a number in [0, 1]" in refused.text
    page = httpx.get(f"{server.http}/metrics", timeout=30).text
    count = re.search(r'scenerec_reranked_requests_total\{model="scenerec",option="diversity"\} (\S+)', page)
    assert count is not None and float(count.group(1)) >= 6  # 2 users x (V1, V2 REST, gRPC)
    schema = httpx.get(f"{server.http}/openapi.json", timeout=30).json()
    body = schema["paths"]["/v1/models/{model_name}:predict"]["post"]["requestBody"]
    fields = body["content"]["application/json"]["schema"]["properties"]["instances"]["items"]["properties"]
    assert {"diversity", "exclude", "categories"} <= set(fields)
