"""A read-only role for dashboards: SELECT on the `dashboard` views, nothing else."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Connection

from worker.errors import ConfigurationError

ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # matched whole: `$` would let a trailing newline through


def grant_dashboard(connection: Connection, role: str, password: str | None) -> None:
    """Create ROLE if needed (LOGIN when a password is given) and let it read the dashboard views only.

    The views run with their owner's rights, so the role needs no grant on any table; new views in the schema
    are granted too (default privileges).
    """
    if not ROLE_NAME.fullmatch(role):
        raise ConfigurationError(f"role name {role!r}: use lower-case letters, digits and _ (max 63)")
    raw = connection.connection.dbapi_connection
    assert raw is not None
    from psycopg2 import sql

    ident = sql.Identifier(role)
    cursor: Any = raw.cursor()
    try:
        _refuse_unsafe_role(cursor, role)
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        if cursor.fetchone() is None:
            cursor.execute(sql.SQL("CREATE ROLE {} NOINHERIT").format(ident))
        if password is not None:
            cursor.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD %s").format(ident), (password,))
        cursor.execute("SELECT current_database()")
        database = sql.Identifier(cursor.fetchone()[0])
        for statement in (
            "GRANT CONNECT ON DATABASE {db} TO {role}",
            "REVOKE ALL ON SCHEMA public FROM {role}",
            "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
            "GRANT USAGE ON SCHEMA dashboard TO {role}",
            "GRANT SELECT ON ALL TABLES IN SCHEMA dashboard TO {role}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA dashboard GRANT SELECT ON TABLES TO {role}",
        ):
            cursor.execute(sql.SQL(statement).format(db=database, role=ident))
    finally:
        cursor.close()


_ROLE_FACTS = """
    SELECT r.rolname = current_user, r.rolsuper OR r.rolcreaterole OR r.rolbypassrls OR r.rolcreatedb,
           EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = r.oid),
           EXISTS (SELECT 1 FROM pg_class c WHERE c.relowner = r.oid)
             OR EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspowner = r.oid)
             OR EXISTS (SELECT 1 FROM pg_database d WHERE d.datdba = r.oid)
             OR EXISTS (SELECT 1 FROM pg_class c, aclexplode(c.relacl) a
                        WHERE a.grantee = r.oid AND c.relnamespace <> 'dashboard'::regnamespace)
    FROM pg_roles r WHERE r.rolname = %s
"""


def _refuse_unsafe_role(cursor: Any, role: str) -> None:
    """An existing role that can do more than read the views would keep that power, and revoking its table
    rights could break the application that uses it: such a role is refused, not turned into a dashboard role.
    """
    cursor.execute(_ROLE_FACTS, (role,))
    facts = cursor.fetchone()
    if facts is None:
        return
    me, powerful, member, owner = facts
    problem = (
        "is the role this command connects as" if me
        else "is a superuser, or may create roles or databases or bypass row security" if powerful
        else "is a member of other roles (such as pg_read_all_data), whose rights it may use" if member
        else "owns or has rights on tables, schemas or databases (an application's role?)" if owner
        else None
    )  # fmt: skip
    if problem:
        raise ConfigurationError(f"role {role} {problem}; give the dashboard a role of its own (a new name)")
