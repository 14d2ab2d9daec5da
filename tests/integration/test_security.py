"""Secrets stay out of what the CLI prints."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from worker.processes import service_env
from worker.services import ServiceUrls

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_status_never_prints_the_database_password(stack: ServiceUrls) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    # The embedded server trusts local connections, so a URL with a password still works.
    url = stack.database_url.replace("postgres@", f"postgres:{secret}@")
    env = service_env(ServiceUrls(database_url=url, broker_url=stack.broker_url))
    for args in (["status", "--json"], ["status"]):
        result = subprocess.run([sys.executable, "-m", "worker.cli", *args], env=env, capture_output=True,
                                text=True, timeout=120)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert secret not in result.stdout + result.stderr
