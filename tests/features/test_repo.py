"""A missing or malformed repo, yaml or definition fails with one line naming the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from scenerec.features.cli import main
from scenerec.features.repo import FeatureRepoError, load_repo_config, parse_definitions, resolve_yaml
from tests.features.conftest import copy_repo

HEAD = "project: scenerec\nregistry: data/registry.db\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("project: [\n", r"feature_store.yaml: not valid YAML"),
        ("registry: data/registry.db\n", r"feature_store.yaml: field 'project' is required"),
        (HEAD + "online_store:\n  type: sqlite\n  pth: x\n", r"field 'online_store.pth': Extra inputs"),
        (HEAD + "online_store:\n  type: sqlitee\n", r"field 'online_store.type': .*sqlitee"),
        (HEAD + "entity_key_serialization_version: three\n", r"field 'entity_key_serialization_version'"),
        ("project: 'my project!'\nregistry: data/registry.db\n", r"field 'project': .*alphanumerical"),
        (
            HEAD + "online_store:\n  type: redis\n  connection_string: ${SCENEREC_TEST_UNSET}\n",
            r"feature_store.yaml:5: environment variable SCENEREC_TEST_UNSET is not set",
        ),
        ("- a list\n", r"expected a mapping of settings"),
    ],
)
def test_a_malformed_yaml_names_the_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "feature_store.yaml").write_text(text)
    with pytest.raises(FeatureRepoError, match=message):
        load_repo_config(tmp_path, tmp_path / "feature_store.yaml")


def test_a_missing_repo_or_yaml_is_named(tmp_path: Path) -> None:
    with pytest.raises(FeatureRepoError, match=r"nowhere: feature repo not found"):
        resolve_yaml(tmp_path / "nowhere")
    with pytest.raises(FeatureRepoError, match=r"feature_store.redis.yaml: feature store config not found"):
        resolve_yaml(tmp_path, online_store="redis")
    with pytest.raises(FeatureRepoError, match=r"--online-store 'mysql': expected one of sqlite, redis"):
        resolve_yaml(tmp_path, online_store="mysql")


def test_the_checked_in_yamls_load_and_point_inside_the_repo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = copy_repo(tmp_path / "repo")
    sqlite = load_repo_config(repo, resolve_yaml(repo))
    assert sqlite.online_store.type == "sqlite" and not Path(sqlite.online_store.path).is_absolute()
    assert sqlite.repo_path == repo.resolve()
    monkeypatch.delenv("SCENEREC_REDIS", raising=False)
    with pytest.raises(FeatureRepoError, match=r"redis.yaml:\d+: environment variable SCENEREC_REDIS"):
        load_repo_config(repo, resolve_yaml(repo, online_store="redis"))
    monkeypatch.setenv("SCENEREC_REDIS", "127.0.0.1:1")
    redis = load_repo_config(repo, resolve_yaml(repo, online_store="redis"))
    assert redis.online_store.connection_string == "127.0.0.1:1" and redis.online_store.skip_dedup


def test_the_repo_defines_the_service_the_manifest_names(tmp_path: Path) -> None:
    contents = parse_definitions(copy_repo(tmp_path / "repo"))
    assert [s.name for s in contents.feature_services] == ["ranker_v1"]
    names = {v.name for v in contents.feature_views}
    assert names == {
        "user_recent_history",
        "user_lifetime_profile",
        "item_model_vectors",
        "item_model_profile",
        "scene_lifetime_stats",
    }
    assert not list((tmp_path / "repo").rglob("__pycache__"))  # parsing leaves nothing behind


def test_a_broken_definition_file_is_named_with_its_line(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    (repo / "extra_views.py").write_text("from feast import Entity\n\nraise RuntimeError('a typo')\n")
    with pytest.raises(FeatureRepoError, match=r"extra_views.py:3: feature definitions failed.*a typo"):
        parse_definitions(repo)
    (repo / "extra_views.py").write_text("def broken(:\n")
    with pytest.raises(FeatureRepoError, match=r"extra_views.py:1: feature definitions failed"):
        parse_definitions(repo)


def test_the_cli_exits_2_with_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["features", "publish", "--data", "d", "--model", "m", "--repo", str(tmp_path / "nope")])
    assert code == 2
    assert "nope: feature repo not found" in capsys.readouterr().err
