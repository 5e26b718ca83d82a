"""scenerec's Feast definitions: entities, sources, feature views and one FeatureService per model.

Nothing but definitions lives here (`feast apply` imports every .py file of this folder). The
values come from `scenerec features publish`, which computes every table with
`scenerec.features.compute` (the one definition training shares) and writes the parquet sources
under data/sources/ before it applies and materializes.

View names read `<entity>_<grain>_<content>`: grain says over what the values are taken ("recent":
the latest events; "lifetime": the whole log; "model": fixed by one trained model).
Timestamps: users carry their latest event, scenes the log's latest event, items the model's
creation time. ttl=0: a row lives until the next publish replaces it (freshness is the publish's
job, not an expiry's).
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Bool, Float32, Float64, Int64, String

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="a user id")
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING, description="a catalogue id")
scene = Entity(
    name="scene",
    join_keys=["scene_id"],
    value_type=ValueType.STRING,
    description="a scenario (home, search…)",
)

user_source = FileSource(
    name="user_source", path="data/sources/users.parquet", timestamp_field="event_timestamp"
)
# Fresh events: `scenerec events push` and the predictor's events route fold new interactions into
# the user rows and push them here (Feast's push API), behind both user views; the rows also go to
# user_source, the push source's batch source (scenerec.features.events).
user_push = PushSource(name="user_push", batch_source=user_source)
item_source = FileSource(
    name="item_source", path="data/sources/items.parquet", timestamp_field="event_timestamp"
)
# New items: `scenerec items add` and the predictor's items route push an added item's vectors and
# profile here, behind both item views (scenerec.features.items).
item_push = PushSource(name="item_push", batch_source=item_source)
scene_source = FileSource(
    name="scene_source", path="data/sources/scenes.parquet", timestamp_field="event_timestamp"
)

user_recent_history = FeatureView(
    name="user_recent_history",
    description="The user's most recent max_history interactions, oldest first: what the model reads.",
    entities=[user],
    ttl=timedelta(0),
    schema=[
        Field(name="user_id", dtype=String),
        Field(name="history_item_ids", dtype=Array(String), description="item ids, oldest first"),
        Field(name="history_scenes", dtype=Array(String), description="the scene of each history item"),
    ],
    source=user_push,
)

user_lifetime_profile = FeatureView(
    name="user_lifetime_profile",
    description="Counts over the user's whole log (after the data contract's cleaning).",
    entities=[user],
    ttl=timedelta(0),
    schema=[
        Field(name="user_id", dtype=String),
        Field(name="interaction_count", dtype=Int64),
        Field(name="conversion_rate", dtype=Float64, description="share of purchase-like events"),
        Field(name="distinct_scenes", dtype=Int64),
        Field(name="scenes_seen", dtype=Array(String), description="the distinct scenes (a push adds to it)"),
        Field(name="last_scene", dtype=String),
        Field(name="last_device", dtype=String),
    ],
    source=user_push,
)

item_model_vectors = FeatureView(
    name="item_model_vectors",
    description="Item vectors of one trained model (retrieval) and the frozen encoder's text embedding.",
    entities=[item],
    ttl=timedelta(0),
    schema=[
        Field(name="item_id", dtype=String),
        Field(name="vector", dtype=Array(Float32), description="the retrieval vector (manifest dims.query)"),
        Field(name="text_embedding", dtype=Array(Float32), description="the encoder's embedding (dims.text)"),
    ],
    source=item_push,
)

item_model_profile = FeatureView(
    name="item_model_profile",
    description="Catalogue category and the training split's popularity, as the model saw them.",
    entities=[item],
    ttl=timedelta(0),
    schema=[
        Field(name="item_id", dtype=String),
        Field(name="category", dtype=String),
        Field(name="train_count", dtype=Int64),
        Field(name="popularity_bucket", dtype=Int64, description="log-count quantile bucket (lambda's)"),
        Field(name="cold", dtype=Bool, description="never seen in training"),
    ],
    source=item_push,
)

scene_lifetime_stats = FeatureView(
    name="scene_lifetime_stats",
    description="Per-scene statistics over the whole log.",
    entities=[scene],
    ttl=timedelta(0),
    schema=[
        Field(name="scene_id", dtype=String),
        Field(name="interaction_count", dtype=Int64),
        Field(name="interaction_share", dtype=Float64, description="share of all interactions"),
        Field(name="conversion_rate", dtype=Float64),
        Field(name="distinct_users", dtype=Int64),
        Field(name="distinct_items", dtype=Int64),
    ],
    source=scene_source,
)

# One service per model version: the model manifest names it ("feature_service"). A new feature
# set is a new service (ranker_v2), never an edit of this one. Read with full feature names
# (`<view>__<feature>`): user and scene views share feature names.
ranker_v1 = FeatureService(
    name="ranker_v1",
    description="Features of the scenerec joint model v1: per request user + scene, items at load time.",
    features=[
        user_recent_history,
        user_lifetime_profile,
        scene_lifetime_stats,
        item_model_vectors,
        item_model_profile,
    ],
)
