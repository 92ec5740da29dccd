"""What happened to a scenario's notifications, read from the bench database.

Each scenario sends as a tenant of its own, so its notifications are found by the
(tenant_id, status, created_at) index however many other scenarios left behind. Times are the stored
ones: accepted = `created_at` (the accepting transaction's start), delivered = `delivered_at`.
"""

import uuid
from dataclasses import dataclass

from sqlalchemy import bindparam, create_engine, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import Text

from devtools.stack import Infrastructure, wait_until
from pulse.tenants.service import Scope
from pulse.vocabulary import TERMINAL_STATUSES

_PENDING = text(
    "SELECT count(*) FROM notifications WHERE tenant_id = :tenant AND NOT (status = ANY(:terminal))"
).bindparams(bindparam("terminal", type_=ARRAY(Text)))

_OUTCOME = text(
    """
    SELECT count(*) FILTER (WHERE status = 'delivered') AS delivered,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           extract(epoch FROM max(delivered_at) - min(created_at)) AS span,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP
               (ORDER BY extract(epoch FROM delivered_at - created_at)) AS latency
    FROM notifications WHERE tenant_id = :tenant
    """
)


@dataclass(frozen=True)
class Tenant:
    id: uuid.UUID
    api_key: str


@dataclass(frozen=True)
class Outcome:
    delivered: int
    failed: int
    delivered_per_second: float  # first acceptance → last delivery
    latency_ms: dict[str, float | None]  # accepted → delivered: p50, p95, p99 (None: none delivered)


class Ledger:
    def __init__(self, infrastructure: Infrastructure) -> None:
        self.infrastructure = infrastructure
        self.engine = create_engine(infrastructure.database_url)

    def tenant(self, name: str) -> Tenant:
        """A new tenant allowed to send, for one scenario."""
        api_key = self.infrastructure.create_tenant_with_key(name, Scope.SEND, Scope.READ)
        with self.engine.connect() as connection:
            found = connection.execute(text("SELECT id FROM tenants WHERE name = :name"), {"name": name})
            return Tenant(id=found.scalar_one(), api_key=api_key)

    def pending(self, tenant: Tenant) -> int:
        """The tenant's notifications not finished yet (delivered, failed, cancelled or read)."""
        with self.engine.connect() as connection:
            terminal = sorted(TERMINAL_STATUSES)
            return int(connection.execute(_PENDING, {"tenant": tenant.id, "terminal": terminal}).scalar_one())

    def wait_finished(self, tenant: Tenant, *, timeout: float) -> None:
        wait_until(
            lambda: self.pending(tenant) == 0,
            timeout=timeout,
            interval=0.2,
            what="every notification to finish",
        )

    def outcome(self, tenant: Tenant) -> Outcome:
        with self.engine.connect() as connection:
            row = connection.execute(_OUTCOME, {"tenant": tenant.id}).one()
        latency = [
            None if seconds is None else round(seconds * 1000, 1) for seconds in row.latency or [None] * 3
        ]
        return Outcome(
            delivered=row.delivered,
            failed=row.failed,
            delivered_per_second=round(row.delivered / float(row.span), 1) if row.span else 0.0,
            latency_ms=dict(zip(("p50", "p95", "p99"), latency, strict=True)),
        )

    def bench_database_processes(self) -> set[int]:
        """Process ids of the PostgreSQL backends serving the bench database, and of the server's
        background processes (listed without a database)."""
        with self.engine.connect() as connection:
            return set(
                connection.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity"
                        " WHERE datname IS NULL OR datname = current_database()"
                    )
                ).scalars()
            )

    def close(self) -> None:
        self.engine.dispose()
