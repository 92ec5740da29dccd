"""A tenant's analytics read that tenant's rows, by index, however busy other tenants are (private
database: the rows and statistics are the test's own)."""

import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, create_engine, event, text

from devtools.stack import Infrastructure
from pulse.analytics.service import throughput
from pulse.db import make_session_factory, transaction
from pulse.tenants.service import create_tenant

# Finished notifications, one a second: `spread` seconds back from now.
_FINISHED_ROWS = text(
    """
    INSERT INTO notifications (id, tenant_id, channel, priority, recipient, status, content,
                               created_at, updated_at, delivered_at, attempt_count)
    SELECT gen_random_uuid(), :tenant_id, 'email', 'normal', 'ada@example.com', 'delivered', '{}'::jsonb,
           now() - (g % :spread) * interval '1 second', now() - (g % :spread) * interval '1 second',
           now() - (g % :spread) * interval '1 second', 1
    FROM generate_series(1, :rows) AS g
    """
)


def _plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


def _indexes_used(engine: Engine, statements: list[tuple[str, Any]]) -> set[str]:
    used = set()
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        for statement, parameters in statements:
            cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
            [[explained]] = cursor.fetchall()
            plan = (json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
            used |= {node["Index Name"] for node in _plan_nodes(plan) if "Index Name" in node}
    finally:
        connection.close()
    return used


def test_throughput_reads_the_tenants_recent_rows_by_a_tenant_leading_index(private: Infrastructure) -> None:
    """A busy tenant's last hour must not be scanned for a quiet one, nor the quiet one's history."""
    engine = create_engine(private.database_url)
    factory = make_session_factory(engine)
    try:
        with transaction(factory) as session:
            busy = create_tenant(session, name=f"busy-{secrets.token_hex(4)}").id
            quiet = create_tenant(session, name=f"quiet-{secrets.token_hex(4)}").id
            session.execute(_FINISHED_ROWS, {"tenant_id": busy, "rows": 20_000, "spread": 3600})
            session.execute(_FINISHED_ROWS, {"tenant_id": quiet, "rows": 20_000, "spread": 30 * 86_400})
        with engine.connect() as connection:
            connection.execute(text("ANALYZE notifications"))
            connection.commit()

        statements: list[tuple[str, Any]] = []

        def capture(*args: Any) -> None:
            _connection, _cursor, statement, parameters, _context, _many = args
            statements.append((statement, parameters))

        event.listen(engine, "before_cursor_execute", capture)
        with factory() as session:
            minutes = throughput(session, tenant_id=quiet, until=datetime.now(UTC))
        event.remove(engine, "before_cursor_execute", capture)

        assert sum(minute.delivered for minute in minutes) > 0
        assert "ix_notifications_tenant_finished_updated" in _indexes_used(engine, statements)
    finally:
        engine.dispose()
