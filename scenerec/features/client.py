"""FeatureClient: what the predictor reads from Feast, resolved from the model's manifest.

    client = FeatureClient.from_repo(feature_repo, manifest)   # plan, connect, warm up
    items = client.read_items(item_ids)                        # at load: cache items in memory
    gc.collect(); gc.freeze(); client.warm_up()                # last steps of the predictor's load()
    row = client.read("u42", "home")                           # per request: user + scene
    rows = client.read_batch([("u42", "home"), ("u7", "search")])  # a scoring batch, one deadline

- The FeatureService is the one `manifest["feature_service"]` names; its views are grouped by join
  key once at load: `user_id` and `scene_id` views are read per request, `item_id` views in bulk.
  No feature list is repeated here. An on-demand view or another join key is refused at load.
- Reads go below `get_online_features` (see `readers`); `read_via_feast` is Feast's own call on
  the same rows, the reference the tests and the benchmark compare against, value for value.
- Output names are Feast's full feature names, `<view>__<feature>` (user and scene views share
  feature names). Every planned feature is a key of `values`; a feature with no stored value is
  None there and listed in `missing`, never filled in: the predictor decides the fallback.
- Every read has a timeout (fixed per client); a timeout or a store failure raises
  `FeatureReadError` (`FeatureTimeout`), so serving can degrade, flag and count it.
- Warm-up reads through every path, so the first request does not pay the lazy imports and the
  connection set-up (~50 ms in a fresh Feast process). The registry is read once, at load; the
  request path never touches it, so its cache expiry (600 s by default) never lands on a request.
- `gc.collect(); gc.freeze()` after loading everything: a full collection over a heap holding torch
  and Feast takes 125-170 ms here and would otherwise land on a random request. Then `warm_up()`
  once more: the collection itself walks the whole heap and leaves the CPU caches cold, which
  costs the next read ~3x its median here.
- Item features belong in memory, loaded with `read_items` when the model or the store changes:
  100 rows per request cost ~3.6 ms through Feast.
- One client per process and thread (the predictor's event loop): reads share one connection.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scenerec.features.compute import ITEM_ID, SCENE_ID, USER_ID
from scenerec.features.readers import (
    FeatureReadError,
    FeatureTimeout,
    Reader,
    RedisReader,
    SqliteReader,
    StoreReader,
    ViewRead,
)
from scenerec.features.repo import FeatureRepoError, open_store, resolve_yaml

if TYPE_CHECKING:
    from feast import FeatureStore

__all__ = ["FeatureClient", "FeatureReadError", "FeatureTimeout", "ItemFeatures", "OnlineFeatures"]

REQUEST_KEYS = (USER_ID, SCENE_ID)
_SCALARS = frozenset(
    {"string_val", "int64_val", "int32_val", "double_val", "float_val", "bool_val", "bytes_val"}
)
_LISTS = frozenset(
    {
        "string_list_val",
        "int64_list_val",
        "int32_list_val",
        "double_list_val",
        "float_list_val",
        "bool_list_val",
    }
)


@dataclass(frozen=True)
class OnlineFeatures:
    """One request's features: every planned name, None where missing, and the missing names."""

    values: dict[str, Any]
    missing: tuple[str, ...]


@dataclass(frozen=True)
class ItemFeatures:
    """Item features column-wise, in the order asked; `missing`: feature -> item ids without it."""

    item_ids: tuple[str, ...]
    columns: dict[str, list[Any]]
    missing: dict[str, tuple[str, ...]]

    def matrix(self, name: str, dtype: Any = np.float32) -> np.ndarray:
        """[N, D] of a vector feature; refuses missing rows instead of inventing them."""
        if self.missing.get(name):
            raise FeatureReadError(
                f"{name}: no value for {len(self.missing[name])} item(s), e.g. {self.missing[name][0]}"
            )
        return np.asarray(self.columns[name], dtype=dtype)


