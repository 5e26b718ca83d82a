"""No train/serve skew: what serving reads from Feast is what the model was trained with.

For sampled users (random, plus the longest and the shortest logs), Feast's own
`get_online_features` after materialization, mapped through the model's id maps, equals the inputs
`scenerec.model.inputs.inputs_from_cases` builds for a request right after the user's whole log;
and the FeatureClient's fast path returns exactly what `get_online_features` returns, on SQLite and
on Redis, for user + scene rows and for item rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scenerec.artifact import read_manifest
from scenerec.config import Config
from scenerec.data.dataset import POS, USER_IDX, load_dataset
from scenerec.data.split import EvalCases
from scenerec.features.client import FeatureClient
from scenerec.features.model_ids import ModelIds
from scenerec.model.inputs import inputs_from_cases
from tests.features.conftest import MAX_HISTORY

pytestmark = pytest.mark.integration

STORES = ["sqlite_repo", "redis_repo"]


@pytest.fixture(params=STORES)
def client(request: pytest.FixtureRequest, trained_model: tuple[Path, Path]) -> FeatureClient:
    repo = request.getfixturevalue(request.param)
    store = "redis" if request.param == "redis_repo" else None
    return FeatureClient.from_repo(repo, read_manifest(trained_model[1]), online_store=store)


def sampled_users(log: pd.DataFrame, k: int = 40) -> list[str]:
    lengths = log.groupby("user_id", observed=True).size()
    rng = np.random.default_rng(0)
    picked = set(rng.choice(lengths.index.to_numpy(), size=min(k, len(lengths)), replace=False))
    return sorted(picked | {lengths.idxmax(), lengths.idxmin()})


def test_online_history_is_the_models_input_for_the_latest_request(
    client: FeatureClient, trained_model: tuple[Path, Path]
) -> None:
    data, model = trained_model
    manifest = read_manifest(model)
    config = Config.from_dict(manifest["config"])
    dataset = load_dataset(data, config.data)
    log = dataset.interactions
    assert log.groupby(USER_IDX).size().max() > MAX_HISTORY  # truncation is exercised
    targets = log.groupby(USER_IDX, sort=True).tail(1).copy()
    targets[POS] += 1  # a request right after the latest event: history = the whole log
    cases = EvalCases.build(log, targets)
    dims = manifest["dims"]
    expected = inputs_from_cases(
        cases, dims["max_history"], dims["items"], dims["scenes"], dims["hour_buckets"]
    )
    row_of = {str(u): k for k, u in enumerate(dataset.vocab.users[cases.user])}
    ids = ModelIds.load(model, manifest)
    for user in sampled_users(log):
        feast = client.read_via_feast(user, "home")
        assert feast.missing == ()
        items, scenes, unknown = ids.history(
            feast.values["user_recent_history__history_item_ids"],
            feast.values["user_recent_history__history_scenes"],
        )
        np.testing.assert_array_equal(items, expected.hist_items[row_of[user]], err_msg=user)
        np.testing.assert_array_equal(scenes, expected.hist_scenes[row_of[user]], err_msg=user)
        assert unknown == 0


def test_the_fast_path_returns_exactly_what_feast_returns(
    client: FeatureClient, trained_model: tuple[Path, Path]
) -> None:
    log = pd.read_parquet(trained_model[0] / "interactions.parquet")
    for user in [*sampled_users(log, 10), "nobody"]:
        for scene in ["home", "detail", "default", "nowhere"]:
            fast, feast = client.read(user, scene), client.read_via_feast(user, scene)
            assert fast == feast, (user, scene)
            assert set(fast.values) == set(client.feature_names)
    unknown = client.read("nobody", "nowhere")
    assert set(unknown.missing) == set(client.feature_names)
    assert all(v is None for v in unknown.values.values())


def test_a_batch_read_equals_one_read_per_request(
    client: FeatureClient, trained_model: tuple[Path, Path]
) -> None:
    """A scoring batch's one round trip: longer than SQLite's 100-read chunk, a user twice."""
    log = pd.read_parquet(trained_model[0] / "interactions.parquet")
    users = sampled_users(log, 60)
    scenes = ["home", "detail", "search", "nowhere"]
    pairs = [(user, scenes[n % len(scenes)]) for n, user in enumerate([*users, "nobody", users[0]])]
    assert len(pairs) * len(client.request_views) > 100
    assert client.read_batch(pairs) == [client.read(user, scene) for user, scene in pairs]
    assert client.read_batch([]) == []


def test_item_rows_equal_feast_and_the_models_items(
    client: FeatureClient, trained_model: tuple[Path, Path]
) -> None:
    items = pd.read_parquet(trained_model[1] / "items.parquet")
    ids = [*items["item_id"], "not-an-item"]
    fast = client.read_items(ids)
    assert fast == client.read_items_via_feast(ids)
    assert set(fast.missing) == set(client.item_feature_names)
    assert all(missing == ("not-an-item",) for missing in fast.missing.values())
    known = client.read_items(list(items["item_id"]))
    np.testing.assert_array_equal(known.matrix("item_model_vectors__vector"), np.stack(items["vector"]))
    np.testing.assert_array_equal(
        known.matrix("item_model_vectors__text_embedding"), np.stack(items["text_embedding"])
    )
    assert known.columns["item_model_profile__popularity_bucket"] == items["popularity_bucket"].tolist()
    assert known.columns["item_model_profile__cold"] == items["cold"].tolist()


def test_the_generic_reader_agrees_too(client: FeatureClient, trained_model: tuple[Path, Path]) -> None:
    """The fallback for other online stores (their own `online_read`), forced onto this store."""
    from scenerec.features.readers import StoreReader

    client._reader = StoreReader(client.store, timeout_s=1.0)
    log = pd.read_parquet(trained_model[0] / "interactions.parquet")
    for user in [*sampled_users(log, 5), "nobody"]:
        assert client.read(user, "home") == client.read_via_feast(user, "home")
    ids = [*pd.read_parquet(trained_model[1] / "items.parquet")["item_id"].tolist()[:20], "not-an-item"]
    assert client.read_items(ids) == client.read_items_via_feast(ids)
