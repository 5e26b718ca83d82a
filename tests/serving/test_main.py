"""The predictor's command line: our flags next to KServe's, strict choices."""

from __future__ import annotations

import pytest

from serving.__main__ import parse_args

REQUIRED = ["--model_name", "scenerec", "--model_dir", "m", "--feature_repo", "r"]


def test_defaults_and_kserves_own_flags_parse_together() -> None:
    args = parse_args([*REQUIRED, "--http_port", "9000", "--workers", "2"])
    assert (args.http_port, args.workers) == (9000, 2)
    assert (args.batching, args.device, args.ort_threads, args.retrieval_depth) == ("auto", "auto", 1, 200)
    assert args.batching_idle_ms == 1.0
    assert parse_args([*REQUIRED, "--batching", "off"]).batching == "off"


@pytest.mark.parametrize("bad", [["--batching", "maybe"], ["--device", "tpu"], ["--ort_threads", "two"]])
def test_a_bad_flag_value_exits_2_naming_it(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args([*REQUIRED, *bad])
    assert exit_info.value.code == 2
    assert bad[0] in capsys.readouterr().err


def test_breaker_flags_become_the_breakers_settings(capsys: pytest.CaptureFixture[str]) -> None:
    from serving.__main__ import breaker_settings
    from serving.breaker import BreakerSettings

    assert breaker_settings(parse_args(REQUIRED)) == BreakerSettings()
    args = parse_args([*REQUIRED, "--breaker_failures", "5", "--breaker_backoff_ms", "40"])
    assert (breaker_settings(args).failures, breaker_settings(args).backoff_s) == (5, 0.04)
    with pytest.raises(SystemExit) as exit_info:
        breaker_settings(parse_args([*REQUIRED, "--breaker_failures", "0"]))
    assert exit_info.value.code == 2 and "failures must be >= 1" in capsys.readouterr().err


def test_the_explorer_page_is_on_unless_no_ui() -> None:
    assert parse_args(REQUIRED).no_ui is False
    assert parse_args([*REQUIRED, "--no_ui"]).no_ui is True