class FeatureClient:
    """Reads the features of one FeatureService: user + scene per request, items in bulk."""

    def __init__(
        self, store: FeatureStore, feature_service: str, timeout_s: float = 0.05, warm_up: bool = True
    ) -> None:
        self.store = store
        self.feature_service = feature_service
        self.timeout_s = timeout_s
        self._set_plan(_plan(store, feature_service))
        self._reader = _reader(store, timeout_s)
        self._warm_scenes: tuple[str, ...] = ()
        self._version = store.config.entity_key_serialization_version
        self._key = functools.lru_cache(maxsize=4096)(functools.partial(_entity_key, self._version))
        registry = store.registry
        if hasattr(registry, "cached_registry_proto_ttl"):  # refresh only when asked (refresh())
            registry.cached_registry_proto_ttl = timedelta(0)
        if warm_up:
            self.warm_up()

    @classmethod
    def from_repo(
        cls,
        repo: str | Path,
        manifest: dict[str, Any],
        config: str | Path | None = None,
        online_store: str | None = None,
        timeout_s: float = 0.05,
        warm_up: bool = True,
    ) -> FeatureClient:
        """Open the repo (yaml checked), resolve the manifest's FeatureService, connect, warm up."""
        service = manifest.get("feature_service")
        if not isinstance(service, str) or not service:
            raise FeatureRepoError("the model manifest names no 'feature_service'")
        repo = Path(repo)
        yaml_path = resolve_yaml(repo, Path(config) if config else None, online_store)
        client = cls(open_store(repo, yaml_path), service, timeout_s, warm_up=False)
        client._warm_scenes = tuple(manifest.get("vocab", {}).get("scenes", ()))
        if warm_up:
            client.warm_up()
        return client

    def _set_plan(self, views: list[ViewRead]) -> None:
        self.views = views
        self.request_views = [v for v in views if v.join_key in REQUEST_KEYS]
        self.item_views = [v for v in views if v.join_key == ITEM_ID]
        self.feature_names = tuple(f"{v.name}__{f}" for v in self.request_views for f in v.features)
        self.item_feature_names = tuple(f"{v.name}__{f}" for v in self.item_views for f in v.features)
        # Per request view: (feature, output name) pairs, so a read formats no strings.
        self._outputs = [tuple((f, f"{v.name}__{f}") for f in v.features) for v in self.request_views]

    def read(self, user_id: str, scene_id: str) -> OnlineFeatures:
        """The user's and the scene's features (one round trip), within the client's timeout."""
        return self.read_batch([(user_id, scene_id)])[0]

    def read_batch(self, requests: Sequence[tuple[str, str]]) -> list[OnlineFeatures]:
        """Features of many (user, scene) requests in one round trip under ONE deadline: a hung
        store costs a scoring batch one timeout, not one per request. All or nothing: a timeout
        or a failure raises for the whole batch."""
        reads: list[tuple[Any, ...]] = []
        for user_id, scene_id in requests:
            keys = {USER_ID: self._key(USER_ID, user_id), SCENE_ID: self._key(SCENE_ID, scene_id)}
            reads.extend((v, *keys[v.join_key]) for v in self.request_views)
        rows = self._reader.read(reads)
        width = len(self.request_views)
        answers = []
        for at in range(0, len(rows), width):
            values: dict[str, Any] = {}
            missing: list[str] = []
            for outputs, row in zip(self._outputs, rows[at : at + width], strict=True):
                for feature, name in outputs:
                    value = _decode(row[feature]) if feature in row else None
                    values[name] = value
                    if value is None:
                        missing.append(name)
            answers.append(OnlineFeatures(values, tuple(missing)))
        return answers

    def read_items(self, item_ids: Sequence[str], timeout_s: float = 30.0) -> ItemFeatures:
        """Every item view's features for `item_ids` (load-time caching, not per request)."""
        keys = [_entity_key(self._version, ITEM_ID, str(i)) for i in item_ids]
        columns: dict[str, list[Any]] = {}
        for view in self.item_views:
            rows = self._reader.read_many(view, keys, timeout_s)
            for feature in view.features:
                columns[f"{view.name}__{feature}"] = [
                    _decode(row[feature]) if feature in row else None for row in rows
                ]
        return _item_features(item_ids, columns)

    def read_via_feast(self, user_id: str, scene_id: str) -> OnlineFeatures:
        """The same read through Feast's `get_online_features`: the reference, not the fast path."""
        refs = [f"{v.view.name}:{f}" for v in self.request_views for f in v.features]
        data = self.store.get_online_features(
            refs, [{USER_ID: user_id, SCENE_ID: scene_id}], full_feature_names=True
        ).to_dict()
        values = {name: data[name][0] for name in self.feature_names}
        return OnlineFeatures(values, tuple(n for n, v in values.items() if v is None))

    def read_items_via_feast(self, item_ids: Sequence[str]) -> ItemFeatures:
        refs = [f"{v.view.name}:{f}" for v in self.item_views for f in v.features]
        data = self.store.get_online_features(
            refs, [{ITEM_ID: str(i)} for i in item_ids], full_feature_names=True
        ).to_dict()
        return _item_features(item_ids, {name: data[name] for name in self.item_feature_names})

    def warm_up(self, user_ids: Sequence[str] = (), rounds: int = 20) -> float:
        """Read through every path `rounds` times; returns the first read's seconds.

        Reads cycle through `user_ids` (or a placeholder id, which exercises everything but the
        decoding of a user's values) and the model's scenes (real rows). The first read, which
        pays imports and connecting, may time out: it is retried, since warming is its purpose.
        """
        users = list(user_ids) or ["__warm_up__"]
        scenes = list(self._warm_scenes) or ["__warm_up__"]
        first = 0.0
        for k in range(rounds):
            started = time.perf_counter()
            try:
                self.read(users[k % len(users)], scenes[k % len(scenes)])
            except FeatureTimeout:
                if k >= 2:
                    raise
            first = first or time.perf_counter() - started
        if self.item_views:
            self.read_items(["__warm_up__"])
        return first

    def refresh(self) -> None:
        """Reopen the FeatureStore and rebuild the plan (call after a publish or a new model).

        The fast path follows a republished SQLite file by itself, but Feast's own SQLite store
        keeps its connection to the replaced file, so `read_via_feast` needs this to see it.
        """
        from feast import FeatureStore

        self.store = FeatureStore(config=self.store.config, repo_path=str(self.store.repo_path))
        registry = self.store.registry
        if hasattr(registry, "cached_registry_proto_ttl"):
            registry.cached_registry_proto_ttl = timedelta(0)
        self._set_plan(_plan(self.store, self.feature_service))

    def close(self) -> None:
        self._reader.close()


