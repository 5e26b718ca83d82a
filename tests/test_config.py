"""The strict config: defaults round-trip, unknown keys and wrong types fail with the key's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from scenerec.config import Config, load_config
from scenerec.errors import ConfigError


def test_defaults_round_trip_through_plain_data() -> None:
    config = Config()
    assert Config.from_dict(config.to_dict()) == config


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'eval\.chunksize'"):
        Config.from_dict({"eval": {"chunksize": 10}})
    with pytest.raises(ConfigError, match="unknown config key 'evaluation'"):
        Config.from_dict({"evaluation": {}})


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"eval": {"chunk_size": "big"}}, "eval.chunk_size"),
        ({"eval": {"chunk_size": 1.5}}, "eval.chunk_size"),
        ({"data": {"dedupe_repeats": 1}}, "data.dedupe_repeats"),
        ({"eval": {"ks": [10, "x"]}}, r"eval.ks\[1\]"),
        ({"baselines": {"ease_lambdas": 5}}, "baselines.ease_lambdas"),
        ({"data": 3}, "data"),
    ],
)
def test_wrong_type_is_named(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        Config.from_dict(raw)


def test_ints_are_accepted_as_floats_and_lists_as_tuples() -> None:
    config = Config.from_dict({"data": {"cold_item_fraction": 0}, "eval": {"ks": [5]}})
    assert config.data.cold_item_fraction == 0.0 and isinstance(config.data.cold_item_fraction, float)
    assert config.eval.ks == (5,)


def test_overrides_and_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("eval:\n  chunk_size: 256\n")
    config = load_config(path, ["eval.ks=[1, 5]", "baselines.mf_factors=8"])
    assert config.eval.chunk_size == 256
    assert config.eval.ks == (1, 5)
    assert config.baselines.mf_factors == 8
    with pytest.raises(ConfigError, match=r"unknown key 'eval\.nope'"):
        load_config(None, ["eval.nope=1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["eval.ks"])
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
