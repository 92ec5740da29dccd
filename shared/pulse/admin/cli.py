"""pulse-admin: prepare the database and broker, manage tenants and API keys."""

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from kombu import Connection
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from pulse.admin.settings import AdminSettings
from pulse.db import make_engine, make_session_factory, transaction
from pulse.db.migrate import upgrade_to_head
from pulse.errors import PulseError
from pulse.messaging.topology import declare_topology
from pulse.tenants.service import create_api_key, create_tenant, parse_scopes

log = logging.getLogger("pulse.admin")


def _wait_for(what: str, check: Callable[[], None], seconds: float) -> None:
    waiting = retry(
        retry=retry_if_exception_type(Exception),
        stop=stop_after_delay(seconds),
        wait=wait_fixed(1),
        reraise=True,
        before_sleep=lambda state: log.info(
            "waiting for %s: %s", what, state.outcome and state.outcome.exception()
        ),
    )
    waiting(check)()


def ensure_database(database_url: str) -> None:
    """Create the database named in the URL if the server does not have it yet."""
    url = make_url(database_url)
    server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            exists = connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            )
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{url.database}"'))
                log.info("created database %s", url.database)
    finally:
        server.dispose()


def init(settings: AdminSettings) -> None:
    database_url = settings.database.url
    _wait_for("PostgreSQL", lambda: ensure_database(database_url), settings.wait_seconds)
    upgrade_to_head(database_url)
    log.info("database schema is up to date")

    def declare() -> None:
        with Connection(
            settings.broker.url, connect_timeout=settings.broker.connect_timeout_seconds
        ) as connection:
            declare_topology(connection)

    _wait_for("RabbitMQ", declare, settings.wait_seconds)
    log.info("broker topology declared")


def _with_session(settings: AdminSettings, work: Callable[..., str]) -> str:
    engine = make_engine(settings.database)
    try:
        with transaction(make_session_factory(engine)) as session:
            return work(session)
    finally:
        engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="pulse-admin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("init", help="wait for PostgreSQL and RabbitMQ, migrate, declare the topology")
    tenant = commands.add_parser("create-tenant", help="create a tenant (no-op if it exists)")
    tenant.add_argument("name")
    key = commands.add_parser("create-api-key", help="issue an API key; printed once, as the last line")
    key.add_argument("--tenant", required=True)
    key.add_argument("--scopes", default="send,read", help="comma-separated: send,read,admin")
    args = parser.parse_args(argv)

    settings = AdminSettings()
    try:
        if args.command == "init":
            init(settings)
        elif args.command == "create-tenant":
            tenant_id = _with_session(
                settings, lambda session: str(create_tenant(session, name=args.name).id)
            )
            print(f"tenant {args.name} ({tenant_id})")
        elif args.command == "create-api-key":
            scopes = parse_scopes(args.scopes)
            print(
                _with_session(settings, lambda s: create_api_key(s, tenant_name=args.tenant, scopes=scopes))
            )
    except PulseError as error:
        print(f"pulse-admin: {error}", file=sys.stderr)
        return 2
    except OperationalError as error:
        print(f"pulse-admin: database unavailable: {error.orig}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