def _plan(store: FeatureStore, service_name: str) -> list[ViewRead]:
    """Each view of the service with its join key, projected features and store keys."""
    from feast.errors import FeastObjectNotFoundException
    from feast.infra.online_stores.helpers import _mmh3, compute_table_id, compute_versioned_name

    try:
        service = store.get_feature_service(service_name)
    except FeastObjectNotFoundException as e:
        known = ", ".join(sorted(s.name for s in store.list_feature_services())) or "none"
        raise FeatureRepoError(
            f"feature service {service_name!r} is not in the registry (applied: {known}); "
            "run `scenerec features publish`"
        ) from e
    versioning = store.config.registry.enable_online_feature_view_versioning
    plan = []
    for projection in service.feature_view_projections:
        try:
            view = store.get_feature_view(projection.name)
        except FeastObjectNotFoundException as e:
            raise FeatureRepoError(
                f"feature service {service_name!r}: {projection.name!r} is not a batch feature view "
                "(on-demand views are computed in the predictor, see feature_repo/README.md)"
            ) from e
        keys = [c.name for c in view.entity_columns]
        if len(keys) != 1 or keys[0] not in (*REQUEST_KEYS, ITEM_ID):
            raise FeatureRepoError(
                f"feature view {view.name!r}: join keys {keys}; "
                "the client reads views keyed by one of user_id, scene_id, item_id"
            )
        features = tuple(f.name for f in projection.features)
        fv_name = compute_versioned_name(view, versioning)
        plan.append(
            ViewRead(
                view=view,
                name=projection.name_to_use(),
                join_key=keys[0],
                features=features,
                table=compute_table_id(store.project, view, versioning),
                fields=tuple(_mmh3(f"{fv_name}:{f}") for f in features),
            )
        )
    return plan


def _reader(store: FeatureStore, timeout_s: float) -> Reader:
    online = store.config.online_store
    if online.type == "sqlite":
        path = Path(online.path)
        return SqliteReader(path if path.is_absolute() else Path(store.repo_path) / path, timeout_s)
    if online.type == "redis" and getattr(online, "redis_type", "redis") == "redis":  # not cluster/sentinel
        return RedisReader(online.connection_string, store.project, timeout_s)
    return StoreReader(store, timeout_s)


def _entity_key(version: int, join_key: str, value: str) -> tuple[bytes, Any]:
    """Feast's own encoding of a one-key entity (every scenerec entity is a string id)."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    proto = EntityKey(join_keys=[join_key], entity_values=[Value(string_val=value)])
    return serialize_entity_key(proto, entity_key_serialization_version=version), proto


def _decode(value: Any) -> Any:
    """A ValueProto as Feast's `to_dict` gives it (checked value for value by the tests)."""
    kind = value.WhichOneof("val")
    if kind is None:
        return None
    if kind in _SCALARS:
        return getattr(value, kind)
    if kind in _LISTS:
        return list(getattr(value, kind).val)
    from feast.type_map import feast_value_type_to_python_type

    return feast_value_type_to_python_type(value)


def _item_features(item_ids: Sequence[str], columns: dict[str, list[Any]]) -> ItemFeatures:
    ids = tuple(str(i) for i in item_ids)
    missing = {
        name: tuple(i for i, v in zip(ids, col, strict=True) if v is None) for name, col in columns.items()
    }
    return ItemFeatures(ids, columns, {k: v for k, v in missing.items() if v})
