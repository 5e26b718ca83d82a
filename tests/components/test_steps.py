"""The pipeline steps' library side: the config they rebuild, ingest, metrics files, the repo template."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from scenerec.config import Config, config_json
from scenerec.errors import ConfigError, DataError
from scenerec.features.repo import FeatureRepoError
from scenerec.steps import StepResult, feature_repo_template, ingest_data, parse_config


def test_the_config_is_rebuilt_strictly_from_its_json() -> None:
    config = Config().with_overrides(["train.epochs=3", "pipeline.gate_margin=0.05"])
    assert parse_config(config_json(config)) == config
    assert parse_config("{}") == Config()  # the pipeline's default: every library default
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_config("{train: 1}")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        parse_config("[1, 2]")
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.epoch'"):
        parse_config('{"train": {"epoch": 3}}')
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        parse_config('{"train": {"epochs": 3.0}}')  # what a protobuf Struct would have made of 3


def test_ingest_snapshots_the_validated_files(small_synthetic: Path, tmp_path: Path) -> None:
    result = ingest_data(small_synthetic, tmp_path / "dataset")
    copied = sorted(p.name for p in (tmp_path / "dataset").iterdir())
    assert copied == ["interactions.parquet", "items.parquet", "truth.json"]
    assert result.metadata["items_rows"] == 300
    assert result.metadata["files"] == copied and len(result.metadata["sha256"]) == 64
    original = pd.read_parquet(small_synthetic / "interactions.parquet")
    assert pd.read_parquet(tmp_path / "dataset" / "interactions.parquet").equals(original)


def test_ingest_refuses_invalid_data_naming_every_problem(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    pd.DataFrame({"item_id": ["i1"]}).to_parquet(tmp_path / "raw" / "items.parquet")
    with pytest.raises(DataError, match="interactions: missing file"):
        ingest_data(tmp_path / "raw", tmp_path / "dataset")
    assert not (tmp_path / "dataset").exists()


def test_metrics_are_written_as_json(tmp_path: Path) -> None:
    result = StepResult(metrics={"ndcg@10": 0.25}).write_metrics(tmp_path / "metrics")
    assert json.loads((tmp_path / "metrics").read_text()) == {"ndcg@10": 0.25}
    assert result.metrics == {"ndcg@10": 0.25}


def test_the_feature_repo_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCENEREC_FEATURE_REPO", raising=False)
    assert (feature_repo_template() / "feature_store.yaml").is_file()  # the checkout's feature_repo/
    monkeypatch.setenv("SCENEREC_FEATURE_REPO", str(tmp_path))
    with pytest.raises(FeatureRepoError, match=r"no feature_store\.yaml .*SCENEREC_FEATURE_REPO"):
        feature_repo_template()


def test_a_warm_start_uri_is_read_where_kfp_mounts_it() -> None:
    from scenerec.steps import artifact_path

    assert artifact_path("gs://bucket/models/v3") == Path("/gcs/bucket/models/v3")
    assert artifact_path("s3://b/m") == Path("/s3/b/m") and artifact_path("minio://b/m") == Path("/minio/b/m")
    assert artifact_path("/mnt/models/v3") == Path("/mnt/models/v3")
    assert artifact_path("file:///mnt/m") == Path("/mnt/m")
