"""Security under fire: secrets stay out of logs and `tagworker status`, pickles are refused, the dashboard role
reads its views only, models load without remote code, and text never becomes SQL.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import redis
from celery import Celery
from sqlalchemy import Connection, text

from worker.chaos.guard_faults import publish_refusable, sql_texts_verbatim
from worker.chaos.ledger import Ledger, feedback_event
from worker.chaos.outcome import FaultResult, Progress, Watch
from worker.chaos.payloads import SQL_TEXTS
from worker.chaos.stack import QUEUE, ChaosStack
from worker.chaos.stream_faults import ChaosParams
from worker.processes import service_env, stop
from worker.services import ServiceUrls
from worker.store.dashboard import grant_dashboard

DASHBOARD_ROLE = "chaos_dashboard"
_PACKAGE = Path(__file__).resolve().parents[1]


def _secret_urls(stack: ChaosStack, redis_password: str, pg_password: str) -> ServiceUrls:
    # The embedded PostgreSQL trusts local connections, so a URL with a password still works.
    database = stack.urls.database_url.replace("postgres@", f"postgres:{pg_password}@")
    return ServiceUrls(database, f"redis://:{redis_password}@127.0.0.1:{stack.redis_port}/0")


def _status_output(urls: ServiceUrls) -> str:
    output = []
    for args in (["status", "--json"], ["status"]):
        done = subprocess.run([sys.executable, "-m", "worker.cli", *args], env=service_env(urls),
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        output.append(done.stdout + done.stderr)
    return "\n".join(output)


def dashboard_violations(conn: Connection, role: str) -> int:
    """Privileges the dashboard role holds beyond SELECT on the `dashboard` views (catalog, not trial and error)."""
    sql = """
        SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
             unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p(priv)
        WHERE c.relkind IN ('r', 'v', 'm', 'p') AND n.nspname IN ('public', 'dashboard')
          AND has_table_privilege(:role, c.oid, p.priv) AND NOT (n.nspname = 'dashboard' AND p.priv = 'SELECT')
    """
    extra = int(conn.execute(text(sql), {"role": role}).scalar_one())
    create = sum(
        bool(conn.execute(text("SELECT has_schema_privilege(:role, :s, 'CREATE')"), {"role": role, "s": s}).scalar())
        for s in ("public", "dashboard")
    )
    views = conn.execute(text("SELECT count(*) FROM pg_views WHERE schemaname = 'dashboard' "
                              "AND NOT has_table_privilege(:role, schemaname || '.' || viewname, 'SELECT')"),
                         {"role": role}).scalar_one()  # fmt: skip
    return extra + create + int(views)


def remote_code_allowed() -> int:
    """Places in the package that would let a model run its own code."""
    needle = "trust_remote_code=" + "True"  # spelled apart so that this file does not count itself
    return sum(path.read_text().count(needle) for path in _PACKAGE.rglob("*.py"))


def security(stack: ChaosStack, params: ChaosParams, report: Progress) -> FaultResult:
    """A worker on password-protected URLs, fed events and refusable messages; then the leak and role checks."""
    watch = Watch.begin(stack, "security", report)
    if stack.worker is not None:
        stop(stack.worker, grace_s=params.grace_s)
        stack.worker = None
    redis_password, pg_password = f"redis-{uuid.uuid4().hex}", f"pg-{uuid.uuid4().hex}"
    admin = redis.Redis(host="127.0.0.1", port=stack.redis_port)
    admin.config_set("requirepass", redis_password)
    try:
        urls = _secret_urls(stack, redis_password, pg_password)
        producer = Celery(broker=urls.broker_url)
        producer.conf.task_serializer = "json"
        worker = stack.worker = stack.launch("secure-worker", urls=urls)
        stack.wait_ready(worker, producer=producer)
        ledger = Ledger()
        payloads = [feedback_event(t, seq=i) for i, t in enumerate(SQL_TEXTS * 3)]
        ledger.publish(producer, payloads, queue=QUEUE)
        marker = publish_refusable(stack, ledger, producer)
        result = watch.settle(ledger, timeout_s=params.settle_s)
        status = _status_output(urls)
        stop(worker, grace_s=params.grace_s)
        stack.worker = None
    finally:
        admin.execute_command("AUTH", redis_password)
        admin.config_set("requirepass", "")
        admin.close()
    seen = stack.log_text(since=watch.marks) + status
    with stack.engine.begin() as conn:
        grant_dashboard(conn, DASHBOARD_ROLE, None)
        violations = dashboard_violations(conn, DASHBOARD_ROLE)
    result.checks.update(
        secret_leaks=seen.count(redis_password) + seen.count(pg_password), status_ran="items" in status,
        pickle_executed=marker.exists(), dashboard_violations=violations, remote_code_allowed=remote_code_allowed(),
        **sql_texts_verbatim(stack, payloads),
    )  # fmt: skip
    return result
