"""docker-compose.yml renders with `docker-compose config` and keeps its production guarantees.

`config` only parses, validates and interpolates the file; it needs no Docker engine. Debian's
docker-compose (v1.29) and Docker Compose v2 (`docker compose`) are both accepted. Without either the tests
skip, except under CI (env CI set), where the binary is installed and its absence is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"

DUMMY_SECRETS = {
    "POSTGRES_PASSWORD": "dummy-pg-password",
    "REDIS_PASSWORD": "dummy-redis-password",
    "FLOWER_BASIC_AUTH": "admin:dummy-flower-password",
}
# Variables the file reads; cleared from the inherited environment so a developer's shell can't change results.
COMPOSE_VARS = {
    *DUMMY_SECRETS,
    "POSTGRES_USER",
    "POSTGRES_DB",
    "CPU_WORKERS",
    "TAGWORKER_IMAGE_TAG",
    "TAGWORKER_MODEL__NAME_OR_PATH",
}
APP_WORKERS = ("worker-cpu", "worker-gpu", "beat")


def _find_compose() -> list[str] | None:
    """The compose command to use: a docker-compose binary (v1 or v2 standalone), else the `docker compose` plugin."""
    for candidate in ("/usr/bin/docker-compose", shutil.which("docker-compose")):
        if candidate and os.access(candidate, os.X_OK):
            return [candidate]
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    return None


@pytest.fixture(scope="module")
def compose_cmd() -> list[str]:
    cmd = _find_compose()
    if cmd is None:
        message = (
            "no docker-compose binary: install Debian's `docker-compose` package (or Docker Compose v2 as "
            "`docker compose`) to check docker-compose.yml"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must install it")
        pytest.skip(message)
    return cmd


def _run_config(
    compose_cmd: list[str], tmp_path: Path, env_overrides: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    env = {
        key: value for key, value in os.environ.items() if key not in COMPOSE_VARS and not key.startswith("COMPOSE_")
    }
    env.update(env_overrides)
    # An empty env file stops compose from reading a developer's real .env next to the compose file.
    empty_env = tmp_path / "empty.env"
    empty_env.write_text("")
    return subprocess.run(
        [*compose_cmd, "--env-file", str(empty_env), "-f", str(COMPOSE_FILE), "--profile", "gpu", "config"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _words(command: Any) -> str:
    """A service's command as one string, whether compose rendered it as a string (v1) or a list (v2)."""
    if isinstance(command, list):
        return " ".join(str(part) for part in command)
    return str(command or "")


@pytest.fixture(scope="module")
def rendered(compose_cmd: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    result = _run_config(compose_cmd, tmp_path_factory.mktemp("compose"), DUMMY_SECRETS)
    assert result.returncode == 0, f"`config` failed:\n{result.stderr}\n{result.stdout}"
    doc = yaml.safe_load(result.stdout)
    assert isinstance(doc, dict) and "services" in doc, result.stdout
    return doc


def test_compose_config_renders_the_production_stack(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    for name in ("postgres", "redis", "migrate", "worker-cpu", "worker-gpu", "beat", "flower"):
        assert name in services, f"service {name!r} missing; have {sorted(services)}"

    # Redis is the queue: durable AOF and no eviction of queued messages.
    redis_command = _words(services["redis"]["command"])
    for flag in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert flag in redis_command, f"redis command lacks {flag!r}: {redis_command}"
    # The password comes from the container's environment on stdin (`redis-server -`), not the command line.
    assert "redis-server - " in redis_command and "requirepass $" in redis_command and "REDISCLI_AUTH" in redis_command
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == "dummy-redis-password"

    # GPU worker: one NVIDIA GPU, a solo pool (CUDA isn't fork-safe), and the CUDA device selected.
    gpu = services["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or []) for d in devices), (
        f"worker-gpu has no nvidia GPU reservation: {devices}"
    )
    assert "--pool solo" in _words(gpu["command"])
    assert gpu["environment"]["TAGWORKER_MODEL__DEVICE"] == "cuda"
    assert "gpu" in gpu.get("profiles", [])
    assert gpu["image"] != services["worker-cpu"]["image"], "the CUDA image must have its own tag"
    assert "--pool prefork" in _words(services["worker-cpu"]["command"])

    # Nothing consumes before the schema is migrated and the broker is up.
    for name in APP_WORKERS:
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", (name, depends_on)
        assert depends_on["redis"]["condition"] == "service_healthy", (name, depends_on)
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert str(services["migrate"]["restart"]) == "no"
    assert int(services["beat"]["deploy"]["replicas"]) == 1

    # The dummy secrets flow into the app's URLs.
    env = services["worker-cpu"]["environment"]
    assert env["TAGWORKER_DATABASE__URL"].startswith("postgresql+psycopg2://tagworker:dummy-pg-password@postgres:5432/")
    assert env["TAGWORKER_BROKER__URL"] == "redis://:dummy-redis-password@redis:6379/0"

    # Flower reads the broker URL from its environment.
    assert services["flower"]["environment"]["CELERY_BROKER_URL"] == "redis://:dummy-redis-password@redis:6379/0"

    # Flower is reachable on loopback only.
    for port in services["flower"]["ports"]:
        host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
        assert host_ip == "127.0.0.1", f"flower port not bound to loopback: {port}"

    for volume in ("pgdata", "redisdata", "models"):
        assert volume in rendered.get("volumes", {}), f"named volume {volume!r} missing"


@pytest.mark.parametrize("missing", sorted(DUMMY_SECRETS))
def test_compose_config_refuses_a_missing_secret(compose_cmd: list[str], tmp_path: Path, missing: str) -> None:
    """No default secret: leaving any required secret unset makes `config` fail, naming the variable."""
    overrides = {key: value for key, value in DUMMY_SECRETS.items() if key != missing}
    result = _run_config(compose_cmd, tmp_path, overrides)
    assert result.returncode != 0, f"`config` succeeded without {missing}:\n{result.stdout}"
    assert missing in result.stderr + result.stdout


def test_no_secret_is_on_a_command_line_or_in_a_healthcheck(rendered: dict[str, Any]) -> None:
    """Flower's `--broker=redis://:<password>@...` and redis-server's `--requirepass <password>` were readable by
    any user of the host with `ps`, and by `docker inspect`; secrets belong in the environment only."""
    secrets = [value.split(":", 1)[-1] for value in DUMMY_SECRETS.values()]
    for name, service in rendered["services"].items():
        lines = [_words(service.get("command")), _words(service.get("entrypoint"))]
        lines.append(_words((service.get("healthcheck") or {}).get("test")))
        for line in lines:
            assert not any(secret in line for secret in secrets), f"{name} has a secret on a command line: {line}"
