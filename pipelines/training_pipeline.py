"""The training pipeline: wiring only; every step is a component of `components/`.

    importer(data) -> ingest_data -> split_data -> fit_baselines -> embed_items -> train_model
      -> evaluate_model (the gate) -> publish_features -> deploy_model

Parameters: `data`, the dataset directory's URI (a local path for local runs; gs://, s3:// or
minio:// on a cluster, fetched by kfp's importer), and `config`, the JSON text of
`scenerec.config.Config.to_dict()` passed verbatim to every step (JSON text, not a dict: kfp carries
dicts as protobuf Structs, which turn every integer into a float that the strict config rejects).
`deploy` applies the rendered InferenceService to the cluster (off: render only). `warm_start`:
a previous model directory's URI to continue training from (empty: from scratch); see
`scenerec train --warm-start`.

publish_features and deploy_model never come from the cache: they change state outside their
artifacts (an online store, a cluster), which kfp's cache cannot see.
"""

from typing import NamedTuple

from kfp import dsl

from components.deploy_model import deploy_model
from components.embed_items import embed_items
from components.evaluate_model import evaluate_model
from components.fit_baselines import fit_baselines
from components.image import PREDICTOR_IMAGE
from components.ingest_data import ingest_data
from components.publish_features import publish_features
from components.split_data import split_data
from components.train_model import train_model

PIPELINE_NAME = "scenerec-training"


class Outputs(NamedTuple):
    model: dsl.Model
    feature_repo: dsl.Artifact
    inference_service: dsl.Artifact


@dsl.pipeline(name=PIPELINE_NAME, description="scenerec: data to a gated, published, deployable model")
def training_pipeline(data: str, config: str = "{}", deploy: bool = False, warm_start: str = "") -> Outputs:
    raw = dsl.importer(artifact_uri=data, artifact_class=dsl.Dataset, reimport=False)
    ingest = ingest_data(source=raw.output)
    dataset = ingest.outputs["dataset"]
    split = split_data(config=config, dataset=dataset)
    baselines = fit_baselines(config=config, dataset=dataset).after(split)
    embed = embed_items(config=config, dataset=dataset).after(split)
    train = train_model(
        config=config,
        dataset=dataset,
        embeddings=embed.outputs["embeddings"],
        baselines=baselines.outputs["results"],
        warm_start=warm_start,
    )
    gate = evaluate_model(
        config=config, dataset=dataset, model=train.outputs["model"], baselines=baselines.outputs["results"]
    )
    publish = publish_features(dataset=dataset, model=train.outputs["model"]).after(gate)
    publish.set_caching_options(enable_caching=False)
    release = deploy_model(
        apply=deploy,
        image=PREDICTOR_IMAGE,
        model=train.outputs["model"],
        feature_repo=publish.outputs["feature_repo"],
    )
    release.set_caching_options(enable_caching=False)
    return Outputs(
        model=train.outputs["model"],
        feature_repo=publish.outputs["feature_repo"],
        inference_service=release.outputs["inference_service"],
    )
