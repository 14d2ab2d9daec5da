"""Settings come from TAGWORKER_<GROUP>__<FIELD> variables and refuse unsafe values with a message to act on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from worker.settings import Settings, setting_errors


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
    assert settings.log_level == "WARNING"  # the CLI's log output: warnings and errors only
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


@pytest.mark.parametrize(
    ("value", "level"), [("debug", "DEBUG"), ("Warning", "WARNING"), ("ERROR", "ERROR"), (" critical", "CRITICAL")]
)
def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch, value: str, level: str) -> None:
    monkeypatch.setenv("TAGWORKER_LOG_LEVEL", value)

    assert Settings().log_level == level


@pytest.mark.parametrize("value", ["verbose", "10", ""])
def test_an_unknown_log_level_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("TAGWORKER_LOG_LEVEL", value)

    with pytest.raises(ValidationError, match=rf"'{value}' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"):
        Settings()


def test_a_visibility_timeout_too_close_to_the_batch_time_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # flush 0.5 s + retries up to 0.5 * 2**5 = 16 s; four times that is 66 s.
    monkeypatch.setenv("TAGWORKER_BROKER__VISIBILITY_TIMEOUT_S", "60")

    with pytest.raises(
        ValidationError,
        match=r"TAGWORKER_BROKER__VISIBILITY_TIMEOUT_S=60 is too close to the longest batch \(flush 0\.5s \+ retries "
        r"up to 16s\); raise it or lower TAGWORKER_BATCHING__DB_RETRIES",
    ):
        Settings()


def test_fewer_retries_make_a_short_visibility_timeout_acceptable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGWORKER_BROKER__VISIBILITY_TIMEOUT_S", "60")
    monkeypatch.setenv("TAGWORKER_BATCHING__DB_RETRIES", "2")

    assert Settings().broker.visibility_timeout_s == 60


def test_more_retries_need_a_longer_visibility_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGWORKER_BATCHING__DB_RETRIES", "12")  # up to 2048 s of backoff

    with pytest.raises(ValidationError, match="VISIBILITY_TIMEOUT_S=3600 is too close to the longest batch"):
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


def _errors(**env: str) -> list[str]:
    """What `Settings()` says about the environment `env`, one line per error (what the CLI prints)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with pytest.raises(ValidationError) as refused:
            Settings()
    return setting_errors(refused.value)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("TAGWORKER_BATCHING__FLUSH_EVRY", "did you mean TAGWORKER_BATCHING__FLUSH_EVERY?"),
        ("TAGWORKER_BROKER__VISIBILITY_TIMEOUT", "did you mean TAGWORKER_BROKER__VISIBILITY_TIMEOUT_S?"),
        ("tagworker_model__max_chunk", "did you mean TAGWORKER_MODEL__MAX_CHUNKS?"),
        ("TAGWORKER_INGEST__COLOUR", "ingest has max_text_chars, max_metadata_bytes, max_metadata_depth"),
    ],
)
def test_a_misspelled_setting_in_a_group_is_refused_not_ignored(name: str, message: str) -> None:
    """pydantic-settings hands every TAGWORKER_<GROUP>__* variable to the group, which used to drop unknown ones."""
    assert _errors(**{name: "60"}) == [f"{name.upper()} is not a setting; {message}"]


def test_a_misspelled_setting_in_the_env_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TAGWORKER_BATCHING__FLUSH_EVRY=7\n")

    assert _errors() == [
        "TAGWORKER_BATCHING__FLUSH_EVRY is not a setting; did you mean TAGWORKER_BATCHING__FLUSH_EVERY?"
    ]


def test_other_names_in_the_shared_env_file_are_not_settings_and_are_left_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """docker compose reads the same .env (.env.example): its variables, prefixed or not, must not be refused."""
    (tmp_path / ".env").write_text("POSTGRES_PASSWORD=x\nTAGWORKER_IMAGE_TAG=latest\nTAGWORKER_MODEL__DEVICE=cpu\n")
    monkeypatch.setenv("TAGWORKER_IMAGE_TAG", "v2")

    assert Settings().model.device == "cpu"


def test_every_error_names_its_variable_and_never_echoes_a_url() -> None:
    lines = _errors(
        TAGWORKER_BATCHING__FLUSH_EVERY="0",
        TAGWORKER_LOG_LEVEL="verbose",
        TAGWORKER_DATABASE='{"url": ["postgresql://app:hunter2@db/x"]}',  # a group as JSON; a list is no URL
    )

    assert lines == [
        "TAGWORKER_LOG_LEVEL: 'verbose' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
        "TAGWORKER_DATABASE__URL: Input should be a valid string",
        "TAGWORKER_BATCHING__FLUSH_EVERY='0': Input should be greater than or equal to 1",
    ]


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_url_means_the_embedded_server_everywhere(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """An empty URL started the embedded server (`resolve`) while `embedded` said no, so `up` never stopped it."""
    monkeypatch.setenv("TAGWORKER_DATABASE__URL", value)
    monkeypatch.setenv("TAGWORKER_BROKER__URL", "redis://redis:6379/0")

    settings = Settings()

    assert settings.database.url is None
    assert settings.embedded


@pytest.mark.parametrize(
    "name", ["TAGWORKER_BROKER__INGEST_QUEUE", "TAGWORKER_BROKER__TRAINING_QUEUE"], ids=["ingest", "training"]
)
@pytest.mark.parametrize("value", ["", "ingest,gpu", " ingest"])
def test_a_queue_name_a_worker_cannot_consume_is_refused(name: str, value: str) -> None:
    assert _errors(**{name: value}) == [
        f"{name}: queue name {value!r} must be non-empty, without commas or surrounding spaces"
    ]


@pytest.mark.parametrize(
    ("env", "queues"),
    [
        ({}, "ingest,training"),
        ({"TAGWORKER_BROKER__INGEST_QUEUE": "events"}, "events,training"),
        ({"TAGWORKER_BROKER__TRAINING_QUEUE": "ingest"}, "ingest"),
    ],
)
def test_a_worker_consumes_the_configured_ingest_and_training_queues(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], queues: str
) -> None:
    """Beat routes retrain and backfill to the training queue: a worker on the ingest queue alone never ran them."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert Settings().broker.worker_queues == queues


@pytest.mark.parametrize(
    ("env", "queues"),
    [
        ({}, "ingest,gpu,training"),
        ({"TAGWORKER_BROKER__GPU_QUEUE": "cuda-events"}, "ingest,cuda-events,training"),
        ({"TAGWORKER_BROKER__GPU_QUEUE": "ingest"}, "ingest,training"),
    ],
)
def test_a_gpu_worker_also_consumes_the_configured_gpu_queue(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], queues: str
) -> None:
    """TAGWORKER_BROKER__GPU_QUEUE was read by nothing: a GPU worker started without --queues never took the queue
    that producers send GPU work to."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert Settings().broker.queues_for(gpu=True) == queues
    assert Settings().broker.queues_for(gpu=False) == Settings().broker.worker_queues


def test_a_gpu_queue_name_with_a_comma_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGWORKER_BROKER__GPU_QUEUE", "gpu,fast")
    with pytest.raises(ValidationError, match="must be non-empty, without commas"):
        Settings()
