"""Settings come from TAGWORKER_<GROUP>__<FIELD> variables and refuse unsafe values with a message to act on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from worker.settings import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TAGWORKER_* variable from the developer's shell, and no .env file, reaches these tests."""
    for name in list(os.environ):
        if name.upper().startswith("TAGWORKER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_safe_and_mean_the_embedded_servers() -> None:
    settings = Settings()

    assert settings.batching.flush_every == 64
    assert settings.log_level == "INFO"
    assert settings.database.url is None and settings.broker.url is None
    assert settings.embedded


def test_a_nested_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGWORKER_BATCHING__FLUSH_EVERY", "8")
    monkeypatch.setenv("TAGWORKER_BATCHING__FLUSH_INTERVAL_S", "0.25")
    monkeypatch.setenv("TAGWORKER_INGEST__MAX_TEXT_CHARS", "500")

    settings = Settings()

    assert settings.batching.flush_every == 8
    assert settings.batching.flush_interval_s == 0.25
    assert settings.batching.db_retries == 5  # the rest of the group keeps its defaults
    assert settings.ingest.max_text_chars == 500


def test_a_env_file_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TAGWORKER_MODEL__MAX_CHUNKS=4\n")

    assert Settings().model.max_chunks == 4


def test_urls_are_secret_and_both_set_means_no_embedded_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGWORKER_DATABASE__URL", "postgresql+psycopg2://app:hunter2@db/tagworker")
    monkeypatch.setenv("TAGWORKER_BROKER__URL", "redis://:hunter2@redis:6379/0")

    settings = Settings()

    assert settings.database.url is not None
    assert settings.database.url.get_secret_value().endswith("@db/tagworker")
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)
    assert not settings.embedded


@pytest.mark.parametrize(("value", "level"), [("debug", "DEBUG"), ("Warning", "WARNING"), ("ERROR", "ERROR")])
def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch, value: str, level: str) -> None:
    monkeypatch.setenv("TAGWORKER_LOG_LEVEL", value)

    assert Settings().log_level == level


@pytest.mark.parametrize("value", ["verbose", "CRITICAL", ""])
def test_an_unknown_log_level_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("TAGWORKER_LOG_LEVEL", value)

    with pytest.raises(ValidationError, match=rf"log_level '{value}' is not one of DEBUG, INFO, WARNING, ERROR"):
        Settings()


def test_a_visibility_timeout_too_close_to_the_batch_time_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # flush 0.5 s + retries up to 0.5 * 2**5 = 16 s; four times that is 66 s.
    monkeypatch.setenv("TAGWORKER_BROKER__VISIBILITY_TIMEOUT_S", "60")

    with pytest.raises(
        ValidationError,
        match=r"broker\.visibility_timeout_s=60 is too close to the longest batch \(flush 0\.5s \+ retries up to "
        r"16s\); raise it or lower TAGWORKER_BATCHING__DB_RETRIES",
    ):
        Settings()


def test_fewer_retries_make_a_short_visibility_timeout_acceptable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGWORKER_BROKER__VISIBILITY_TIMEOUT_S", "60")
    monkeypatch.setenv("TAGWORKER_BATCHING__DB_RETRIES", "2")

    assert Settings().broker.visibility_timeout_s == 60


def test_more_retries_need_a_longer_visibility_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGWORKER_BATCHING__DB_RETRIES", "12")  # up to 2048 s of backoff

    with pytest.raises(ValidationError, match="visibility_timeout_s=3600 is too close to the longest batch"):
        Settings()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TAGWORKER_BATCHING__FLUSH_EVERY", "0", r"batching\.flush_every\s+Input should be greater than or equal to 1"),
        ("TAGWORKER_BATCHING__FLUSH_EVERY", "lots", r"batching\.flush_every\s+Input should be a valid integer"),
        ("TAGWORKER_BATCHING__FLUSH_INTERVAL_S", "0", r"flush_interval_s\s+Input should be greater than 0"),
        ("TAGWORKER_BROKER__VISIBILITY_TIMEOUT_S", "5", r"visibility_timeout_s\s+Input should be greater than or"),
        ("TAGWORKER_MODEL__DEVICE", "tpu", r"model\.device\s+Input should be 'auto', 'cpu' or 'cuda'"),
        ("TAGWORKER_MODEL__MAX_CHUNKS", "0", r"model\.max_chunks\s+Input should be greater than or equal to 1"),
        ("TAGWORKER_INGEST__MAX_METADATA_DEPTH", "65", r"max_metadata_depth\s+Input should be less than or equal"),
    ],
)
def test_nonsense_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError, match=message):
        Settings()


def test_the_pipelines_own_defaults_are_the_settings_defaults() -> None:
    """TrainParams and ClusterParams keep defaults of their own (tests and evals build them without settings),
    while a deployment gets the settings' defaults: the two must not drift apart."""
    from worker.clustering import params_from
    from worker.pipeline.cluster import ClusterParams
    from worker.pipeline.retrain import TrainParams
    from worker.retraining import train_params

    settings = Settings()
    assert train_params(settings) == TrainParams()
    assert params_from(settings.clustering) == ClusterParams()
